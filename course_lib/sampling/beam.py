"""Beam search: the most likely continuation a beam of partial ones finds (as transformers')."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from course_lib.model import GPT, eval_mode
from course_lib.sampling.decode import generate, one_prompt, step_logits
from course_lib.sampling.params import SamplingParams, make_params
from course_lib.sampling.processors import process_logits
from course_lib.validation import check_float, check_int

MAX_BEAMS = 256  # a bound: each beam is a row of the batch, so 10**9 beams is a typo

# Settings beam search has no use for: it never samples (temperature 0 and 1 are both "none").
_SAMPLING_ONLY = ("top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty", "seed",
                  "stop")
_DEFAULTS = SamplingParams()


def split_candidates(flat: Sequence[int], vocab: int, num_beams: int, stop_ids: Collection[int],
                     last: bool) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """One beam step's choice: candidates (beam * vocab + token), best first, split into those
    that end here (a stop id, or every one on the last step) and up to num_beams that run on,
    each as (rank, beam, token). Only the first num_beams may end: the spare candidates are
    there to replace ending ones (transformers)."""
    ending, going = [], []
    for rank, index in enumerate(flat):
        beam, token = divmod(index, vocab)
        if last or token in stop_ids:
            if rank < num_beams:
                ending.append((rank, beam, token))
        elif len(going) < num_beams:
            going.append((rank, beam, token))
    return ending, going


@torch.no_grad()
def beam_search(model: GPT, idx, num_beams: int, max_new_tokens: int | None = None,
                length_penalty: float = 1.0, *, params: SamplingParams | None = None,
                use_cache: bool = True, **settings) -> torch.Tensor:
    """The prompt followed by the most likely continuation beam search finds, shape (1, T + n).

    Keeps the num_beams best partial continuations (by total log-probability); each step
    extends every one by every token and keeps the best num_beams again. A continuation ends
    with a stop id (kept) or after max_new_tokens tokens; finished ones are ranked by their
    score / (new tokens) ** length_penalty. The same tokens as transformers'
    generate(num_beams=..., do_sample=False, length_penalty=..., repetition_penalty=...) with
    its default early stopping: it ends once num_beams continuations have finished and no
    running one scores better now. The KV cache is reordered by beam each step (KVCache.reorder)
    so a step costs one position per beam.
    """
    num_beams = check_int("num_beams", num_beams, minimum=1, maximum=MAX_BEAMS)
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings)
    unused = [name for name in _SAMPLING_ONLY
              if getattr(params, name) != getattr(_DEFAULTS, name)]
    if params.temperature not in (0, 1):
        unused.append("temperature")
    if unused:
        raise ValueError(f"beam search does not sample: it takes max_new_tokens, stop_ids and "
                         f"repetition_penalty, not {', '.join(unused)}")
    max_new_tokens = check_int("max_new_tokens", params.max_new_tokens, minimum=1)
    length_penalty = check_float("length_penalty", length_penalty)
    prompt = one_prompt(model, idx)
    stops = params.stop_tensor(model.config.vocab_size, model.device)
    # what beam search applies to each step's log-probabilities (transformers' order)
    penalty = SamplingParams(repetition_penalty=params.repetition_penalty)
    if num_beams == 1:  # transformers then decodes greedily, penalising logits, not log-probs
        return generate(model, prompt, use_cache=use_cache,
                        params=SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0,
                                              stop_ids=params.stop_ids,
                                              repetition_penalty=params.repetition_penalty))
    stop_set = set() if stops is None else set(stops.tolist())
    block = model.config.block_size
    device = model.device
    # transformers keeps this many candidates a step, so num_beams survive those that stop
    keep = max(2, 1 + len(stop_set)) * num_beams
    running = prompt.repeat(num_beams, 1)
    # every beam starts as the prompt; only the first may expand at step 1 (as transformers)
    scores = torch.full((num_beams,), -1e9, device=device)
    scores[0] = 0.0
    finished: list[tuple[float, torch.Tensor]] = []
    with eval_mode(model):
        cache = None
        if use_cache and prompt.shape[1] < block:
            cache = model.new_cache(min(block, prompt.shape[1] + max_new_tokens))
            logits = step_logits(model, prompt, cache)
            cache.reorder(torch.zeros(num_beams, dtype=torch.long))
            logits = logits.expand(num_beams, -1)
        else:
            logits = step_logits(model, running[:, -block:])
        for step in range(max_new_tokens):
            if step > 0:
                if cache is not None and running.shape[1] <= block:
                    logits = step_logits(model, running[:, -1:], cache)
                else:  # past the window every position shifts: no cache, as generate does
                    cache = None
                    logits = step_logits(model, running[:, -block:])
            logp = torch.log_softmax(logits.float(), dim=-1)
            if penalty.penalized:  # transformers applies it to log-probabilities
                logp = process_logits(logp, penalty, running)
            vocab = logp.shape[-1]
            total = (logp + scores[:, None]).reshape(-1)
            top_scores, top_flat = torch.topk(total, min(keep, total.numel()))
            gen_len = step + 1
            final_scores = (top_scores / gen_len**length_penalty).tolist()
            ending, going = split_candidates(top_flat.tolist(), vocab, num_beams, stop_set,
                                             last=step == max_new_tokens - 1)
            for rank, beam, token in ending:
                seq = torch.cat([running[beam], running.new_tensor([token])])
                finished.append((final_scores[rank], seq))
            rows = [torch.cat([running[beam], running.new_tensor([token])])
                    for _, beam, token in going]
            row_scores = [top_scores[rank] for rank, _, _ in going]
            parents = [beam for _, beam, _ in going]
            finished.sort(key=lambda f: -f[0])  # stable: earlier finishers win ties
            del finished[num_beams:]
            if not rows:
                break
            running = torch.stack(rows)
            scores = torch.stack(row_scores)
            if cache is not None:
                cache.reorder(torch.tensor(parents))
            if len(finished) == num_beams:
                best_possible = float(scores[0] / gen_len**length_penalty)
                if best_possible <= finished[-1][0]:
                    break
    return finished[0][1][None]

