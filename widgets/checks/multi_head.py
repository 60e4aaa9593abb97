"""Checks for lesson 5's exercises: head shapes, attention parameters, a head's job,
splitting into heads (code)."""

from __future__ import annotations

import functools
import math

import torch

from course_lib.attention import MultiHeadAttention, causal_mask, scaled_dot_product
from course_lib.interpret import HEAD_PATTERNS, head_pattern_scores, text_windows
from widgets.feedback import (
    Feedback,
    a_function,
    as_int,
    as_ints,
    call_learner,
    exercise,
    right,
    shown,
    wrong,
)


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


# ----- Exercise 4 (code): splitting into heads ------------------------------------------------

SPLIT_CASES = [(2, 5, 12, 3), (1, 4, 8, 2), (3, 6, 32, 4)]  # (B, T, C, n_head)


def _reference_split(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """What MultiHeadAttention.forward does to q, k and v: view, then bring the heads forward."""
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def _with_learner_split(mha: MultiHeadAttention, x: torch.Tensor, split) -> torch.Tensor:
    """mha's forward, with the learner's split for q, k and v (the heads joined back as the
    library joins them), to compare with mha(x) itself."""
    B, T, C = x.shape
    q, k, v = mha.c_attn(x).split(C, dim=-1)
    heads = [split(t, mha.n_head) for t in (q, k, v)]
    y = scaled_dot_product(*heads, causal_mask(T))[0]
    return mha.c_proj(y.transpose(1, 2).reshape(B, T, C))


@exercise(**a_function("split_heads(x, n_head)"))
def check_split_heads(fn: object) -> Feedback:
    """Exercise 4: fn(x, n_head) turns (B, T, C) into (B, n_head, T, C // n_head).

    Exercise text to paste:

    Write `split_heads(x, n_head)`: x has shape (B, T, C); return shape
    (B, n_head, T, C // n_head), where head h holds the features h * C // n_head up to
    (h + 1) * C // n_head of every token, as course_lib's MultiHeadAttention splits q, k and
    v. The check compares your split with the library's on random inputs, then runs a
    MultiHeadAttention with your split in place of its own.

        def split_heads(x, n_head):
            ...  # return a (B, n_head, T, C // n_head) tensor

        check_split_heads(split_heads)

    Solution:

        def split_heads(x, n_head):
            B, T, C = x.shape
            # First cut each token's C features into n_head pieces, then move the head axis
            # before T, so that q @ k.transpose(-2, -1) gives every head its own T x T scores.
            return x.view(B, T, n_head, C // n_head).transpose(1, 2)

        check_split_heads(split_heads)
    """
    g = torch.Generator().manual_seed(5)
    for B, T, C, H in SPLIT_CASES:
        x = torch.randn(B, T, C, generator=g)
        on = f"on x of shape {(B, T, C)} with n_head={H}"
        out, failed = call_learner(
            fn, x.clone(), H, on=on,
            if_none="Your split_heads returns None: return the reshaped tensor.")
        if failed is not None:
            return failed
        if not isinstance(out, torch.Tensor):
            return wrong(f"Return a tensor, got {shown(out)} ({on}).")
        expected = _reference_split(x, H)
        want = tuple(expected.shape)
        if tuple(out.shape) != want:
            if tuple(out.shape) == (B, T, H, C // H):
                return wrong(f"Your shape is {(B, T, H, C // H)}, the one after .view(): now "
                             "bring the head axis before T with .transpose(1, 2).")
            return wrong(f"The shape should be (B, n_head, T, C // n_head) = {want}; yours is "
                         f"{tuple(out.shape)} ({on}).")
        if torch.equal(out, expected):
            continue
        if torch.equal(out.flatten().sort().values, x.flatten().sort().values):
            slips = {
                "You reshaped straight to (B, n_head, T, C // n_head): that cuts the sequence, "
                "not each token's vector. View as (B, T, n_head, C // n_head) first, then "
                "transpose(1, 2).": x.reshape(B, H, T, C // H),
                "Each head takes a contiguous slice of the features: view as "
                "(B, T, n_head, C // n_head), not (B, T, C // n_head, n_head).":
                    x.view(B, T, C // H, H).permute(0, 3, 1, 2),
            }
            why = next((w for w, s in slips.items() if torch.equal(out, s)),
                       "Check your view and transpose against the shapes (B, T, n_head, "
                       "C // n_head), then (B, n_head, T, C // n_head).")
            return wrong(f"The values are x's, but in another order ({on}). {why}")
        return wrong(f"Your values are not x's ({on}): splitting only regroups the numbers, "
                     "it changes none of them.")
    mha = MultiHeadAttention(24, 4)
    x = torch.randn(2, 5, 24, generator=g)
    with torch.no_grad():
        ours, _ = mha(x)
        mine, failed = call_learner(_with_learner_split, mha, x, fn)
    if failed is not None or not torch.allclose(mine, ours, atol=1e-5):
        return wrong("Your split matches on plain tensors, but a MultiHeadAttention using it "
                     "does not give the library's output: does it work for every n_head?")
    return right("Your split equals MultiHeadAttention's: each head gets its own contiguous "
                 "slice of every token's vector, and with the head axis before T one batched "
                 "matmul gives every head its own T x T scores. Plugged into the library's "
                 "attention, it gives the same output.")
