"""Turning logits into text: temperature, top-k, top-p, and (cached, streaming) generation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from course_lib.model import GPT


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")


def _check_top_k(top_k: int | None) -> None:
    if top_k is None:
        return
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise TypeError(f"top_k must be an int or None, got {type(top_k).__name__}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")


def _check_top_p(top_p: float | None) -> None:
    if top_p is None:
        return
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool):
        raise TypeError(f"top_p must be a number or None, got {type(top_p).__name__}")
    if math.isnan(top_p) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


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
) -> torch.Tensor:
    """Temperature, then top-k, then top-p: the order transformers applies them in."""
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of distributions along the last dim (0 log 0 counts as 0)."""
    logp = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logp).sum(dim=-1)


def _as_prompt(model: GPT, idx) -> torch.Tensor:
    if isinstance(idx, (list, tuple)):
        idx = torch.tensor(idx, dtype=torch.long)
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"idx must be a list of token ids or a tensor, got {type(idx).__name__}")
    if idx.dim() == 1:
        idx = idx[None, :]
    if idx.numel() == 0:
        raise ValueError("idx (the prompt) is empty: give at least one token id")
    return idx.to(model.device, torch.long)


@torch.no_grad()
def next_token_probs(
    model: GPT,
    idx,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The model's distribution over the next token after idx, after the chosen filters."""
    idx = _as_prompt(model, idx)[:, -model.config.block_size :]
    was_training = model.training
    model.eval()
    logits, _ = model(idx)
    model.train(was_training)
    return torch.softmax(filter_logits(logits[:, -1].float(), temperature, top_k, top_p), -1)


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
) -> Iterator[torch.Tensor]:
    """Yield each new token (a (batch,) tensor) as soon as it is chosen."""
    _check_temperature(temperature)
    _check_top_k(top_k)
    _check_top_p(top_p)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool):
        raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    idx = _as_prompt(model, idx)
    block = model.config.block_size
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache() if use_cache else None
        for _ in range(max_new_tokens):
            if cache is not None and idx.shape[1] <= block:
                logits, _ = model(idx[:, cache.length :], kv_cache=cache)
            else:
                # Past block_size the window slides and every position shifts, so the cache
                # no longer applies: run on the last block_size tokens, as the plain path does.
                logits, _ = model(idx[:, -block:])
            if temperature == 0:  # greedy: top-k and top-p always keep the top token
                next_id = logits[:, -1].argmax(dim=-1)
            else:
                logits = filter_logits(logits[:, -1].float(), temperature, top_k, top_p)
                probs = torch.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, 1, generator=generator)[:, 0]
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            yield next_id
    finally:
        model.train(was_training)


def generate(
    model: GPT,
    idx,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """The prompt followed by max_new_tokens sampled tokens, shape (batch, T + max_new_tokens)."""
    prompt = _as_prompt(model, idx)
    new = list(
        stream_generate(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache)
    )
    if not new:
        return prompt
    return torch.cat([prompt, torch.stack(new, dim=1)], dim=1)


# ----- helpers for lessons and views --------------------------------------------------------


@torch.no_grad()
def next_token_logits(model: GPT, idx) -> torch.Tensor:
    """Raw logits (vocab,) for the token after idx (one sequence): one forward pass to cache."""
    idx = _as_prompt(model, idx)
    if idx.shape[0] != 1:
        raise ValueError(f"idx must hold one sequence, got a batch of {idx.shape[0]}")
    idx = idx[:, -model.config.block_size :]
    was_training = model.training
    model.eval()
    logits, _ = model(idx)
    model.train(was_training)
    return logits[0, -1].float().cpu()


def describe_filtering(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    n: int = 20,
) -> dict:
    """What temperature, top-k and top-p do to one next-token distribution (logits of shape (V,)).

    Returns, for the n most likely tokens (in order of their probability at temperature 1):
    ids, before (probabilities at temperature 1, no filter), scaled (after temperature only),
    cumulative (running sum of the distribution top-p cuts, i.e. after temperature and top-k),
    after (the distribution sampled from); and over the whole vocabulary: kept (tokens with
    non-zero probability after filtering), entropy_before and entropy_after in bits.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1:
        raise ValueError("logits must be a 1-D tensor: one score per vocabulary entry")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    logits = logits.float()
    before = torch.softmax(logits, -1)
    scaled_logits = apply_temperature(logits, temperature)
    scaled = torch.softmax(scaled_logits, -1)
    pre_p = top_k_filter(scaled_logits, top_k) if top_k is not None else scaled_logits
    after = torch.softmax(filter_logits(logits, temperature, top_k, top_p), -1)
    n = min(n, logits.numel())
    # Stable sort so that ties keep a fixed order, the same order the bars are drawn in.
    order = torch.sort(logits, descending=True, stable=True).indices[:n]
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
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
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
) -> str:
    """The text the model writes after prompt (the prompt itself is not included)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError("prompt is empty: give at least one character to start from")
    prompt_ids = tokenizer.encode(prompt)
    out = generate(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache)
    return tokenizer.decode(out[0, len(prompt_ids) :].tolist())
