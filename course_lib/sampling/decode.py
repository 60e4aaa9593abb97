"""Choosing the next token, and the loop that generates with it: the one place a token is chosen.

sample_next turns a batch of logits into next tokens, each sequence with its own
SamplingParams. generate, stream_generate and generate_batch run one loop, decode_steps, on
top of it; beam and speculative decoding and the serving engine use the same functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from course_lib.attention import KVCache
from course_lib.model import GPT, eval_mode
from course_lib.sampling.params import SamplingParams, make_params
from course_lib.sampling.processors import process_logits
from course_lib.validation import check_int, check_model, check_one_sequence, check_token_ids


def next_token_distribution(logits: torch.Tensor, params: SamplingParams,
                            context: torch.Tensor | None = None) -> torch.Tensor:
    """The distribution (batch, V) the next token is drawn from, after penalties and filters."""
    return torch.softmax(process_logits(logits.float(), params, context), dim=-1)


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams | Sequence[SamplingParams],
    context: torch.Tensor | Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None | Sequence[torch.Generator | None] = None,
) -> torch.Tensor:
    """The next token of each row of logits (batch, V), as a (batch,) long tensor.

    params: one SamplingParams for every row, or one per row. context: the token ids so far,
    (batch, T), or one 1-D tensor per row; read only when a penalty is on. generator: one for
    all rows (None: torch's global one), or one per row. Every row's logits go through
    process_logits; a greedy row (temperature 0) then takes the one token left, the others
    draw from the softmax of what is left.
    Rows that share their params and generator are drawn together in one call, so a batch
    under one seed draws as one tensor does.
    """
    if isinstance(params, SamplingParams):
        return _sample_rows(logits, params, context, generator)
    n = logits.shape[0]
    generators = generator if isinstance(generator, Sequence) else [generator] * n
    if len(params) != n or len(generators) != n:
        raise ValueError(f"{n} rows of logits need {n} params and generators, got "
                         f"{len(params)} and {len(generators)}")
    groups: dict[tuple, list[int]] = {}
    for row, (p, g) in enumerate(zip(params, generators, strict=True)):
        ragged = p.penalized and not isinstance(context, torch.Tensor)
        groups.setdefault((p, id(g), row if ragged else -1), []).append(row)
    out = torch.empty(n, dtype=torch.long, device=logits.device)
    for rows in groups.values():
        p, g = params[rows[0]], generators[rows[0]]
        if not p.penalized:
            ctx = None
        elif isinstance(context, torch.Tensor):
            ctx = context[rows]
        else:
            ctx = context[rows[0]][None]
        out[rows] = _sample_rows(logits[rows], p, ctx, g)
    return out


def _sample_rows(logits: torch.Tensor, params: SamplingParams, context: torch.Tensor | None,
                 generator: torch.Generator | None) -> torch.Tensor:
    """sample_next for rows that share params and generator."""
    logits = process_logits(logits.float(), params, context)
    if params.greedy:  # temperature 0 left only the top token standing: no need to draw
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


def seeded_generator(seed: int | None, device) -> torch.Generator | None:
    """A generator seeded with seed on device, or None (torch's global one) for no seed."""
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def as_prompt(model: GPT, idx) -> torch.Tensor:
    """idx as a (batch, T) tensor of token ids on the model's device, checked."""
    check_model("model", model)
    return check_token_ids("idx (the prompt)", idx, model.config.vocab_size).to(model.device)


def one_prompt(model: GPT, idx) -> torch.Tensor:
    """idx as a (1, T) prompt on the model's device, for the loops that take one only."""
    return check_one_sequence("idx (the prompt)", idx, model).to(model.device)


@torch.no_grad()
def decode_steps(model: GPT, prompts: Sequence[torch.Tensor], params: SamplingParams,
                 use_cache: bool = True) -> Iterator[torch.Tensor]:
    """The decoding loop: yield the (batch,) tokens of each column after the shortest prompt.

    prompts: 1-D tensors of token ids on the model's device, of any lengths. They sit
    left-aligned in one (batch, time) buffer. At a column where a row still has prompt tokens,
    that row takes its own prompt token; the others take the token sample_next chose (the
    scheme of Meta's reference Llama code). Every row is thus its own sequence from position 0,
    with no padding inside it, so no attention mask or position offsets are needed and greedy
    tokens equal one sequence decoded alone. The loop runs until the longest prompt has
    max_new_tokens new tokens, or until every row has produced a token of stop_ids after its
    prompt; a row that stopped repeats its stop token as padding.
    """
    lengths = [len(p) for p in prompts]
    start, total = min(lengths), max(lengths) + params.max_new_tokens
    block = model.config.block_size
    device = prompts[0].device
    tokens = torch.zeros(len(prompts), total, dtype=torch.long, device=device)
    in_prompt = torch.zeros(len(prompts), total, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i, : lengths[i]] = p
        in_prompt[i, : lengths[i]] = True
    stops = params.stop_tensor(model.config.vocab_size, device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    generator = seeded_generator(params.seed, device)
    with eval_mode(model):
        # Room for the prompt and the answer from the start, so the cache never reallocates.
        cache = model.new_cache(min(block, total)) if use_cache else None
        for col in range(start, total):
            if cache is not None and col <= block:
                logits = step_logits(model, tokens[:, cache.length : col], cache)
            else:
                # Past block_size the window slides and every position shifts, so the cache
                # no longer applies: run on the last block_size tokens, as the plain path does.
                logits = step_logits(model, tokens[:, max(0, col - block) : col])
            chosen = sample_next(logits, params, tokens[:, :col], generator)
            if stops is not None and col > start:  # a finished row repeats its stop token
                chosen = torch.where(finished, tokens[:, col - 1], chosen)
            chosen = torch.where(in_prompt[:, col], tokens[:, col], chosen)
            tokens[:, col] = chosen
            yield chosen
            if stops is not None:
                finished |= ~in_prompt[:, col] & torch.isin(chosen, stops)
                if bool(finished.all()):
                    return


def step_logits(model: GPT, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
    """The logits (batch, vocab) for the token after ids, from one forward pass (through cache,
    which holds what came before ids, when given), for a decoding loop.

    Run in inference_mode rather than under no_grad alone: torch then skips its autograd
    bookkeeping on every op, about a tenth of a SmolLM2 step on one core. Only the logits
    leave it (read-only: torch refuses in-place changes to them outside), so the cache must be
    the loop's own, filled by this function only.
    """
    with torch.inference_mode():
        logits, _ = model(ids, kv_cache=cache, last_only=True)
    return logits[:, -1]


def stream_generate(model: GPT, idx, max_new_tokens: int | None = None, *,
                    params: SamplingParams | None = None, use_cache: bool = True,
                    **settings) -> Iterator[torch.Tensor]:
    """Yield each new token (a (batch,) tensor) as soon as it is chosen.

    Settings: a SamplingParams, or its fields as keywords (temperature=0.7, top_k=50, seed=1,
    stop_ids=..., min_p=..., the penalties), which replace params' values. With stop_ids,
    generation ends once every sequence has produced one of them (the stop token is yielded);
    a sequence that stops before the others repeats its stop token until they are done, as
    padding. The penalties look at the whole sequence so far, prompt included, and apply to
    greedy decoding too, as in transformers. use_cache=False recomputes every position at
    every step (the plain path; the same greedy tokens).
    """
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings)
    yield from decode_steps(model, list(as_prompt(model, idx)), params, use_cache)


def generate(model: GPT, idx, max_new_tokens: int | None = None, *,
             params: SamplingParams | None = None, use_cache: bool = True,
             **settings) -> torch.Tensor:
    """The prompt followed by the sampled tokens, shape (batch, T + new tokens).

    Without stop_ids, exactly max_new_tokens are added. With stop_ids (an id or ids), it
    ends early once every sequence has produced one; the stop token is included, and a
    sequence that stopped early is padded with its stop token. Settings: see stream_generate.
    """
    prompt = as_prompt(model, idx)
    new = list(stream_generate(model, prompt, max_new_tokens, params=params,
                               use_cache=use_cache, **settings))
    if not new:
        return prompt
    return torch.cat([prompt, torch.stack(new, dim=1)], dim=1)


@torch.no_grad()
def generate_batch(model: GPT, prompts, max_new_tokens: int | None = None, *,
                   params: SamplingParams | None = None, **settings) -> list[list[int]]:
    """Generate after several prompts of different lengths at once: each prompt + its new tokens.

    One decode_steps loop over all of them: decoding starts after the shortest prompt, and a
    row reads its own prompt tokens until they run out, so greedy tokens equal one-at-a-time
    generation. The price: the longer prompts' tails are read one token per step instead of
    in one prefill pass. Settings: see stream_generate; with stop_ids a row that stopped is
    padded with its stop token up to max_new_tokens.
    """
    check_model("model", model)
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings)
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise TypeError("prompts must be a non-empty list of prompts (lists of token ids)")
    for i, p in enumerate(prompts):
        if not hasattr(p, "__len__") or isinstance(p, torch.Tensor) and p.dim() == 0:
            raise TypeError(f"prompts[{i}] is {p!r:.20}, not a prompt: prompts is a list of "
                            "prompts, each a list of token ids ([[1, 2], [3]]; one: [[1, 2]])")
        if len(p) == 0:
            raise ValueError(f"prompts[{i}] is empty: give at least one token id")
    rows = [check_token_ids(f"prompts[{i}]", p, model.config.vocab_size) for i, p in
            enumerate(prompts)]
    if any(r.shape[0] != 1 for r in rows):
        raise ValueError("each prompt must be one sequence of token ids")
    rows = [r[0].to(model.device) for r in rows]
    start = min(len(r) for r in rows)
    new = torch.stack(list(decode_steps(model, rows, params)), dim=1).tolist() \
        if max(len(r) for r in rows) + params.max_new_tokens > start else [[]] * len(rows)
    out = []
    for r, tokens in zip(rows, new, strict=True):
        seq = r[:start].tolist() + tokens
        want = len(r) + params.max_new_tokens
        out.append((seq + seq[-1:] * (want - len(seq)))[:want])  # stopped early: pad
    return out


@dataclass(frozen=True)
class DecodingStep:
    """One turn of the loop: the model's likeliest next tokens, and the token that was chosen.

    candidates: (token id, probability) for the k likeliest tokens, likeliest first; chosen and
    chosen_probability: the token sample_next picked and the model's probability for it. The
    probabilities are the model's own (the softmax of its logits), before any penalty or filter.
    """

    candidates: tuple[tuple[int, float], ...]
    chosen: int
    chosen_probability: float


@torch.no_grad()
def trace_decoding(model: GPT, idx, steps: int, k: int = 5, *,
                   params: SamplingParams | None = None, **settings) -> list[DecodingStep]:
    """The append-and-predict loop written out: one DecodingStep per new token, for one prompt.

    Each step runs the model on the sequence so far (its last block_size tokens), records the
    k likeliest next tokens, lets sample_next choose one with the given settings (a
    SamplingParams or its fields as keywords, as generate takes them: temperature=0 is greedy),
    and appends it. The chosen tokens are generate's for the same settings. It ends after
    steps tokens, or on a token of stop_ids (recorded).
    """
    steps = check_int("steps", steps, minimum=1)
    k = check_int("k", k, minimum=1)
    params = make_params(params, settings)
    seq = one_prompt(model, idx)
    stops = params.stop_tensor(model.config.vocab_size, seq.device)
    generator = seeded_generator(params.seed, seq.device)
    trace = []
    for _ in range(steps):
        logits = last_logits(model, seq)
        probs = torch.softmax(logits[0], dim=-1)
        top = torch.topk(probs, min(k, probs.numel()))
        chosen = sample_next(logits, params, seq, generator)
        token = int(chosen[0])
        trace.append(DecodingStep(
            tuple(zip(top.indices.tolist(), top.values.tolist(), strict=True)),
            token, float(probs[token])))
        seq = torch.cat([seq, chosen[:, None].to(seq.device)], dim=1)
        if stops is not None and bool(torch.isin(chosen, stops).any()):
            break
    return trace


@torch.no_grad()
def next_token_logits(model: GPT, idx) -> torch.Tensor:
    """Raw logits (vocab,) for the token after idx (one sequence): one forward pass to cache."""
    return last_logits(model, one_prompt(model, idx))[0].cpu()


@torch.no_grad()
def next_token_probs(model: GPT, idx, *, params: SamplingParams | None = None,
                     **settings) -> torch.Tensor:
    """The model's distribution over the next token after idx, after the chosen filters."""
    params = make_params(params, settings)
    prompt = as_prompt(model, idx)
    return next_token_distribution(last_logits(model, prompt), params, prompt)


def last_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The logits (batch, vocab) after the last block_size tokens of idx, as float, in eval mode."""
    with eval_mode(model):
        logits, _ = model(idx[:, -model.config.block_size :], last_only=True)
    return logits[:, -1].float()


def repeated_ngram_fraction(ids, n: int = 4) -> float:
    """Fraction of the n-grams in ids that already occurred earlier in ids (0: no repeats)."""
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    ids = list(ids)
    n = check_int("n", n, minimum=1)
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        raise ValueError(f"need at least n={n} tokens to count n-grams, got {len(ids)}")
    seen: set[tuple] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)
