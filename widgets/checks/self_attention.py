"""Exercise checks for lesson 4, self-attention."""

from __future__ import annotations

import math

from widgets.feedback import (
    A_NUMBER,
    Feedback,
    as_int_pairs,
    as_numbers,
    exercise,
    right,
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
