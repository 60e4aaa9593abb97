"""Turning logits into text: temperature, top-k, top-p, and (cached, streaming) generation."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

import torch

from course_lib.model import GPT, eval_mode
from course_lib.tokenization import token_pieces
from course_lib.validation import check_float, check_int, check_seed, check_token_ids


def _check_temperature(temperature: float) -> None:
    check_float("temperature (0 means greedy)", temperature, minimum=0.0)


def _check_top_k(top_k: int | None) -> None:
    if top_k is not None:
        check_int("top_k (or None for no limit)", top_k, minimum=1)


def _check_top_p(top_p: float | None) -> None:
    if top_p is not None:
        check_float("top_p", top_p, minimum=0.0, maximum=1.0, min_inclusive=False)


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    _check_temperature(temperature)
    _check_top_k(top_k)
    _check_top_p(top_p)


def _generator(seed: int | None, device) -> torch.Generator | None:
    """A generator seeded with seed on device, or None (torch's global one) for no seed."""
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature; temperature 0 keeps only the most likely token (greedy)."""
    _check_temperature(temperature)
    if temperature == 0:
        greedy = torch.full_like(logits, float("-inf"))
        return greedy.scatter(-1, logits.argmax(dim=-1, keepdim=True), 0.0)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest to -inf (ties with the k-th are kept)."""
    _check_top_k(k)
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose probability reaches p.

    The most likely token is always kept. Same rule as transformers' TopPLogitsWarper.
    """
    _check_top_p(p)
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Ascending order: drop the low tail whose total mass is at most 1 - p.
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    *,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    context=None,
) -> torch.Tensor:
    """Penalties, then temperature, top-k, top-p, min-p: the order transformers applies them in.

    The penalties (off by default) need context, the token ids so far (batch, T).
    """
    logits = _penalized(logits, context, repetition_penalty, presence_penalty,
                        frequency_penalty)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    return logits


def _penalized(logits: torch.Tensor, context, repetition_penalty: float | None,
               presence_penalty: float, frequency_penalty: float) -> torch.Tensor:
    """logits after the penalties that are on; they need context, the token ids so far."""
    if repetition_penalty is None and not presence_penalty and not frequency_penalty:
        return logits
    if context is None:
        raise ValueError("the penalties need context: the token ids generated so far")
    return apply_penalties(logits, context, repetition_penalty, presence_penalty,
                           frequency_penalty)


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of distributions along the last dim (0 log 0 counts as 0)."""
    logp = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logp).sum(dim=-1)


# ----- penalties and min-p: transformers' logits processors, one function each -------------
# Order in filter_logits, as transformers applies them: repetition penalty (and presence /
# frequency penalties), then temperature, top-k, top-p, min-p.


def _as_context(idx, logits: torch.Tensor) -> torch.Tensor:
    """The token ids a penalty looks at, as a (batch, T) long tensor beside logits (batch, V)."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"idx (the tokens so far) must hold integer token ids, got {idx.dtype}")
    if idx.dim() == 1:
        idx = idx[None]
    if logits.dim() == 1:
        if idx.shape[0] != 1:
            raise ValueError(f"one row of logits needs one row of idx, got {idx.shape[0]}")
    elif idx.dim() != 2 or idx.shape[0] != logits.shape[0]:
        raise ValueError(f"idx must be (batch, T) with logits' batch {logits.shape[0]}, "
                         f"got {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= logits.shape[-1]):
        raise ValueError(f"idx holds token ids outside the vocabulary [0, {logits.shape[-1]})")
    return idx.long().to(logits.device)


def repetition_penalty(logits: torch.Tensor, idx, penalty: float) -> torch.Tensor:
    """Make every token that occurs in idx less likely: divide its logit by penalty when it is
    positive, multiply when negative (CTRL's rule; transformers' RepetitionPenaltyLogitsProcessor).

    logits: (batch, V) or (V,); idx: the tokens so far, (batch, T), prompt included. penalty 1
    changes nothing; above 1 discourages repeats, below 1 encourages them. A token counts once,
    however often it occurred.
    """
    penalty = check_float("penalty (repetition_penalty)", penalty, minimum=0.0,
                          min_inclusive=False)
    one_row = logits.dim() == 1
    idx = _as_context(idx, logits)
    rows = logits[None] if one_row else logits
    seen = rows.gather(-1, idx)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    out = rows.scatter(-1, idx, seen)
    return out[0] if one_row else out


def presence_frequency_penalty(
    logits: torch.Tensor, idx, presence: float = 0.0, frequency: float = 0.0
) -> torch.Tensor:
    """OpenAI's penalties: logit[j] -= presence * (count[j] > 0) + frequency * count[j].

    count[j] is how often token j occurs in idx (the tokens so far). Unlike the repetition
    penalty, this subtracts (a fixed amount whatever the logit's sign), and frequency grows with
    every repeat. OpenAI counts only the tokens generated so far; generate counts the whole
    sequence, prompt included, as it does for the repetition penalty (TGI does the same).
    Negative values encourage repeats.
    """
    presence = check_float("presence (presence_penalty)", presence)
    frequency = check_float("frequency (frequency_penalty)", frequency)
    one_row = logits.dim() == 1
    idx = _as_context(idx, logits)
    rows = logits[None] if one_row else logits
    counts = torch.zeros_like(rows).scatter_add_(-1, idx, torch.ones_like(idx, dtype=rows.dtype))
    out = rows - presence * (counts > 0).to(rows.dtype) - frequency * counts
    return out[0] if one_row else out


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop (-inf) every token less likely than min_p times the most likely token's probability.

    = transformers' MinPLogitsWarper. The cut scales with the model's confidence: a sharp
    distribution keeps few tokens, a flat one many. The top token is always kept.
    """
    min_p = check_float("min_p", min_p, minimum=0.0, maximum=1.0)
    probs = torch.softmax(logits, dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove = remove.scatter(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, float("-inf"))


def _check_penalties(repetition: float | None, presence: float, frequency: float,
                     min_p: float | None) -> None:
    if repetition is not None:
        check_float("repetition_penalty (or None for none)", repetition, minimum=0.0,
                    min_inclusive=False)
    check_float("presence_penalty", presence)
    check_float("frequency_penalty", frequency)
    if min_p is not None:
        check_float("min_p (or None for no cut)", min_p, minimum=0.0, maximum=1.0)


def apply_penalties(
    logits: torch.Tensor,
    idx,
    repetition_penalty: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
) -> torch.Tensor:
    """The repetition penalty, then the presence and frequency penalties, given the tokens idx."""
    if repetition_penalty is not None:
        logits = _repetition_penalty(logits, idx, repetition_penalty)
    if presence_penalty or frequency_penalty:
        logits = presence_frequency_penalty(logits, idx, presence_penalty, frequency_penalty)
    return logits


_repetition_penalty = repetition_penalty  # the keyword arguments below share its name


def _as_prompt(model: GPT, idx) -> torch.Tensor:
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a course_lib GPT, got {type(model).__name__}")
    idx = check_token_ids("idx (the prompt)", idx, model.config.vocab_size)
    return idx.to(model.device)


def _one_prompt(model: GPT, idx, what: str) -> torch.Tensor:
    """idx as a (1, T) prompt on the model's device, for what (a caller that takes one only)."""
    prompt = _as_prompt(model, idx)
    if prompt.shape[0] != 1:
        raise ValueError(f"{what} takes one prompt (one sequence of token ids), got a batch "
                         f"of {prompt.shape[0]}")
    return prompt


def _check_stop_ids(stop_ids, vocab_size: int) -> torch.Tensor | None:
    """None, or the stop ids as a 1-D tensor: an int or a collection of ints in the vocabulary."""
    if stop_ids is None:
        return None
    if isinstance(stop_ids, (set, frozenset)):
        stop_ids = sorted(stop_ids)
    if isinstance(stop_ids, int) or isinstance(stop_ids, torch.Tensor) and stop_ids.dim() == 0:
        stop_ids = [stop_ids]
    return check_token_ids("stop_ids", stop_ids, vocab_size)[0]


@torch.no_grad()
def next_token_probs(
    model: GPT,
    idx,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The model's distribution over the next token after idx, after the chosen filters."""
    logits = _last_logits(model, _as_prompt(model, idx))
    return torch.softmax(filter_logits(logits, temperature, top_k, top_p), -1)


def _last_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The logits (batch, vocab) after the last block_size tokens of idx, as float, in eval mode."""
    with eval_mode(model):
        logits, _ = model(idx[:, -model.config.block_size :])
    return logits[:, -1].float()


def _choose(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None, min_p: float | None = None) -> torch.Tensor:
    """The next token of each row of logits (batch, V): the top one at temperature 0 (top-k,
    top-p and min-p always keep it), else one drawn after the filters."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits.float(), temperature, top_k, top_p, min_p=min_p),
                          dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


MAX_NEW_TOKENS = 1_000_000  # beyond any use on a CPU; a bound keeps typos (1e12) from hanging


@torch.no_grad()
def stream_generate(
    model: GPT,
    idx,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    stop_ids=None,
    *,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
) -> Iterator[torch.Tensor]:
    """Yield each new token (a (batch,) tensor) as soon as it is chosen.

    stop_ids: a token id or ids; generation ends once every sequence has produced one of them
    (the stop token is yielded). A sequence that stops before the others repeats its stop
    token until they are done, as padding. The penalties (off by default) look at the whole
    sequence so far, prompt included, and apply to greedy decoding too, as in transformers.
    """
    _check_sampling(temperature, top_k, top_p)
    _check_penalties(repetition_penalty, presence_penalty, frequency_penalty, min_p)
    penalized = repetition_penalty is not None or bool(presence_penalty or frequency_penalty)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=0,
                               maximum=MAX_NEW_TOKENS)
    seed = check_seed("seed", seed)
    idx = _as_prompt(model, idx)
    stops = _check_stop_ids(stop_ids, model.config.vocab_size)
    if stops is not None:
        stops = stops.to(model.device)
    block = model.config.block_size
    generator = _generator(seed, model.device)
    with eval_mode(model):
        # Room for the prompt and the answer from the start, so the cache never reallocates.
        cache = model.new_cache(min(block, idx.shape[1] + max_new_tokens)) if use_cache else None
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        last = None
        for _ in range(max_new_tokens):
            if cache is not None and idx.shape[1] <= block:
                logits, _ = model(idx[:, cache.length :], kv_cache=cache)
            else:
                # Past block_size the window slides and every position shifts, so the cache
                # no longer applies: run on the last block_size tokens, as the plain path does.
                logits, _ = model(idx[:, -block:])
            logits = logits[:, -1]
            if penalized:
                logits = apply_penalties(logits.float(), idx, repetition_penalty,
                                         presence_penalty, frequency_penalty)
            next_id = _choose(logits, temperature, top_k, top_p, generator, min_p)
            if stops is not None:
                if last is not None:  # finished rows repeat their stop token
                    next_id = torch.where(finished, last, next_id)
                finished |= torch.isin(next_id, stops)
                last = next_id
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            yield next_id
            if stops is not None and bool(finished.all()):
                return


def generate(
    model: GPT,
    idx,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    stop_ids=None,
    **processors,
) -> torch.Tensor:
    """The prompt followed by the sampled tokens, shape (batch, T + new tokens).

    Without stop_ids, exactly max_new_tokens are added. With stop_ids (an id or ids), it
    ends early once every sequence has produced one; the stop token is included, and a
    sequence that stopped early is padded with its stop token. Keyword arguments min_p,
    repetition_penalty, presence_penalty and frequency_penalty: see stream_generate.
    """
    prompt = _as_prompt(model, idx)
    new = list(stream_generate(model, prompt, max_new_tokens, temperature, top_k, top_p, seed,
                               use_cache, stop_ids, **processors))
    if not new:
        return prompt
    return torch.cat([prompt, torch.stack(new, dim=1)], dim=1)


def stream_text(
    model: GPT,
    tokenizer,
    idx,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    stop_ids=None,
    *,
    stop: str | Iterable[str] | None = None,
    **processors,
) -> Iterator[str]:
    """Yield the text of the new tokens piece by piece, never a broken character.

    A byte-level token can hold part of a character ("🙂" is four bytes, often split over
    tokens); decoding it alone would show U+FFFD. Here the bytes are fed to an incremental
    UTF-8 decoder that holds back an incomplete character until its last byte arrives, so
    the pieces joined are always a prefix of the final text. One sequence only; a stop token
    ends the stream and its own text is not yielded.

    stop: a string or strings (stop sequences). Generation ends with the token whose text
    completes one of them in the generated text, and that token's text is yielded whole, stop
    string included (transformers' StopStringCriteria: it stops on the same token, and keeps
    the text too; unlike it, text of the prompt does not count towards a match). Cut the
    result at the stop string if it should not show. Keyword arguments min_p and the
    penalties: see stream_generate.
    """
    prompt = _one_prompt(model, idx, "streaming text")
    stops = _check_stop_ids(stop_ids, model.config.vocab_size)
    stop_set = set() if stops is None else set(stops.tolist())
    stop_strings = _check_stop_strings(stop)
    tokens = (int(t) for t in stream_generate(model, prompt, max_new_tokens, temperature, top_k,
                                              top_p, seed, use_cache, stop_ids, **processors))
    pieces = utf8_pieces(tokenizer, tokens, stop_set)
    if not stop_strings:
        yield from pieces
        return
    longest = max(len(s) for s in stop_strings)
    text = ""
    for piece in pieces:
        # only a match that ends in this piece is new: look back one stop string's length
        window = text[max(0, len(text) - longest + 1):] + piece
        text += piece
        yield piece
        if any(s in window for s in stop_strings):
            return


def _check_stop_strings(stop) -> list[str]:
    """stop as a list of non-empty strings ([] for None)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, Iterable):
        raise TypeError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    stop = list(stop)
    for s in stop:
        if not isinstance(s, str):
            raise TypeError(f"stop must hold strings, got {type(s).__name__}")
        if not s:
            raise ValueError("stop holds an empty string, which would stop at once")
    return stop


def utf8_pieces(tokenizer, tokens: Iterable[int], stop_ids: Iterable[int] = ()) -> Iterator[str]:
    """The text of a stream of token ids, as pieces that never split a character.

    Joined, the pieces equal tokenizer.decode(all ids before the first stop id) exactly,
    including U+FFFD for bytes that are not valid UTF-8; an empty piece is never yielded.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stop_ids = set(stop_ids)
    for token in tokens:
        if token in stop_ids:
            break
        piece = decoder.decode(token_pieces(tokenizer, [token])[0])
        if piece:
            yield piece
    piece = decoder.decode(b"", final=True)  # an unfinished character at the end: U+FFFD
    if piece:
        yield piece


# ----- helpers for lessons and views --------------------------------------------------------


@torch.no_grad()
def next_token_logits(model: GPT, idx) -> torch.Tensor:
    """Raw logits (vocab,) for the token after idx (one sequence): one forward pass to cache."""
    return _last_logits(model, _one_prompt(model, idx, "next_token_logits"))[0].cpu()


def describe_filtering(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    n: int = 20,
    *,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    context=None,
) -> dict:
    """What temperature, top-k and top-p do to one next-token distribution (logits of shape (V,)).

    The optional penalties (given context, the token ids so far) act before temperature, and
    min-p after top-p, so "scaled" is then the penalised distribution after temperature, and
    the tokens are ranked by their penalised logits (the order top-p cuts in; a penalised
    token moves down while "before" keeps its unpenalised probability).

    Returns, for the n most likely tokens (in order of their probability at temperature 1):
    ids, before (probabilities at temperature 1, no filter), scaled (after temperature only),
    cumulative (running sum of the distribution top-p cuts, i.e. after temperature and top-k),
    after (the distribution sampled from); and over the whole vocabulary: kept (tokens with
    non-zero probability after filtering), entropy_before and entropy_after in bits.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1:
        raise ValueError("logits must be a 1-D tensor: one score per vocabulary entry")
    n = check_int("n", n, minimum=1)
    logits = logits.float()
    before = torch.softmax(logits, -1)
    penalties = {"repetition_penalty": repetition_penalty, "presence_penalty": presence_penalty,
                 "frequency_penalty": frequency_penalty}
    _check_penalties(repetition_penalty, presence_penalty, frequency_penalty, min_p)
    penalized = _penalized(logits, context, **penalties)
    scaled_logits = apply_temperature(penalized, temperature)
    scaled = torch.softmax(scaled_logits, -1)
    pre_p = top_k_filter(scaled_logits, top_k) if top_k is not None else scaled_logits
    after = torch.softmax(filter_logits(logits, temperature, top_k, top_p, min_p=min_p,
                                        context=context, **penalties), -1)
    n = min(n, logits.numel())
    # Stable sort so that ties keep a fixed order, the same order the bars are drawn in.
    order = torch.sort(penalized, descending=True, stable=True).indices[:n]
    cumulative = torch.softmax(pre_p, -1)[order].cumsum(0)
    return {
        "ids": order.tolist(),
        "before": before[order].tolist(),
        "scaled": scaled[order].tolist(),
        "cumulative": cumulative.tolist(),
        "after": after[order].tolist(),
        "kept": int((after > 0).sum()),
        "entropy_before": float(entropy_bits(before)),
        "entropy_after": float(entropy_bits(after)),
    }


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


def generate_text(
    model: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    *,
    stop: str | Iterable[str] | None = None,
    **processors,
) -> str:
    """The text the model writes after prompt (the prompt itself is not included).

    stop: a string or strings that end generation, kept in the text (see stream_text).
    Keyword arguments min_p and the penalties: see stream_generate.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError("prompt is empty: give at least one character to start from")
    prompt_ids = tokenizer.encode(prompt)
    if stop is not None:
        return "".join(stream_text(model, tokenizer, prompt_ids, max_new_tokens, temperature,
                                   top_k, top_p, seed, use_cache, stop=stop, **processors))
    out = generate(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache,
                   **processors)
    return tokenizer.decode(out[0, len(prompt_ids) :].tolist())


@torch.no_grad()
def beam_search(
    model: GPT,
    idx,
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    stop_ids=None,
    repetition_penalty: float | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
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
    num_beams = check_int("num_beams", num_beams, minimum=1, maximum=256)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1,
                               maximum=MAX_NEW_TOKENS)
    length_penalty = check_float("length_penalty", length_penalty)
    _check_penalties(repetition_penalty, 0.0, 0.0, None)
    prompt = _one_prompt(model, idx, "beam search")
    stops = _check_stop_ids(stop_ids, model.config.vocab_size)
    if num_beams == 1:  # transformers then decodes greedily, penalising logits, not log-probs
        return generate(model, prompt, max_new_tokens, 0.0, use_cache=use_cache,
                        stop_ids=stop_ids, repetition_penalty=repetition_penalty)
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
            logits = model(prompt, kv_cache=cache)[0][:, -1]
            cache.reorder(torch.zeros(num_beams, dtype=torch.long))
            logits = logits.expand(num_beams, -1)
        else:
            logits = model(running[:, -block:])[0][:, -1]
        for step in range(max_new_tokens):
            if step > 0:
                if cache is not None and running.shape[1] <= block:
                    logits = model(running[:, -1:], kv_cache=cache)[0][:, -1]
                else:  # past the window every position shifts: no cache, as generate does
                    cache = None
                    logits = model(running[:, -block:])[0][:, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            if repetition_penalty is not None:  # transformers applies it to log-probabilities
                logp = _repetition_penalty(logp, running, repetition_penalty)
            vocab = logp.shape[-1]
            total = (logp + scores[:, None]).reshape(-1)
            top_scores, top_flat = torch.topk(total, min(keep, total.numel()))
            gen_len = step + 1
            final_scores = (top_scores / gen_len**length_penalty).tolist()
            last = step == max_new_tokens - 1
            rows, row_scores, parents = [], [], []
            for rank, (flat, score) in enumerate(zip(top_flat.tolist(), top_scores, strict=True)):
                beam, token = divmod(flat, vocab)
                if last or token in stop_set:
                    if rank < num_beams:  # the spare candidates never finish (transformers)
                        seq = torch.cat([running[beam], running.new_tensor([token])])
                        finished.append((final_scores[rank], seq))
                elif len(rows) < num_beams:
                    rows.append(torch.cat([running[beam], running.new_tensor([token])]))
                    row_scores.append(score)
                    parents.append(beam)
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


# ----- faster decoding: speculative decoding, prompt lookup, batches --------------------------
# (lesson 11; imported here so this section stands apart from the generation code above)

import contextlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402

# eval_mode, check_int, check_seed and check_token_ids are imported at the top of the module.


class PromptLookupDraft:
    """A draft that needs no model: find the context's last n-gram earlier in the context and
    propose the tokens that followed it there (prompt lookup decoding).

    It shines when the output repeats the input (copying, editing, quoting code). The longest
    n-gram from max_ngram down to min_ngram that occurred before wins; its latest occurrence
    is used.
    """

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        self.max_ngram = check_int("max_ngram", max_ngram, minimum=1)
        self.min_ngram = check_int("min_ngram", min_ngram, minimum=1, maximum=self.max_ngram)

    def propose(self, ids: list[int], k: int) -> list[int]:
        """Up to k tokens to try after ids (fewer, or none, if nothing matches)."""
        for n in range(min(self.max_ngram, len(ids) - 1), self.min_ngram - 1, -1):
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):  # latest earlier occurrence first
                if ids[start : start + n] == tail:
                    return ids[start + n : start + n + k]
        return []

    def __repr__(self) -> str:
        return f"PromptLookupDraft(max_ngram={self.max_ngram}, min_ngram={self.min_ngram})"


@dataclass
class SpeculativeRound:
    """One round: the draft's proposal, how many of it the target accepted, and the token the
    target added itself (the correction at the first rejection, or a bonus after all)."""

    proposed: list[int]
    accepted: int
    token: int


def _truncate_cache(cache, length: int) -> None:
    """Forget every cached position from length on (rejected draft tokens)."""
    if hasattr(cache, "truncate"):
        cache.truncate(length)
    else:  # KVCache keeps a filled length per layer; the stale entries are overwritten later
        cache._lengths = [min(n, length) for n in cache._lengths]


def _logits_for(model: GPT, cache, ids: list[int]) -> torch.Tensor:
    """Logits (positions, vocab) of the tokens of ids that the cache has not seen yet."""
    new = torch.tensor([ids[cache.length :]], dtype=torch.long, device=model.device)
    logits, _ = model(new, kv_cache=cache)
    return logits[0].float()


def accept_or_resample(
    p: torch.Tensor, q: torch.Tensor, token: int, generator: torch.Generator | None = None
) -> tuple[bool, int]:
    """The rejection rule of speculative sampling for one drafted token.

    p: the target's distribution, q: the draft's (both (vocab,)), token: drawn from q.
    Keep it with probability min(1, p[token] / q[token]); otherwise draw a replacement from
    max(p - q, 0), renormalised. Whatever q is, the token that comes out is distributed as p.
    Returns (accepted, the token to append).
    """
    u = torch.rand((), generator=generator, device=p.device)
    if u * q[token] <= p[token]:  # u < p/q without dividing by a zero q
        return True, token
    residual = (p - q).clamp(min=0)
    if residual.sum() <= 0:  # p == q: cannot happen after a rejection, but never divide by 0
        residual = p
    return False, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


def _check_draft(target: GPT, draft) -> None:
    if isinstance(draft, PromptLookupDraft):
        return
    if not isinstance(draft, GPT):
        raise TypeError("draft must be a GPT (a smaller model with the same tokenizer) or a "
                        f"PromptLookupDraft, got {type(draft).__name__}")
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(f"draft and target must share a vocabulary: draft has "
                         f"{draft.config.vocab_size} tokens, target {target.config.vocab_size}")


@torch.no_grad()
def speculative_rounds(
    target: GPT,
    draft,
    idx,
    max_new_tokens: int,
    num_draft_tokens: int = 4,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[SpeculativeRound]:
    """Speculative decoding round by round (see speculative_generate); yields each round."""
    _check_sampling(temperature, top_k, top_p)
    _check_draft(target, draft)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=0)
    k_max = check_int("num_draft_tokens", num_draft_tokens, minimum=1)
    seed = check_seed("seed", seed)
    prompt = _one_prompt(target, idx, "speculative decoding")
    ids = prompt[0].tolist()
    generator = _generator(seed, target.device)
    greedy = temperature == 0
    model_draft = isinstance(draft, GPT)
    block = target.config.block_size
    if model_draft:
        block = min(block, draft.config.block_size)

    def dist(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)

    def target_token(logits: torch.Tensor) -> int:
        """The target's own token after logits (vocab,)."""
        return (int(logits.argmax()) if greedy else
                int(torch.multinomial(dist(logits), 1, generator=generator)))

    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(target))
        t_cache = target.new_cache()
        if model_draft:
            stack.enter_context(eval_mode(draft))
            d_cache = draft.new_cache()
        produced = 0
        while produced < max_new_tokens:
            k = min(k_max, max_new_tokens - produced - 1)
            if len(ids) + k > block:  # past the context window: plain decoding, as generate
                window = ids[-target.config.block_size :]
                logits = target(torch.tensor([window], device=target.device))[0][0, -1].float()
                token = target_token(logits)
                ids.append(token)
                produced += 1
                yield SpeculativeRound([], 0, token)
                continue
            proposed, q_rows = [], []
            if model_draft:
                ctx = list(ids)
                for _ in range(k):
                    logits = _logits_for(draft, d_cache, ctx)[-1]
                    if greedy:
                        token = int(logits.argmax())
                    else:
                        q = dist(logits)
                        token = int(torch.multinomial(q, 1, generator=generator))
                        q_rows.append(q)
                    proposed.append(token)
                    ctx.append(token)
            else:
                proposed = draft.propose(ids, k) if k else []
            # One target pass scores every proposed token and the position after them.
            p_logits = _logits_for(target, t_cache, ids + proposed)[-(len(proposed) + 1):]
            accepted, token = 0, None
            for i, d in enumerate(proposed):
                if greedy:
                    best = int(p_logits[i].argmax())
                    ok, token = best == d, best
                else:
                    p = dist(p_logits[i])
                    q = q_rows[i] if model_draft else torch.nn.functional.one_hot(
                        torch.tensor(d), p.numel()).to(p)
                    ok, token = accept_or_resample(p, q, d, generator)
                if not ok:
                    break
                accepted += 1
            if accepted == len(proposed):  # all kept: the target's own next token is free
                token = target_token(p_logits[len(proposed)])
            ids.extend(proposed[:accepted] + [token])
            produced += accepted + 1
            _truncate_cache(t_cache, len(ids) - 1)
            if model_draft:
                _truncate_cache(d_cache, min(d_cache.length, len(ids) - 1))
            yield SpeculativeRound(proposed, accepted, token)


def speculative_generate(
    target: GPT,
    draft,
    idx,
    max_new_tokens: int,
    num_draft_tokens: int = 4,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    return_stats: bool = False,
):
    """The prompt followed by max_new_tokens tokens, drafted cheaply and checked by target.

    Each round the draft (a smaller GPT with the same vocabulary, or a PromptLookupDraft)
    proposes num_draft_tokens tokens; one forward pass of target scores them all and keeps
    the longest acceptable prefix, plus one token of its own. Temperature 0 gives exactly
    target's greedy tokens; with sampling, the rejection rule (accept_or_resample) keeps
    target's distribution. return_stats adds a dict: proposed, accepted, acceptance_rate,
    rounds (= target forward passes), tokens_per_round.
    """
    rounds = list(speculative_rounds(target, draft, idx, max_new_tokens, num_draft_tokens,
                                     temperature, top_k, top_p, seed))
    prompt = _as_prompt(target, idx)
    new = [t for r in rounds for t in r.proposed[: r.accepted] + [r.token]][:max_new_tokens]
    out = torch.cat([prompt, torch.tensor([new], dtype=torch.long, device=prompt.device)], 1)
    if not return_stats:
        return out
    proposed = sum(len(r.proposed) for r in rounds)
    accepted = sum(r.accepted for r in rounds)
    return out, {
        "proposed": proposed,
        "accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else 0.0,
        "rounds": len(rounds),
        "tokens_per_round": len(new) / len(rounds) if rounds else 0.0,
    }


@torch.no_grad()
def generate_batch(
    model: GPT,
    prompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> list[list[int]]:
    """Generate after several prompts of different lengths at once: each prompt + its new tokens.

    The prompts sit left-aligned in one (batch, time) buffer, padded on the right. Decoding
    starts after the shortest prompt; at every later column a row that still has prompt tokens
    takes its own next prompt token, the others take the token just sampled (the scheme of
    Meta's reference Llama code). Every row is thus its own sequence from position 0, with no
    padding inside it: no attention mask and no position offsets are needed, and greedy tokens
    equal one-at-a-time generation. The price: the longer prompts' tails are read one token
    per step instead of in one prefill pass.
    """
    _check_sampling(temperature, top_k, top_p)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=0)
    seed = check_seed("seed", seed)
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise TypeError("prompts must be a non-empty list of prompts (lists of token ids)")
    for i, p in enumerate(prompts):
        if hasattr(p, "__len__") and len(p) == 0:
            raise ValueError(f"prompts[{i}] is empty: give at least one token id")
    rows = [check_token_ids(f"prompts[{i}]", p, model.config.vocab_size) for i, p in
            enumerate(prompts)]
    if any(r.shape[0] != 1 for r in rows):
        raise ValueError("each prompt must be one sequence of token ids")
    lengths = [r.shape[1] for r in rows]
    total = max(lengths) + max_new_tokens
    pad = 0
    tokens = torch.full((len(rows), total), pad, dtype=torch.long, device=model.device)
    is_prompt = torch.zeros(len(rows), total, dtype=torch.bool, device=model.device)
    for i, r in enumerate(rows):
        tokens[i, : lengths[i]] = r[0].to(model.device)
        is_prompt[i, : lengths[i]] = True
    generator = _generator(seed, model.device)
    block = model.config.block_size
    with eval_mode(model):
        cache = model.new_cache()
        for col in range(min(lengths), total):
            if col <= block:
                logits, _ = model(tokens[:, cache.length : col], kv_cache=cache)
            else:  # past the window: every row slides alike, as generate does
                logits, _ = model(tokens[:, col - block : col])
            nxt = _choose(logits[:, -1], temperature, top_k, top_p, generator)
            tokens[:, col] = torch.where(is_prompt[:, col], tokens[:, col], nxt)
    return [tokens[i, : lengths[i] + max_new_tokens].tolist() for i in range(len(rows))]
