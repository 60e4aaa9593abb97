"""Checks for lesson 7's exercises: cross-attention from lesson 4's pieces, and counting the
cross-attention weights of one decoder layer."""

from __future__ import annotations

import math

import torch

from course_lib.attention import CrossAttention, causal_mask, scaled_dot_product
from widgets.checks.self_attention import attention_output
from widgets.feedback import (
    Feedback,
    a_function,
    as_int,
    call_learner,
    exercise,
    right,
    wrong,
)

# (x's shape (B, T, C), memory's length S): T != S, so keys taken from x cannot pass.
CROSS_SHAPES = [((1, 3, 8), 5), ((2, 6, 16), 4), ((3, 1, 4), 7), ((2, 9, 12), 9)]

# Exercise 2: the shipped translator writes "quatre-vingt-dix-sept" (21 characters, then
# <eos>) for "ninety-seven" (12 characters); it has 4 heads in each decoder layer.
COUNT_SOURCE, COUNT_TARGET, COUNT_HEADS = "ninety-seven", "quatre-vingt-dix-sept", 4


def library_cross_attention(x, memory, w_q, w_k, w_v) -> torch.Tensor:
    """course_lib's CrossAttention with one head, no biases, an identity output projection and
    the weights w_q, w_k, w_v (each (C, C), applied as x @ w)."""
    C = x.shape[-1]
    attn = CrossAttention(C, 1, bias=False)
    with torch.no_grad():
        attn.c_attn.weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
        attn.c_proj.weight.copy_(torch.eye(C))
        return attn(x, memory)[0]


def _cross_variants(x, memory, w_q, w_k, w_v) -> dict[str, torch.Tensor]:
    """The usual slips, each as the output it would give."""
    q, k, v = x @ w_q, memory @ w_k, memory @ w_v
    d = q.shape[-1]
    variants = {
        "You forgot the scaling: divide the scores q @ k^T by sqrt(d).":
            scaled_dot_product(q * math.sqrt(d), k, v)[0],
        "Divide the scores by sqrt(d), not by d.":
            scaled_dot_product(q / math.sqrt(d), k, v)[0],
        "The softmax runs over the keys (the last axis, dim=-1): each query's weights over "
        "the source sum to 1.":
            torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-2) @ v,
        "The values come from memory too, projected by w_v: weights @ (memory @ w_v).":
            scaled_dot_product(q, k, memory)[0],
        "That is self-attention over x. In cross-attention the queries come from x and the "
        "keys and values from memory (the encoder's output): k = memory @ w_k, v = memory @ w_v.":
            scaled_dot_product(q, x @ w_k, x @ w_v)[0],
    }
    if q.shape[-2] == k.shape[-2]:  # only a square map can be masked causally
        variants["Cross-attention has no causal mask: every target position may read the "
                 "whole source, which is all written already."] = \
            scaled_dot_product(q, k, v, causal_mask(q.shape[-2]))[0]
    return variants


@exercise(**a_function("cross_attention(x, memory, w_q, w_k, w_v)"))
def check_cross_attention(fn: object) -> Feedback:
    """Exercise 1: fn(x, memory, w_q, w_k, w_v) -> one head of cross-attention.

    Exercise text to paste:

    Write `cross_attention(x, memory, w_q, w_k, w_v)`: x (B, T, C) is the decoder's side,
    memory (B, S, C) the encoder's output, w_q, w_k, w_v (C, C) projection matrices. Queries
    come from x, keys and values from memory; then lesson 4's softmax(q k^T / sqrt(d)) v.
    Return the output, shape (B, T, C). The check runs it on random shapes against
    `course_lib.attention.CrossAttention` with one head.

        def cross_attention(x, memory, w_q, w_k, w_v):
            ...  # return the output, shape (B, T, C)

        check_cross_attention(cross_attention)

    Solution:

        def cross_attention(x, memory, w_q, w_k, w_v):
            q, k, v = x @ w_q, memory @ w_k, memory @ w_v
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            return torch.softmax(scores, dim=-1) @ v

        check_cross_attention(cross_attention)
    """
    g = torch.Generator().manual_seed(7)
    for (B, T, C), S in CROSS_SHAPES:
        x, memory = torch.randn(B, T, C, generator=g), torch.randn(B, S, C, generator=g)
        w_q, w_k, w_v = (torch.randn(C, C, generator=g) / math.sqrt(C) for _ in range(3))
        on = f"on x of shape {(B, T, C)} and memory of shape {(B, S, C)}"
        out, failed = call_learner(fn, x.clone(), memory.clone(), w_q.clone(), w_k.clone(),
                                   w_v.clone(), on=on)
        if failed is not None:
            return wrong(failed.message + " Queries come from x, keys and values from memory.")
        out, bad = attention_output(out, on)
        if bad is not None:
            return bad
        expected = library_cross_attention(x, memory, w_q, w_k, w_v)
        if tuple(out.shape) != (B, T, C):
            return wrong(f"The output has one vector per target position, shape {(B, T, C)}; "
                         f"yours has {tuple(out.shape)} ({on}). Queries come from x.")
        out = out.detach().float()
        if torch.allclose(out, expected, atol=1e-4):
            continue
        why = next((w for w, variant in _cross_variants(x, memory, w_q, w_k, w_v).items()
                    if variant.shape == out.shape and torch.allclose(out, variant, atol=1e-4)),
                   "Compute q = x @ w_q, k = memory @ w_k, v = memory @ w_v, then "
                   "softmax(q @ k^T / sqrt(d)) @ v.")
        return wrong(f"Your output differs from CrossAttention's by up to "
                     f"{(out - expected).abs().max():.3g} ({on}). {why}")
    return right("Your cross-attention equals course_lib's CrossAttention on every shape tried, "
                 "with target and source of different lengths: each target position mixes the "
                 "source's values, weighted by how well its query matches their keys.")


def cross_weight_count() -> int:
    """Cross-attention weights of one decoder layer while translating ninety-seven."""
    return COUNT_HEADS * (len(COUNT_TARGET) + 1) * len(COUNT_SOURCE)


@exercise(read=as_int, expect="a whole number, like 1234")
def check_cross_weight_count(answer: int) -> Feedback:
    """Exercise 2: the numbers one decoder layer's cross-attention computes for one translation."""
    S, T, H = len(COUNT_SOURCE), len(COUNT_TARGET) + 1, COUNT_HEADS
    expected = cross_weight_count()
    if answer == expected:
        return right(f"{expected:,} = {H} heads x {T} steps (21 characters and <eos>) x {S} "
                     "source characters: each step's row over the source sums to 1, in every "
                     "head. The source is never re-read from scratch, only these weights.")
    if answer == H * (T - 1) * S:
        return wrong("Close: the decoder also takes a step to write <eos>, one more row.")
    if answer == T * S or answer == (T - 1) * S:
        return wrong(f"That is one head's map. Each of the {H} heads has its own.")
    if answer in (H * T * T, H * S * S, H * (T - 1) ** 2):
        return wrong("Cross-attention maps are not square: rows are target steps, columns "
                     "source characters.")
    if answer in (2 * expected, 2 * H * (T - 1) * S):
        return wrong("That counts both decoder layers; the question asks about one.")
    return wrong(f"Not {answer:,}. Count the rows (one per character written, and <eos>), "
                 f"the columns (one per source character) and the heads ({H}).")
