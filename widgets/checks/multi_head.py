"""Checks for lesson 5's exercises: head shapes, attention parameters, a head's job."""

from __future__ import annotations

import functools
import math

import torch

from course_lib.attention import MultiHeadAttention
from course_lib.interpret import HEAD_PATTERNS, head_pattern_scores, text_windows
from widgets.feedback import Feedback, as_int, as_ints, exercise, right, shown, wrong


def _as_shape(answer) -> tuple[int, ...] | None:
    if not isinstance(answer, (tuple, list, torch.Size)):
        return None  # a tensor's shape, not the tensor, is the answer
    shape = as_ints(answer)
    return None if shape is None or len(shape) > 8 else tuple(shape)


@exercise()
def check_split_shape(
    answer, batch: int = 2, T: int = 10, n_embd: int = 192, n_head: int = 6
) -> Feedback:
    """The shape of q (batch, T, n_embd) after splitting it into n_head heads for attention."""
    shape = _as_shape(answer)
    if shape is None:
        return wrong(f"Give the shape as a tuple of ints, like (1, 2, 3); got {shown(answer)}.")
    d = n_embd // n_head
    if shape == (batch, n_head, T, d):
        return right(
            f"({batch}, {n_head}, {T}, {d}): each of the {n_head} heads gets its own "
            f"{T} x {d} slice, and the head axis sits before T so that one batched matmul "
            f"gives every head its own {T} x {T} scores."
        )
    if shape == (batch, T, n_head, d):
        return wrong(
            "That is the shape after .view(), before .transpose(1, 2). The matmul works on the "
            "last two axes, so T and the head size must be last."
        )
    if len(shape) == 4 and shape[-1] == n_embd:
        return wrong(f"Each head gets n_embd / n_head = {n_embd} / {n_head} dimensions, not all "
                     f"{n_embd}: the heads split the vector between them.")
    if shape == (batch * n_head, T, d):
        return wrong("That is how torch.nn.MultiheadAttention stores it inside (batch and heads "
                     "folded together); here the heads keep their own axis.")
    if len(shape) != 4:
        return wrong(f"After splitting there are 4 axes: batch, head, time, head size; your shape "
                     f"has {len(shape)}.")
    return wrong(f"{shape} holds {math.prod(shape)} numbers but q holds {batch * T * n_embd}, "
                 "or the axes are in another order: splitting only regroups the numbers.")


@exercise(read=as_int, expect="a whole number, like 1234")
def check_attention_parameters(answer: int, n_embd: int = 768, n_head: int = 12) -> Feedback:
    """Parameters of one attention block (qkv and output projections, with biases)."""
    block = MultiHeadAttention(n_embd, n_head, bias=True)
    expected = sum(p.numel() for p in block.parameters())  # counted, not trusted to a formula
    C = n_embd
    if answer == expected:
        return right(
            f"{expected:,} = 4 x {C}² weights + 4 x {C} biases: three {C} x {C} matrices for "
            f"q, k, v and one for the output. The number of heads does not appear: splitting "
            f"into {n_head} heads only regroups the same numbers."
        )
    if answer == 4 * C * C:
        return wrong(f"Close: that is the weights only. Each of the four projections also has a "
                     f"bias of {C} numbers.")
    if answer in (3 * C * C + 3 * C, 3 * C * C):
        return wrong("That counts q, k and v. The output projection after the heads are joined "
                     "back together is a fourth C x C matrix.")
    if answer % n_head == 0 and answer // n_head in (expected, 4 * C * C):
        return wrong(f"The heads share the projections: q, k and v are computed once for all "
                     f"{n_head} heads and then cut into slices, so there is no factor {n_head}.")
    return wrong(f"Not {answer:,}. Count the four projections: each maps {C} numbers to {C} "
                 f"and has a weight matrix and a bias.")


@functools.cache
def _scores(
    model, tokenizer, text_key: str, pattern: str, n_windows: int
) -> tuple[torch.Tensor, float]:
    from course_lib.data import load_corpus

    text = load_corpus("val") if text_key == "val" else text_key
    windows = text_windows(tokenizer, text, model.config.block_size, n_windows)
    return head_pattern_scores(model, tokenizer, windows)[pattern]


def check_pattern_head(
    answer, model, tokenizer, pattern: str = "previous token", text: str = "val",
    n_windows: int = 8,
) -> Feedback:
    """Which (layer, head) of `model` puts the most attention on `pattern` (HEAD_PATTERNS).

    Measured like lesson 5: on text_windows(tokenizer, text, block_size, n_windows), where
    text "val" means the validation plays.
    """
    if pattern not in HEAD_PATTERNS:
        raise ValueError(f"pattern must be one of {HEAD_PATTERNS}, got {pattern!r}")
    return _check_head(answer, model, tokenizer, pattern, text, n_windows)


@exercise()
def _check_head(answer, model, tokenizer, pattern: str, text: str, n_windows: int) -> Feedback:
    n_layer, n_head = model.config.n_layer, model.config.n_head
    pair = _as_shape(answer)
    if pair is None or len(pair) != 2:
        return wrong(f"Give (layer, head) as a tuple of two ints, like (0, 3); "
                     f"got {shown(answer)}.")
    layer, head = pair
    if not (0 <= layer < n_layer and 0 <= head < n_head):
        return wrong(f"Layers are numbered 0 to {n_layer - 1} and heads 0 to {n_head - 1}; "
                     f"got layer {layer}, head {head}.")
    scores, baseline = _scores(model, tokenizer, text, pattern, n_windows)
    best = int(scores.argmax())
    mine, top = scores[layer, head].item(), scores.max().item()
    even = f"(spreading its attention evenly, a head would put {baseline:.0%} there)"
    if layer * n_head + head == best:
        return right(f"Layer {layer}, head {head} puts {mine:.0%} of its attention on the "
                     f"{pattern}, on average over {n_windows} windows of text: more than any "
                     f"other head {even}.")
    return wrong(f"Layer {layer}, head {head} puts {mine:.0%} of its attention on the {pattern} "
                 f"on average; one head puts {top:.0%} {even}. Measure every head over the "
                 f"same windows, then take the largest.")
