"""Exercise checks for lesson 4, self-attention (the last one runs the learner's attention)."""

from __future__ import annotations

import math

import torch

from course_lib.attention import causal_mask, scaled_dot_product
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    a_function,
    as_int_pairs,
    as_numbers,
    call_learner,
    exercise,
    right,
    shown,
    wrong,
)

# Exercise 1: softmax of these scores.
SCORES = [2.0, 1.0, 0.0]
# Exercise 2: the (query, key) pairs the causal mask blocks for a sequence of T tokens.
T = 4
# Exercise 3: head size d of the dot products.
D = 256


@exercise(read=as_numbers, expect="a list of three numbers, one probability per score")
def check_softmax(values: list[float]) -> Feedback:
    """Exercise 1: softmax(SCORES), three probabilities."""
    if len(values) != len(SCORES):
        return wrong(f"There are {len(SCORES)} scores, so give {len(SCORES)} probabilities.")
    exps = [math.exp(s) for s in SCORES]
    expected = [e / sum(exps) for e in exps]
    if all(abs(v - e) < 5e-3 for v, e in zip(values, expected, strict=True)):
        shown = ", ".join(f"{e:.3f}" for e in expected)
        return right(
            f"exp(2), exp(1), exp(0) = {exps[0]:.3f}, {exps[1]:.3f}, 1; divided by their sum "
            f"{sum(exps):.3f} they give {shown}. The gap of 1 in score became a factor "
            f"e = {math.e:.3f} in weight."
        )
    if abs(sum(values) - 1) > 1e-2:
        return wrong(f"Your numbers sum to {sum(values):.3f}; softmax weights always sum to 1.")
    linear = [s / sum(SCORES) for s in SCORES]
    if all(abs(v - e) < 5e-3 for v, e in zip(values, linear, strict=True)):
        return wrong("You divided the scores by their sum. Exponentiate each score first.")
    if all(abs(v - e) < 5e-3 for v, e in zip(values, expected[::-1], strict=True)):
        return wrong("Right numbers, wrong order: the largest score gets the largest weight.")
    return wrong("Exponentiate each score, then divide each by the sum of the exponentials.")


def attention_output(out: object, on: str) -> tuple[torch.Tensor | None, Feedback | None]:
    """A learner's attention function's result: (its output tensor, None), or (None, why not).
    (output, weights), as course_lib's attention returns them, is read as its output."""
    if isinstance(out, tuple) and len(out) == 2:
        out = out[0]
    if out is None:
        return None, wrong("Your function returns None: return the output weights @ v.")
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return None, wrong(f"Return a tensor of floats, got {shown(out)} ({on}).")
    return out, None


@exercise(read=as_int_pairs, expect="a list of (query, key) pairs of positions, e.g. [(0, 1)]")
def check_causal_mask(chosen: set[tuple[int, int]]) -> Feedback:
    """Exercise 2: every (query, key) pair whose weight the causal mask sets to 0, for T tokens."""
    expected = {(q, k) for q in range(T) for k in range(T) if k > q}
    if chosen == expected:
        return right(
            f"The {len(expected)} pairs above the diagonal: query q may not look at a key k > q, "
            "a token that comes later. That is what lets the model train on every position at "
            "once without seeing the answer."
        )
    if chosen == {(k, q) for q, k in expected}:
        return wrong(
            "Those are the pairs a token may see. A query looks back at earlier keys; it is "
            "the later ones (key > query) that are hidden."
        )
    if any(q == k for q, k in chosen):
        return wrong("A token may always look at itself: the diagonal stays.")
    return wrong(
        f"Go row by row: query q (0 to {T - 1}) may see keys 0..q; list the pairs it may not."
    )


@exercise(**A_NUMBER)
def check_scale(value: float) -> Feedback:
    """Exercise 3: the number to divide q.k by so the scores have standard deviation 1."""
    if abs(value - math.sqrt(D)) < 1e-6 * D:
        return right(
            f"q.k is a sum of {D} products, each with variance 1, so its variance is {D} and its "
            f"standard deviation sqrt({D}) = {math.sqrt(D):g}. Dividing by it brings the scores "
            "back to standard deviation 1, whatever the head size."
        )
    if abs(value - D) < 1e-6 * D:
        return wrong(
            f"{D} is the variance of q.k. Dividing by a number c divides the standard "
            "deviation by c, so c is the standard deviation itself."
        )
    return wrong(
        f"Each of the {D} products q_i k_i has mean 0 and variance 1, and they are independent; "
        "what is the variance of their sum, and what is its standard deviation?"
    )


# ----- Exercise 4 (code): causal attention ----------------------------------------------------

ATTENTION_SHAPES = [(5, 8), (2, 7, 16), (2, 3, 6, 4)]


def _attention_variants(q, k, v) -> dict[str, torch.Tensor]:
    """The usual slips, each as the output it would give."""
    T, d = q.shape[-2], q.shape[-1]
    mask = causal_mask(T)
    raw = q @ k.transpose(-2, -1)
    return {
        "You forgot the scaling: divide the scores q @ k^T by sqrt(d), the head size.":
            scaled_dot_product(q * math.sqrt(d), k, v, mask)[0],
        "You forgot the causal mask: set the scores of later keys (key > query) to -inf "
        "before the softmax, e.g. with scores.masked_fill(~causal_mask(T), float('-inf')).":
            scaled_dot_product(q, k, v)[0],
        "Both the scaling by sqrt(d) and the causal mask are missing.":
            scaled_dot_product(q * math.sqrt(d), k, v)[0],
        "Divide the scores by sqrt(d), not by d.":
            scaled_dot_product(q / math.sqrt(d), k, v, mask)[0],
        "The softmax goes over the keys, the last axis (dim=-1): each query's weights sum "
        "to 1.": torch.softmax((raw / math.sqrt(d)).masked_fill(~mask, float("-inf")), -2) @ v,
        "That is the weights matrix; the output is weights @ v.":
            scaled_dot_product(q, k, v, mask)[1],
    }


@exercise(**a_function("causal_attention(q, k, v)"))
def check_causal_attention(fn: object) -> Feedback:
    """Exercise 4: fn(q, k, v) -> softmax(q k^T / sqrt(d), causal mask) v.

    Exercise text to paste:

    Write `causal_attention(q, k, v)` for tensors of shape (..., T, d): scores q k^T divided
    by sqrt(d), later keys masked with -inf, a softmax over the keys, and the weighted sum of
    the values. Return the output, shape (..., T, d). The check runs it on random q, k, v of
    several shapes (with and without batch and head axes) against
    `course_lib.attention.scaled_dot_product(q, k, v, causal_mask(T))`.

        def causal_attention(q, k, v):
            ...  # return the output

        check_causal_attention(causal_attention)

    Solution:

        def causal_attention(q, k, v):
            T, d = q.shape[-2], q.shape[-1]
            scores = q @ k.transpose(-2, -1) / math.sqrt(d)
            allowed = torch.ones(T, T, dtype=torch.bool).tril()  # key <= query
            scores = scores.masked_fill(~allowed, float("-inf"))
            return torch.softmax(scores, dim=-1) @ v

        check_causal_attention(causal_attention)
    """
    g = torch.Generator().manual_seed(4)
    for shape in ATTENTION_SHAPES:
        q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
        on = f"on q, k, v of shape {shape}"
        out, failed = call_learner(fn, q.clone(), k.clone(), v.clone(), on=on)
        if failed is not None:  # a wrong Feedback is falsy
            hint = (" For batched inputs transpose the last two axes only: "
                    "k.transpose(-2, -1), not k.T." if len(shape) > 2 else "")
            return wrong(failed.message + hint)
        out, bad = attention_output(out, on)
        if bad is not None:
            return bad
        expected = scaled_dot_product(q, k, v, causal_mask(shape[-2]))[0]
        if tuple(out.shape) != shape:
            return wrong(f"The output has q's shape {shape}, one vector per query; yours has "
                         f"{tuple(out.shape)} ({on}).")
        out = out.detach().float()
        if torch.allclose(out, expected, atol=1e-4):
            continue
        if torch.isnan(out).any():
            return wrong(f"Your output has NaN ({on}): a row whose scores are all -inf. The "
                         "mask hides later keys (key > query); each query keeps itself and "
                         "the keys before it.")
        why = next((w for w, variant in _attention_variants(q, k, v).items()
                    if variant.shape == out.shape and torch.allclose(out, variant, atol=1e-4)),
                   "Compute softmax(q @ k^T / sqrt(d), with later keys at -inf) @ v.")
        return wrong(f"Your output differs from scaled_dot_product's by up to "
                     f"{(out - expected).abs().max():.3g} ({on}). {why}")
    return right("Your causal attention equals course_lib's scaled_dot_product with "
                 "causal_mask on every shape tried: each query mixes the values of itself and "
                 "the tokens before it, weighted by softmax(q k / sqrt(d)).")
