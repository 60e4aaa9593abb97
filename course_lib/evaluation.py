"""Measuring a language model on a text: mean loss, perplexity, bits per character, surprisal.

A multiple-choice benchmark is course_lib.multiple_choice; confidence intervals on any of
these figures, course_lib.bootstrap.
"""

from __future__ import annotations

import bisect
import math
import re

import torch

from course_lib.model import GPT, eval_mode
from course_lib.tokenization import token_pieces
from course_lib.validation import (
    check_int,
    check_list,
    check_model,
    check_one_sequence,
    check_str,
)


def token_nll(model: GPT, ids, batch_size: int = 16, stride: int | None = None) -> torch.Tensor:
    """Negative log-likelihood in nats of every token after the first, given the ones before.

    Long texts are cut into windows of block_size + 1 tokens that overlap by one token, so
    every token is predicted exactly once. stride (1 to block_size) slides the window by that
    many tokens instead, scoring in each window only the tokens not scored before: every token
    but the first few then has at least block_size - stride tokens of context, which lowers
    the loss (stride = block_size is the default, non-overlapping protocol).
    """
    ids = check_one_sequence("ids", ids, model, min_tokens=2)[0]  # scored where it is
    batch_size = check_int("batch_size", batch_size, minimum=1)
    block = model.config.block_size
    stride = block if stride is None else check_int("stride", stride, minimum=1, maximum=block)
    windows, first_new = [], []  # each window's tokens, and where its unscored targets start
    scored = 0  # targets ids[1..scored] are scored already
    for s in range(0, len(ids) - 1, stride):
        w = ids[s : s + block + 1]
        windows.append(w)
        first_new.append(scored - s)
        scored = s + len(w) - 1
        if scored >= len(ids) - 1:
            break
    out = []
    with eval_mode(model):
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
            out += [nll[j, first_new[i + j] : len(w) - 1] for j, w in enumerate(group)]
    return torch.cat(out)


def repeated_phrase_costs(model: GPT, tokenizer, phrases: list[str]) -> torch.Tensor:
    """(n, 2): for each phrase said twice after a newline, its surprisal in nats (every token
    after its first) the first time and the second time. A model that copies what it has read
    (an induction head) pays much less the second time; one that does not, about as much."""
    model = check_model("model", model)
    phrases = check_list("phrases", phrases, str, item="string")
    rows = [tokenizer.encode("\n" + p + p) for p in phrases]  # each phrase said twice
    lengths = [len(tokenizer.encode(p)) for p in phrases]
    width = max(map(len, rows))
    if width > model.config.block_size:
        raise ValueError(f"phrases: the longest, said twice, is {width} tokens, more than the "
                         f"model's block_size {model.config.block_size}")
    x = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # padded at the end
    with eval_mode(model):
        logp = torch.log_softmax(model(x.to(model.device))[0].float(), dim=-1).cpu()
    nll = -logp[:, :-1].gather(-1, x[:, 1:, None])[..., 0]  # nll[:, t]: token t + 1
    costs = []
    for r, n, row in zip(rows, lengths, nll, strict=True):
        second = len(r) - n
        if n < 2 or r[second - n : second] != r[second:]:
            raise ValueError(f"phrases: {tokenizer.decode(r)!r} is not the same {n} tokens twice "
                             "(start each phrase with a space so it splits the same way)")
        costs.append((row[second - n : second - 1].sum().item(),
                       row[second : len(r) - 1].sum().item()))
    return torch.tensor(costs)


def mean_loss(model: GPT, ids, stride: int | None = None) -> float:
    """Mean negative log-likelihood per token of a sequence of ids, in nats: the training loss.

    (model.cross_entropy is the function of logits and targets that the model trains with;
    this one runs the model over a whole text.) stride: see token_nll.
    """
    return token_nll(model, ids, stride=stride).mean().item()


cross_entropy = mean_loss  # the name lessons 8 and 11 use


def perplexity(model: GPT, ids) -> float:
    """exp(mean loss): the effective number of tokens the model is choosing between."""
    return math.exp(mean_loss(model, ids))


def _encode(tokenizer, text: str) -> list[int]:
    check_str("text", text)
    return tokenizer.encode(text)


def bits_per_char(model: GPT, tokenizer, text: str, stride: int | None = None) -> float:
    """Total information of the text under the model, in bits, per character of the text.

    The first token is given as context; the characters it covers are not counted, so the
    figure compares fairly across tokenizers. stride: the window protocol (see token_nll).
    """
    return score_text(model, tokenizer, text, stride=stride)["bits_per_char"]


def surprisal(model: GPT, tokenizer, text: str) -> list[tuple[str, float | None]]:
    """Each token's text with its surprisal in bits (-log2 p); the first token has none."""
    ids = _encode(tokenizer, text)
    pieces = [tokenizer.decode([i]) for i in ids]
    if len(ids) < 2:
        return [(pieces[0], None)]
    bits = (token_nll(model, ids) / math.log(2)).tolist()
    return [(pieces[0], None)] + list(zip(pieces[1:], bits, strict=True))


def score_text(
    model: GPT, tokenizer, text: str, stride: int | None = None
) -> dict[str, float | int]:
    """Every figure of this module for one text, from one pass over it.

    tokens and chars count what is scored: every token after the first, and the characters
    those tokens cover, so bits_per_char equals bits_per_char(model, tokenizer, text).
    stride: the window protocol (see token_nll); None is non-overlapping windows.
    """
    ids = _encode(tokenizer, text)
    if len(ids) < 2:
        raise ValueError(f"text must encode to at least 2 tokens, got {len(ids)}: {text!r:.60}")
    nll = token_nll(model, ids, stride=stride)
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


def surprisal_summary(
    rows: list[tuple[str, float | None]], text: str
) -> dict[str, float | int] | None:
    """Totals of surprisal(model, tokenizer, text)'s rows, as score_text reports them.

    tokens, chars, total_bits, bits_per_token, perplexity and bits_per_char, where chars counts
    the characters of the scored tokens (every token after the first, as bits_per_char does);
    None when no token is scored (a one-token text). bits_per_char is None when the scored
    tokens cover no whole character (the rest of a character the first token began).
    """
    scored = [bits for _, bits in rows if bits is not None]
    if not scored:
        return None
    total = sum(scored)
    chars = len(text) - len(rows[0][0])
    return {
        "tokens": len(scored),
        "chars": chars,
        "total_bits": total,
        "bits_per_token": total / len(scored),
        "perplexity": 2 ** (total / len(scored)),
        "bits_per_char": total / chars if chars > 0 else None,
    }


def word_surprisal(model: GPT, tokenizer, text: str) -> list[tuple[str, float | None]]:
    """Each whitespace-separated word of the text with the surprisal, in bits, of its tokens.

    Words are a unit every tokenizer shares, so two models with different tokenizers can be
    compared word by word. Each word owns the whitespace before it (the text's trailing
    whitespace goes to the last word), and each scored token's bits go to the word owning the
    token's first byte, so the words' bits add up to the text's total_bits. The first token
    is given, not scored: a word made only of it has None.
    """
    ids = _encode(tokenizer, text)
    if len(ids) < 2:
        raise ValueError(f"text must encode to at least 2 tokens, got {len(ids)}: {text!r:.60}")
    data = text.encode("utf-8", errors="surrogatepass")
    pieces = token_pieces(tokenizer, ids)
    if b"".join(pieces) != data:  # offsets below would point at the wrong characters
        raise ValueError("text must decode back to itself under this tokenizer to be split "
                         f"into words, got {text!r:.60}")
    words, ends, offset, last = [], [], 0, 0  # ends: the byte offset where each word ends
    for m in re.finditer(r"\S+", text):
        offset += len(text[last : m.end()].encode("utf-8", errors="surrogatepass"))
        words.append(m.group())
        ends.append(offset)
        last = m.end()
    if not words:
        raise ValueError(f"text must hold at least one word, got {text!r:.60}")
    bits: list[float | None] = [None] * len(words)
    start = len(pieces[0])
    for piece, nats in zip(pieces[1:], token_nll(model, ids).tolist(), strict=True):
        k = min(bisect.bisect_right(ends, start), len(words) - 1)
        bits[k] = (bits[k] or 0.0) + nats / math.log(2)
        start += len(piece)
    return list(zip(words, bits, strict=True))
