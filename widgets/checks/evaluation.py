"""Checks for lesson 10's exercises: perplexity and bits per character by hand, and a text that
scores better than Shakespeare."""

from __future__ import annotations

import functools
import math

from course_lib.data import load_corpus
from course_lib.evaluation import bits_per_char, perplexity, surprisal
from widgets.checks import shipped
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    a_text,
    exercise,
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
