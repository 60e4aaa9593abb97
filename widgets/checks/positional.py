"""Exercise checks for lesson 3, positional encoding (the last one runs the learner's table)."""

from __future__ import annotations

import math

import torch

from course_lib.positional import sinusoidal
from widgets.feedback import (
    Feedback,
    a_function,
    as_int_pairs,
    as_ints,
    as_number,
    exercise,
    learner_tensor,
    right,
    wrong,
)

# Exercise 1 asks for PE[POS, DIM] of the sinusoidal table with d_model = D_MODEL.
POS, DIM, D_MODEL = 10, 5, 16
# Exercise 2: which (query position, key position) pairs give the same RoPE score as QUERY_KEY?
QUERY_KEY = (9, 4)
ROPE_CANDIDATES = [(5, 0), (4, 9), (10, 4), (20, 15), (13, 8), (9, 9)]
# Exercise 3: "A B C D" against "B A C D", causal attention, no positions.
SENTENCE_1, SENTENCE_2 = ["A", "B", "C", "D"], ["B", "A", "C", "D"]


@exercise(read=as_number, expect="one finite number (a float)")
def check_sinusoid_value(value: float) -> Feedback:
    """Exercise 1: the value of the sinusoidal encoding at position POS, dimension DIM."""
    i = DIM // 2
    angle = POS / 10000 ** (2 * i / D_MODEL)
    if abs(value - math.cos(angle)) < 1e-3:
        return right(
            f"Dimension {DIM} is odd, so it is a cosine; its pair index is i = {DIM} // 2 = {i}, "
            f"so the angle is {POS} / 10000^({2 * i}/{D_MODEL}) = {angle:g} radian and "
            f"cos({angle:g}) = {math.cos(angle):.4f}."
        )
    if abs(value - math.sin(angle)) < 1e-3:
        return wrong("Right angle, wrong function: even dimensions use sin, odd ones use cos.")
    if abs(value - math.cos(math.radians(angle))) < 1e-4:
        return wrong("The angle is in radians, not degrees (math.cos takes radians).")
    for exponent in (DIM, 2 * DIM):
        if abs(value - math.cos(POS / 10000 ** (exponent / D_MODEL))) < 1e-3:
            return wrong(
                f"Check the exponent: dimensions 2i and 2i+1 share the frequency "
                f"10000^(-2i/d), with i = dimension // 2 (here i = {i}, so 2i = {2 * i})."
            )
    return wrong(
        f"Not quite. Work out i = {DIM} // 2, the angle = {POS} / 10000^(2i/{D_MODEL}), "
        f"then take sin if the dimension is even, cos if it is odd."
    )


@exercise(read=as_int_pairs,
          expect="a list of (query position, key position) pairs, e.g. [(1, 0), (2, 1)]")
def check_rope_same_score(chosen: set[tuple[int, int]]) -> Feedback:
    """Exercise 2: the pairs of ROPE_CANDIDATES whose RoPE score equals that of QUERY_KEY."""
    offset = QUERY_KEY[0] - QUERY_KEY[1]
    expected = {(m, n) for m, n in ROPE_CANDIDATES if m - n == offset}
    if chosen == expected:
        return right(
            f"RoPE's score depends only on query position - key position, here {offset}; "
            f"the absolute positions cancel because rotating both by the same extra angle "
            f"leaves their dot product alone."
        )
    reversed_pairs = {(m, n) for m, n in chosen if n - m == offset}
    if reversed_pairs:
        return wrong(
            f"{sorted(reversed_pairs)} have offset {-offset}, not {offset}: the sign matters. "
            "q.k is not symmetric once q and k are different vectors."
        )
    missing = sorted(expected - chosen)
    extra = sorted(chosen - expected)
    return wrong(
        f"Compare query position - key position for each pair with {QUERY_KEY}. "
        + (f"You missed {len(missing)}. " if missing else "")
        + (f"{extra} do not belong." if extra else "")
    )


@exercise(read=as_ints, expect="a list of positions (integers from 0 to 3), e.g. [0, 1]")
def check_unchanged_rows(positions: list[int]) -> Feedback:
    """Exercise 3: output positions that are identical for SENTENCE_1 and SENTENCE_2."""
    chosen = set(positions)
    if chosen == {2, 3}:
        return right(
            "Positions 2 and 3 see the same tokens ({A, B, C} and {A, B, C, D}) with the same "
            "query token, and without positions attention treats what it sees as a bag. "
            "Positions 0 and 1 have different query tokens (A against B), so they differ."
        )
    if {0, 1} & chosen:
        return wrong(
            "At position 0 the first sentence has query A and the second has query B: "
            "different tokens ask different questions. Look at what each position can see."
        )
    return wrong(
        "List every position whose query token and set of visible tokens (itself and "
        "everything to its left) are the same in both sentences."
    )


# ----- Exercise 4 (code): the sinusoidal table ------------------------------------------------

SINUSOIDAL_SHAPES = [(1, 2), (4, 6), (10, 16), (50, 64), (33, 10)]


@exercise(**a_function("sinusoidal_table(n_positions, d_model)"))
def check_sinusoidal(fn: object) -> Feedback:
    """Exercise 4: fn(n_positions, d_model) -> the (n_positions, d_model) sinusoidal table.

    Exercise text to paste:

    Write `sinusoidal_table(n_positions, d_model)` returning a tensor of shape
    (n_positions, d_model) with PE[pos, 2i] = sin(pos / 10000^(2i/d_model)) and
    PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)). The check compares it with
    `course_lib.positional.sinusoidal` for several shapes.

        def sinusoidal_table(n_positions, d_model):
            ...  # return a (n_positions, d_model) tensor

        check_sinusoidal(sinusoidal_table)

    Solution:

        def sinusoidal_table(n_positions, d_model):
            pos = torch.arange(n_positions).float()[:, None]    # (n_positions, 1)
            two_i = torch.arange(0, d_model, 2).float()         # 0, 2, 4, ...
            angle = pos / 10000 ** (two_i / d_model)            # (n_positions, d_model / 2)
            table = torch.zeros(n_positions, d_model)
            table[:, 0::2] = torch.sin(angle)                   # even columns
            table[:, 1::2] = torch.cos(angle)                   # odd columns
            return table

        check_sinusoidal(sinusoidal_table)
    """
    for n, d in SINUSOIDAL_SHAPES:
        out, failed = learner_tensor(fn, n, d, on=f"for n_positions={n}, d_model={d}",
                                     what="the table",
                                     if_none="Your function returns None: return the table.")
        if failed is not None:
            return failed
        expected = sinusoidal(n, d)
        if tuple(out.shape) != (n, d):
            return wrong(f"For n_positions={n}, d_model={d} the table has shape {(n, d)}, one "
                         f"row per position; yours has {tuple(out.shape)}.")
        out = out.detach().to("cpu", torch.float64)
        if torch.allclose(out, expected.double(), atol=1e-4):
            continue
        return wrong(f"For n_positions={n}, d_model={d} your table differs from "
                     f"course_lib.positional.sinusoidal by up to "
                     f"{(out - expected).abs().max():.3g}. " + _sinusoidal_slip(out, n, d))
    return right("Your table equals course_lib's for every shape tried: each pair of columns "
                 "is a sine and a cosine of the same angle, turning more slowly from the first "
                 "pair to the last.")


def _sinusoidal_slip(out: torch.Tensor, n: int, d: int) -> str:
    """What a wrong table most likely got wrong, from the usual slips."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d, 2, dtype=torch.float64)
    angle = pos / 10000 ** (two_i / d)
    sin, cos = torch.sin(angle), torch.cos(angle)
    swapped = torch.stack([cos, sin], -1).reshape(n, d)
    halves = torch.cat([sin, cos], -1)
    col = torch.arange(d, dtype=torch.float64)
    by_column = torch.where(col % 2 == 0, torch.sin(pos / 10000 ** (col / d)),
                            torch.cos(pos / 10000 ** (col / d)))
    degrees = torch.stack([torch.sin(torch.deg2rad(angle)), torch.cos(torch.deg2rad(angle))],
                          -1).reshape(n, d)
    slips = [
        (swapped, "Sine and cosine are swapped: even columns (0, 2, ...) take the sine."),
        (halves, "Your sines all come first, then all cosines. The table interleaves them: "
                 "column 2i is a sine, column 2i+1 the cosine of the same angle."),
        (by_column, "Columns 2i and 2i+1 share one frequency, 10000^(-2i/d): use the even "
                    "index 2i for both, not the column number."),
        (degrees, "The angle is in radians: torch.sin takes radians, no conversion."),
    ]
    for table, why in slips:
        if torch.allclose(out, table, atol=1e-4):
            return why
    return "Column 2i holds sin(pos / 10000^(2i/d)), column 2i+1 the cosine of the same angle."
