"""Measuring a language model: cross-entropy, perplexity, bits per character, surprisal."""

from __future__ import annotations

import math

import torch

from course_lib.model import GPT


def _as_ids(ids) -> torch.Tensor:
    if isinstance(ids, (list, tuple)):
        ids = torch.tensor(ids, dtype=torch.long)
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a list or 1-D tensor of token ids, got {type(ids).__name__}")
    ids = ids.reshape(-1).long()
    if ids.numel() < 2:
        raise ValueError(f"ids must hold at least 2 tokens to evaluate, got {ids.numel()}")
    return ids


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("text is empty: give some text to evaluate")


@torch.no_grad()
def token_nll(model: GPT, ids, batch_size: int = 16) -> torch.Tensor:
    """Negative log-likelihood in nats of every token after the first, given the ones before.

    Long texts are cut into windows of block_size + 1 tokens that overlap by one token, so
    every token is predicted exactly once.
    """
    ids = _as_ids(ids)
    block = model.config.block_size
    was_training = model.training
    model.eval()
    windows = [ids[s : s + block + 1] for s in range(0, len(ids) - 1, block)]
    out = []
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        width = max(len(w) for w in group)
        x = torch.zeros(len(group), width - 1, dtype=torch.long)
        y = torch.full((len(group), width - 1), -1, dtype=torch.long)
        for j, w in enumerate(group):
            x[j, : len(w) - 1], y[j, : len(w) - 1] = w[:-1], w[1:]
        logits, _ = model(x.to(model.device))
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        nll = -logp.gather(-1, y.clamp(min=0)[..., None])[..., 0]
        for j, w in enumerate(group):
            out.append(nll[j, : len(w) - 1])
    model.train(was_training)
    return torch.cat(out)


def cross_entropy(model: GPT, ids) -> float:
    """Mean negative log-likelihood per token, in nats: the training loss."""
    return token_nll(model, ids).mean().item()


def perplexity(model: GPT, ids) -> float:
    """exp(cross-entropy): the effective number of tokens the model is choosing between."""
    return math.exp(cross_entropy(model, ids))


def bits_per_char(model: GPT, tokenizer, text: str) -> float:
    """Total information of the text under the model, in bits, per character of the text.

    The first token is given as context; the characters it covers are not counted, so the
    figure compares fairly across tokenizers.
    """
    _check_text(text)
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise ValueError(f"text must encode to at least 2 tokens, got {len(ids)}: {text!r}")
    n_chars = len(text) - len(tokenizer.decode(ids[:1]))
    return token_nll(model, ids).sum().item() / math.log(2) / n_chars


def surprisal(model: GPT, tokenizer, text: str) -> list[tuple[str, float | None]]:
    """Each token's text with its surprisal in bits (-log2 p); the first token has none."""
    _check_text(text)
    ids = tokenizer.encode(text)
    pieces = [tokenizer.decode([i]) for i in ids]
    if len(ids) < 2:
        return [(pieces[0], None)]
    bits = (token_nll(model, ids) / math.log(2)).tolist()
    return [(pieces[0], None)] + list(zip(pieces[1:], bits, strict=True))


def score_text(model: GPT, tokenizer, text: str) -> dict[str, float | int]:
    """Every figure of this module for one text, from one pass over it.

    tokens and chars count what is scored: every token after the first, and the characters
    those tokens cover, so bits_per_char equals bits_per_char(model, tokenizer, text).
    """
    _check_text(text)
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise ValueError(f"text must encode to at least 2 tokens, got {len(ids)}: {text!r}")
    nll = token_nll(model, ids)
    total_nats = nll.sum().item()
    n_chars = len(text) - len(tokenizer.decode(ids[:1]))
    return {
        "tokens": len(ids) - 1,
        "chars": n_chars,
        "total_bits": total_nats / math.log(2),
        "cross_entropy": total_nats / len(nll),
        "perplexity": math.exp(total_nats / len(nll)),
        "bits_per_token": total_nats / math.log(2) / len(nll),
        "bits_per_char": total_nats / math.log(2) / n_chars,
    }
