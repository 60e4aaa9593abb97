"""A HellaSwag-style multiple-choice benchmark: questions from a play, and a model's answers.

Each question is a speech's context and a few candidate next lines; the model's answer is the
choice it gives the highest log-probability (or per character).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import torch

from course_lib.model import GPT, eval_mode
from course_lib.validation import check_int, check_seed, check_str


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
