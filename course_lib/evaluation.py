"""Measuring a language model: mean loss, perplexity, bits per character, surprisal."""

from __future__ import annotations

import math
import re

import torch

from course_lib.model import GPT, eval_mode
from course_lib.tokenization import token_pieces
from course_lib.validation import check_int, check_str, check_token_ids


def _one_sequence(model: GPT, ids) -> torch.Tensor:
    """ids as a 1-D long tensor of at least 2 ids, each inside the model's vocabulary."""
    ids = check_token_ids("ids", ids, model.config.vocab_size)
    if ids.shape[0] != 1:  # flattening a batch would score its rows as one text
        raise ValueError(f"ids must be one sequence, got a batch of {ids.shape[0]}")
    if ids.shape[1] < 2:
        raise ValueError(f"ids must hold at least 2 tokens to evaluate, got {ids.shape[1]}")
    return ids[0]


def token_nll(model: GPT, ids, batch_size: int = 16, stride: int | None = None) -> torch.Tensor:
    """Negative log-likelihood in nats of every token after the first, given the ones before.

    Long texts are cut into windows of block_size + 1 tokens that overlap by one token, so
    every token is predicted exactly once. stride (1 to block_size) slides the window by that
    many tokens instead, scoring in each window only the tokens not scored before: every token
    but the first few then has at least block_size - stride tokens of context, which lowers
    the loss (stride = block_size is the default, non-overlapping protocol).
    """
    ids = _one_sequence(model, ids)
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


def mean_loss(model: GPT, ids, stride: int | None = None) -> float:
    """Mean negative log-likelihood per token of a sequence of ids, in nats: the training loss.

    (model.cross_entropy is the function of logits and targets that the model trains with;
    this one runs the model over a whole text.) stride: see token_nll.
    """
    return token_nll(model, ids, stride=stride).mean().item()


cross_entropy = mean_loss  # the name lessons 7 and 10 use


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


# ----- multiple choice (HellaSwag-style) and bootstrap intervals ------------------------------

import bisect  # noqa: E402
import random  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from course_lib.validation import check_float, check_seed  # noqa: E402


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question: which of choices continues context? answer is its index."""

    context: str
    choices: tuple[str, ...]
    answer: int


def next_line_choices(
    text: str, n_items: int = 200, n_choices: int = 4, context_lines: int = 4, seed: int = 0
) -> list[ChoiceItem]:
    """HellaSwag-style questions from a play text: the true next line of a speech against
    n_choices - 1 real lines of similar length from elsewhere in the text.

    text is plain "SPEAKER:\\nline\\nline\\n\\n..." (course_lib.data). The context is the
    speaker and up to context_lines lines before the answer within one speech; answers and
    distractors have at least 20 characters, distractors within a few characters of the
    answer's length, so neither style nor length gives the answer away. The same arguments
    always give the same items.
    """
    check_str("text", text)
    n_items = check_int("n_items", n_items, minimum=1)
    n_choices = check_int("n_choices", n_choices, minimum=2, maximum=10)
    context_lines = check_int("context_lines", context_lines, minimum=1)
    seed = check_seed("seed", seed)
    speeches = [s.split("\n") for s in text.strip().split("\n\n")]
    slots = [(i, j) for i, s in enumerate(speeches) for j in range(2, len(s))]
    pool = sorted({line for s in speeches for line in s[1:] if len(line) >= 20},
                  key=lambda line: (len(line), line))
    lengths = [len(line) for line in pool]
    rng = random.Random(seed)
    rng.shuffle(slots)
    items = []
    for i, j in slots:
        speech, answer = speeches[i], speeches[i][j]
        if len(answer) < 20:
            continue
        at = bisect.bisect_left(lengths, len(answer))
        near = [x for x in pool[max(0, at - 40) : at + 40] if x != answer]
        if len(near) < n_choices - 1:
            continue
        distractors = rng.sample(near, n_choices - 1)
        pos = rng.randrange(n_choices)
        choices = tuple(distractors[:pos] + [answer] + distractors[pos:])
        context = speech[0] + "\n" + "\n".join(speech[max(1, j - context_lines) : j]) + "\n"
        items.append(ChoiceItem(context, choices, pos))
        if len(items) == n_items:
            return items
    raise ValueError(f"the text holds only {len(items)} usable questions, asked for {n_items}")


def choice_logprobs(
    model: GPT, tokenizer, items: list[ChoiceItem], batch_size: int = 64,
    share_context: bool = False,
) -> torch.Tensor:
    """(items, choices) total log-probability (nats) of each choice + "\\n" after its context.

    Every (item, choice) pair is one row; rows are right-padded and scored batch_size at a
    time (a causal model's padding on the right changes nothing before it). A context longer
    than the window keeps its end. share_context=True runs each item's context once and its
    choices on copies of that KV cache instead: the same numbers (up to float rounding) for
    about half the work, which pays on a big model (SmolLM2) where batching does not.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if not isinstance(share_context, bool):
        raise TypeError(f"share_context must be True or False, got {share_context!r}")
    if not items or not all(isinstance(it, ChoiceItem) for it in items):
        raise TypeError("items must be a non-empty list of ChoiceItem (next_line_choices)")
    n_choices = len(items[0].choices)
    if any(len(it.choices) != n_choices for it in items):
        raise ValueError("every item must have the same number of choices")
    block = model.config.block_size
    if share_context:
        return torch.stack([_shared_context_logprobs(model, tokenizer, it) for it in items])
    rows, spans = [], []
    for it in items:
        ctx = tokenizer.encode(it.context)
        for choice in it.choices:
            cont = tokenizer.encode(choice + "\n")
            rows.append((ctx + cont)[-(block + 1) :])
            spans.append(len(cont))
    totals = []
    with eval_mode(model):
        for b in range(0, len(rows), batch_size):
            group, group_spans = rows[b : b + batch_size], spans[b : b + batch_size]
            width = max(len(r) for r in group) - 1
            x = torch.zeros(len(group), width, dtype=torch.long)
            y = torch.full((len(group), width), -1, dtype=torch.long)
            for r, (ids, span) in enumerate(zip(group, group_spans, strict=True)):
                n = len(ids) - 1
                x[r, :n] = torch.tensor(ids[:-1])
                y[r, n - span : n] = torch.tensor(ids[-span:])  # only the choice is scored
            logits, _ = model(x.to(model.device))
            logp = torch.log_softmax(logits.float(), -1).cpu()
            picked = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0] * (y >= 0)
            totals.append(picked.sum(-1))
    return torch.cat(totals).view(len(items), n_choices)


@torch.no_grad()
def _shared_context_logprobs(model: GPT, tokenizer, item: ChoiceItem) -> torch.Tensor:
    """One item's choice log-probabilities: the context once, then every choice on its cache."""
    conts = [tokenizer.encode(c + "\n") for c in item.choices]
    width = max(len(c) for c in conts)
    ctx = tokenizer.encode(item.context)[-(model.config.block_size - width + 1) :]
    with eval_mode(model):
        cache = model.new_cache()
        first = model(torch.tensor([ctx], device=model.device), kv_cache=cache)[0][0, -1]
        first = torch.log_softmax(first.float(), -1).cpu()
        totals = torch.tensor([first[c[0]].item() for c in conts], dtype=torch.float64)
        if width > 1:
            cache.reorder(torch.zeros(len(conts), dtype=torch.long))
            x = torch.zeros(len(conts), width - 1, dtype=torch.long)
            y = torch.full((len(conts), width - 1), -1, dtype=torch.long)
            for r, c in enumerate(conts):
                x[r, : len(c) - 1] = torch.tensor(c[:-1])
                y[r, : len(c) - 1] = torch.tensor(c[1:])
            logits = model(x.to(model.device), kv_cache=cache)[0]
            logp = torch.log_softmax(logits.float(), -1).cpu()
            picked = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0] * (y >= 0)
            totals += picked.sum(-1).double()
    return totals.float()


def score_choices(
    model: GPT, tokenizer, items: list[ChoiceItem], batch_size: int = 64,
    share_context: bool = False,
) -> dict:
    """Multiple-choice accuracy the way HellaSwag is scored.

    accuracy: the choice with the highest total log-probability is right; accuracy_norm: the
    highest log-probability per character (lm-evaluation-harness's acc_norm), which does not
    favour short choices. Also correct and correct_norm (one bool per item, for
    bootstrap_interval) and logprobs (items, choices). Chance is 1 / choices.
    """
    logprobs = choice_logprobs(model, tokenizer, items, batch_size, share_context)
    answers = torch.tensor([it.answer for it in items])
    chars = torch.tensor([[len(c) + 1 for c in it.choices] for it in items], dtype=torch.float)
    correct = logprobs.argmax(-1) == answers
    correct_norm = (logprobs / chars).argmax(-1) == answers
    return {
        "accuracy": correct.float().mean().item(),
        "accuracy_norm": correct_norm.float().mean().item(),
        "chance": 1 / logprobs.shape[1],
        "correct": correct.tolist(),
        "correct_norm": correct_norm.tolist(),
        "logprobs": logprobs,
    }


def _resample_stats(values, weights, n_resamples: int, seed: int) -> tuple[torch.Tensor, ...]:
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() < 2:
        raise ValueError(f"values must hold at least 2 numbers, got {v.numel()}")
    w = torch.ones_like(v) if weights is None else torch.as_tensor(
        weights, dtype=torch.float64).reshape(-1)
    if w.shape != v.shape:
        raise ValueError(f"weights must match values: {w.numel()} against {v.numel()}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(v), (n_resamples, len(v)), generator=g)
    return v, w, idx


def bootstrap_interval(
    values, weights=None, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(values) / sum(weights) (the mean without weights).

    The items are resampled with replacement n_resamples times; the interval holds the middle
    confidence of the statistic. Per-item accuracies (0/1) give an accuracy's interval; per-line
    bits with each line's characters as weights give bits per character's.
    """
    n_resamples = check_int("n_resamples", n_resamples, minimum=10)
    confidence = check_float("confidence", confidence, minimum=0.0, maximum=1.0,
                             min_inclusive=False, max_inclusive=False)
    seed = check_int("seed", seed, minimum=0)
    v, w, idx = _resample_stats(values, weights, n_resamples, seed)
    stats = v[idx].sum(1) / w[idx].sum(1)
    a = (1 - confidence) / 2
    return float(stats.quantile(a)), float(stats.quantile(1 - a))


def paired_bootstrap_interval(
    values_a, values_b, weights=None, n_resamples: int = 2000, confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of the difference A - B of two models scored on the same items.

    Each resample draws the same items for both, so what the items share (a hard line is hard
    for both) cancels: far narrower than two separate intervals. If it excludes 0, the
    difference is unlikely to be an accident of which items were drawn.
    """
    a = torch.as_tensor(values_a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(values_b, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"values_a and values_b must score the same items: {a.numel()} "
                         f"against {b.numel()}")
    n_resamples = check_int("n_resamples", n_resamples, minimum=10)
    confidence = check_float("confidence", confidence, minimum=0.0, maximum=1.0,
                             min_inclusive=False, max_inclusive=False)
    seed = check_int("seed", seed, minimum=0)
    d, w, idx = _resample_stats(a - b, weights, n_resamples, seed)
    stats = d[idx].sum(1) / w[idx].sum(1)
    q = (1 - confidence) / 2
    return float(stats.quantile(q)), float(stats.quantile(1 - q))
