"""Checks for lesson 11's exercises: perplexity and bits per character by hand, and a text that
scores better than Shakespeare; a continuation's log-probability (code)."""

from __future__ import annotations

import copy
import functools
import math

import torch

from course_lib.data import load_corpus
from course_lib.evaluation import bits_per_char, perplexity, surprisal, token_nll
from course_lib.model import eval_mode
from widgets.checks import shipped
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    a_function,
    a_text,
    exercise,
    learner_number,
    right,
    wrong,
)

SENTENCE = "Fair is foul, and foul is fair: hover through the fog and filthy air."
MIN_FOOL_CHARS = 200
HELD_OUT_CHARS = 20_000  # the slice of the held-out plays the lesson scores
MAX_FOOL_CHARS = 20_000  # longer texts would take long to score and prove nothing more


@functools.cache
def _held_out_bits_per_char(model, tokenizer) -> float:
    return bits_per_char(model, tokenizer, load_corpus("val")[:HELD_OUT_CHARS])


def _near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)


@exercise("Replace None with the perplexity you computed (a number).", **A_NUMBER)
def check_perplexity(x: float, model=None, tokenizer=None) -> Feedback:
    """Exercise 1: the per-token perplexity of SENTENCE, from its surprisals."""
    model, tokenizer = shipped(model, tokenizer)
    bits = [b for _, b in surprisal(model, tokenizer, SENTENCE) if b is not None]
    mean_bits = sum(bits) / len(bits)
    expected = perplexity(model, tokenizer.encode(SENTENCE))
    if _near(x, expected):
        return right(f"2 ** (mean bits per token) = 2 ** {mean_bits:.3f} = {expected:.2f}: as "
                     "hard as choosing uniformly among that many tokens at every step.")
    if _near(x, mean_bits):
        return wrong("That is the mean surprisal in bits per token. Perplexity is 2 ** that.")
    if _near(x, math.exp(mean_bits)):
        return wrong("Surprisal is in bits (log base 2), so raise 2, not e, to the mean.")
    if _near(x, 2 ** sum(bits)):
        return wrong("Take the mean of the surprisals, not their sum, before raising 2 to it.")
    if _near(x, sum(2 ** b for b in bits) / len(bits)):
        return wrong("Average the bits first, then raise 2 to the average (a geometric mean).")
    return wrong(f"Not {x:g}. Drop the first row (it has no surprisal), average the bits of "
                 "the rest, and raise 2 to that.")


@exercise("Replace None with the bits per character you computed (a number).", **A_NUMBER)
def check_bits_per_char(x: float, model=None, tokenizer=None) -> Feedback:
    """Exercise 2: the bits per character of SENTENCE, from its surprisals."""
    model, tokenizer = shipped(model, tokenizer)
    rows = surprisal(model, tokenizer, SENTENCE)
    bits = [b for _, b in rows if b is not None]
    expected = bits_per_char(model, tokenizer, SENTENCE)
    if _near(x, expected):
        return right(f"{sum(bits):.2f} bits over the {len(SENTENCE) - len(rows[0][0])} "
                     f"characters after the first token = {expected:.3f} bits/char, a figure "
                     "any model with any tokenizer can be compared on.")
    if _near(x, sum(bits) / len(SENTENCE)):
        return wrong("Nearly: the first token is given as context, not predicted, so its "
                     "characters are not counted. Divide by len(SENTENCE) - len(first token).")
    if _near(x, sum(bits) / len(bits)):
        return wrong("That is bits per token. Divide the total bits by characters instead.")
    if _near(x, expected * math.log(2)):
        return wrong("That is in nats: surprisal in bits is already log base 2, no ln needed.")
    return wrong(f"Not {x:g}. Sum the bits of every scored token, then divide by the number of "
                 "characters those tokens cover.")


@exercise("Replace None with your text (a string).", **a_text("your text", MAX_FOOL_CHARS))
def check_low_perplexity_text(text: str, model=None, tokenizer=None) -> Feedback:
    """Exercise 3: a text of 200+ characters scoring fewer bits/char than the held-out plays."""
    if len(text) < MIN_FOOL_CHARS:
        return wrong(f"Make it at least {MIN_FOOL_CHARS} characters long; it has {len(text)}.")
    model, tokenizer = shipped(model, tokenizer)
    target = _held_out_bits_per_char(model, tokenizer)
    plays = load_corpus("all")
    pieces = [text[i : i + 50] for i in range(0, len(text) - 49, 50)]
    if sum(p in plays for p in pieces) > len(pieces) // 2:
        return wrong("Most of that is copied from the plays: write your own text.")
    bpc = bits_per_char(model, tokenizer, text)
    if bpc < target:
        return right(f"{bpc:.3f} bits/char, under real held-out Shakespeare's {target:.3f}: a "
                     "lower perplexity, yet nobody would call it better writing.")
    return wrong(f"{bpc:.3f} bits/char; real held-out Shakespeare scores {target:.3f}. Make the "
                 "text easier to predict: what did the model find cheapest in the lesson?")


# ----- Exercise 4 (code): the log-probability of a continuation -------------------------------

CONTINUATIONS = [
    ("ROMEO:\nBut soft, what light through yonder", " window breaks?"),
    ("KING RICHARD III:\nNow is the winter of our", " discontent"),
    ("First Citizen:\nBefore we proceed any further, hear me", " speak.\n\nAll:\nSpeak, speak."),
]


def _logprob_slips(logp: torch.Tensor, ids: list[int], n: int) -> dict[str, float]:
    """The usual slips, as the number each would give; logp is log_softmax over ids' logits."""
    picked = logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]  # log p(ids[t+1] | ..t)
    right_sum = float(picked[n - 1:].sum())
    own = logp[n:].gather(-1, torch.tensor(ids[n:])[:, None])[:, 0]  # each token "given itself"
    return {
        "That is the log-probability in bits (log base 2); the exercise asks for the natural "
        "log, what log_softmax gives.": right_sum / math.log(2),
        "That is the negative log-likelihood: the log-probability is minus that, a negative "
        "number.": -right_sum,
        "That is the mean per token; take the sum: the log of a product of probabilities is the "
        "sum of their logs.": right_sum / (len(ids) - n),
        "That counts the context's tokens too: add up only the continuation's.":
            float(picked.sum()),
        "Off by one: the logits at position t predict token t + 1, so the continuation's first "
        "token is read from the last context position.": float(own.sum()),
        "That is the probability itself; the exercise asks for its log.": math.exp(right_sum),
    }


@exercise(**a_function("continuation_logprob(model, context_ids, continuation_ids)"))
def check_continuation_logprob(fn: object, model=None, tokenizer=None) -> Feedback:
    """Exercise 4: fn(model, context_ids, continuation_ids) -> the summed natural-log
    probability of the continuation given the context.

    Exercise text to paste:

    Multiple-choice benchmarks score each answer by how likely the model finds it after the
    question. Write `continuation_logprob(model, context_ids, continuation_ids)` (two lists of
    token ids): run the model once on context + continuation, take log_softmax of the logits,
    and add up the log-probability of each continuation token at the position just before it.
    Return one number (natural log). The check compares it, on the shipped model, with what
    `course_lib.evaluation.token_nll` gives.

        def continuation_logprob(model, context_ids, continuation_ids):
            ...  # return one number, the summed log-probability

        check_continuation_logprob(continuation_logprob)

    Solution:

        def continuation_logprob(model, context_ids, continuation_ids):
            ids = torch.tensor([context_ids + continuation_ids])
            with torch.no_grad():
                logits, _ = model(ids)
            logp = torch.log_softmax(logits[0], dim=-1)
            n = len(context_ids)
            # position t predicts token t + 1: continuation token j is read at n - 1 + j
            return sum(logp[n - 1 + j, tok].item() for j, tok in enumerate(continuation_ids))

        check_continuation_logprob(continuation_logprob)
    """
    model, tokenizer = shipped(model, tokenizer)
    # The learner's code gets a copy: a slip such as model.double() must not change the model
    # every other check shares.
    theirs = copy.deepcopy(model).eval()
    for context, continuation in CONTINUATIONS:
        cont = tokenizer.encode(continuation)
        ctx = tokenizer.encode(context)[-(model.config.block_size - len(cont)):]
        ids = ctx + cont
        expected = -float(token_nll(model, ids)[len(ctx) - 1:].sum())
        on = f"for the continuation {continuation!r} after {context[-25:]!r}"
        with torch.no_grad():
            value, failed = learner_number(
                fn, theirs, list(ctx), list(cont), on=on,
                what="the sum over the continuation's tokens",
                if_none="Your function returns None: return the summed log-probability.")
        if failed is not None:
            return failed
        if math.isclose(value, expected, rel_tol=1e-4, abs_tol=1e-3):
            continue
        with eval_mode(model):
            logp = torch.log_softmax(model(torch.tensor([ids]))[0][0].float(), -1).cpu()
        why = next((w for w, v in _logprob_slips(logp, ids, len(ctx)).items()
                    if math.isclose(value, v, rel_tol=1e-4, abs_tol=1e-6)),
                   "Add log_softmax(logits)[t, ids[t + 1]] over the continuation's tokens.")
        return wrong(f"The log-probability {on} is {expected:.3f}; yours gives {value:.4g}. "
                     f"{why}")
    return right("Your log-probabilities equal the library's on every continuation: one "
                 "forward pass, and the continuation's tokens read one position early. "
                 "Comparing such sums (or their per-token means) across answers is how "
                 "likelihood-scored multiple-choice benchmarks work.")
