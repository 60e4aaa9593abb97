"""Checks for lesson 10's exercises: counting LoRA parameters, merging, the break-even rank,
the LoRA forward pass (code)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from course_lib.lora import LoRALinear, lora_parameter_count, lora_target_layers
from widgets.checks import shipped
from widgets.feedback import (
    A_NUMBER,
    A_WHOLE_NUMBER,
    Feedback,
    a_function,
    exercise,
    learner_tensor,
    right,
    wrong,
)

COUNT_RANK = 8
COUNT_TARGETS = ("attn.c_attn", "mlp.c_fc")
BREAK_EVEN_TARGET = "attn.c_attn"


@exercise("Replace None with your count, a whole number.", **A_WHOLE_NUMBER)
def check_lora_count(answer: int, model: nn.Module | None = None) -> Feedback:
    """Exercise 1: trainable parameters of rank-8 LoRA on every attn.c_attn and mlp.c_fc."""
    model = model if model is not None else shipped()[0]
    expected = lora_parameter_count(model, COUNT_RANK, COUNT_TARGETS)
    if answer == expected:
        return right(
            f"{expected:,}: each wrapped layer adds A (r x in) and B (out x r), "
            f"r (in + out) parameters, summed over both kinds of layer in every block."
        )
    per_kind = {t: lora_parameter_count(model, COUNT_RANK, (t,)) for t in COUNT_TARGETS}
    n_blocks = len(lora_target_layers(model, (COUNT_TARGETS[0],)))
    full = sum(m.weight.numel() for m in lora_target_layers(model, COUNT_TARGETS).values())
    if answer in per_kind.values():
        return wrong("That counts one kind of layer only: add both attn.c_attn and mlp.c_fc.")
    if n_blocks > 1 and answer * n_blocks == expected:
        return wrong(f"That is one block's worth: the model has {n_blocks} blocks.")
    if answer == full:
        return wrong("That is the size of the full weight matrices, what full fine-tuning of "
                     "these layers trains. LoRA trains only A and B.")
    if answer == expected // 2:
        return wrong("Half the answer: did you count only A (or only B) in each layer?")
    return wrong(
        f"Not {answer:,}. Per layer it is r * (in_features + out_features); look up each "
        "layer's shape (model.transformer.h[0].attn.c_attn) and sum over all wrapped layers."
    )


@exercise(**a_function("merge(W, A, B, alpha, rank)"))
def check_merge(merge: object) -> Feedback:
    """Exercise 2: merge(W, A, B, alpha, rank) must return W + (alpha / rank) * B @ A."""
    g = torch.Generator().manual_seed(0)
    base = nn.Linear(12, 10, bias=False)
    rank, alpha = 3, 6.0
    layer = LoRALinear(base, rank=rank, alpha=alpha)
    with torch.no_grad():
        base.weight.copy_(torch.randn(10, 12, generator=g))
        layer.lora_A.copy_(torch.randn(rank, 12, generator=g))
        layer.lora_B.copy_(torch.randn(10, rank, generator=g))  # nonzero, as after training
    W, A, B = (t.detach().clone() for t in (base.weight, layer.lora_A, layer.lora_B))
    out, failed = learner_tensor(
        merge, W.clone(), A.clone(), B.clone(), alpha, rank, on="", what="the merged weight",
        if_none="Your merge returns None: replace the None in its body with the merged weight.")
    if failed is not None:
        fit = " B @ A is (out x r) @ (r x in); A @ B does not fit."
        return wrong(failed.message + (fit if "shape" in failed.message else ""))
    if out.shape != W.shape:
        return wrong(f"The merged weight must have W's shape {tuple(W.shape)}, "
                     f"got {tuple(out.shape)}.")
    out = out.detach().to("cpu", W.dtype)  # float64 or a GPU tensor is fine too
    expected = layer.merged().weight.detach()
    close = functools.partial(torch.allclose, atol=1e-5)
    if close(out, expected):
        x = torch.randn(4, 12, generator=g)
        same = torch.allclose(x @ out.T, layer(x).detach(), atol=1e-5)
        return right("W + (alpha / rank) B A: a plain layer with that weight computes exactly "
                     f"what the LoRA layer does (checked on inputs: {same}).")
    if close(out, W + B @ A):
        return wrong("Close: you left out the scaling. LoRA multiplies B A by alpha / rank.")
    if close(out, W + (rank / alpha) * B @ A):
        return wrong("The scale is upside down: it is alpha / rank, not rank / alpha.")
    if close(out, (alpha / rank) * B @ A):
        return wrong("That is the update dW alone: the merged weight is W + dW.")
    if close(out, W):
        return wrong("That is W unchanged: add the update (alpha / rank) * B @ A.")
    return wrong("Not the merged weight. It is W + (alpha / rank) * (B @ A).")


@exercise("Replace None with the rank (a number).", **A_NUMBER)
def check_break_even_rank(answer: float, model: nn.Module | None = None) -> Feedback:
    """Exercise 3: the rank at which LoRA on attn.c_attn trains as many parameters as W."""
    model = model if model is not None else shipped()[0]
    layer = next(iter(lora_target_layers(model, (BREAK_EVEN_TARGET,)).values()))
    d_in, d_out = layer.in_features, layer.out_features
    expected = d_in * d_out / (d_in + d_out)
    if abs(answer - expected) < 0.5:
        return right(
            f"r (in + out) = in x out gives r = in x out / (in + out) = {d_in} x {d_out} / "
            f"{d_in + d_out} = {expected:g}. LoRA saves parameters only for ranks well below it."
        )
    if abs(answer - min(d_in, d_out) / 2) < 0.5:
        return wrong("That is the break-even of a square layer; c_attn is not square "
                     f"({d_in} in, {d_out} out).")
    if answer in (d_in, d_out, min(d_in, d_out)):
        return wrong(f"At rank {answer:g}, LoRA trains r (in + out) = "
                     f"{int(answer) * (d_in + d_out):,}, "
                     f"more than W's {d_in * d_out:,}. Solve r (in + out) = in x out.")
    return wrong(f"Not {answer:g}. Solve r (in + out) = in x out for c_attn "
                 "(the view shows where the two lines cross).")



# ----- Exercise 4 (code): the LoRA forward pass -----------------------------------------------


def _lora_layer(g: torch.Generator, d_in: int, d_out: int, rank: int, alpha: float) -> LoRALinear:
    """A LoRALinear with random W, A and a nonzero B, as after some training."""
    layer = LoRALinear(nn.Linear(d_in, d_out, bias=False), rank=rank, alpha=alpha)
    with torch.no_grad():
        layer.base.weight.copy_(torch.randn(d_out, d_in, generator=g))
        layer.lora_A.copy_(torch.randn(rank, d_in, generator=g))
        layer.lora_B.copy_(torch.randn(d_out, rank, generator=g))
    return layer


@exercise(**a_function("lora_forward(x, W, A, B, alpha, rank)"))
def check_lora_forward(fn: object) -> Feedback:
    """Exercise 4: fn(x, W, A, B, alpha, rank) = x W^T + (alpha / rank) x A^T B^T.

    Exercise text to paste:

    Write `lora_forward(x, W, A, B, alpha, rank)`, what a LoRA layer computes: the frozen
    layer's output x W^T plus the low-rank path x A^T B^T scaled by alpha / rank. W is
    (out, in), A is (rank, in), B is (out, rank), and x is (..., in). The check compares it
    with `course_lib.lora.LoRALinear`'s forward pass, on the same weights.

        def lora_forward(x, W, A, B, alpha, rank):
            ...  # return a (..., out) tensor

        check_lora_forward(lora_forward)

    Solution:

        def lora_forward(x, W, A, B, alpha, rank):
            # x @ A.T is only rank numbers per token: the update never builds an out x in matrix.
            return x @ W.T + (alpha / rank) * (x @ A.T @ B.T)

        check_lora_forward(lora_forward)
    """
    g = torch.Generator().manual_seed(9)
    for x_shape, d_out, rank, alpha in (((4, 12), 10, 3, 6.0), ((2, 5, 12), 7, 2, 16.0)):
        layer = _lora_layer(g, x_shape[-1], d_out, rank, alpha)
        x = torch.randn(x_shape, generator=g)
        W, A, B = (t.detach().clone() for t in (layer.base.weight, layer.lora_A, layer.lora_B))
        on = f"on x of shape {x_shape}, rank {rank}, alpha {alpha:g}"
        out, failed = learner_tensor(
            fn, x.clone(), W.clone(), A.clone(), B.clone(), alpha, rank, on=on,
            what="the layer's output",
            if_none="Your lora_forward returns None: return the layer's output.")
        if failed is not None:
            fit = (" W is (out, in), A (rank, in), B (out, rank): x @ W.T, then x @ A.T @ B.T."
                   if "shape" in failed.message or "size" in failed.message else "")
            return wrong(failed.message + fit)
        with torch.no_grad():
            expected = layer(x)
        if out.shape != expected.shape:
            return wrong(f"The output has shape {tuple(expected.shape)}, x's with the last "
                         f"axis turned into out = {d_out} features; yours has "
                         f"{tuple(out.shape)} ({on}).")
        out = out.detach().to("cpu", torch.float32)
        close = functools.partial(torch.allclose, out, atol=1e-4, rtol=1e-4)
        if close(expected):
            continue
        base, low = x @ W.T, x @ A.T @ B.T
        slips = [
            (base + low, "You left out the scaling: multiply the low-rank path by alpha / rank."),
            (base + (rank / alpha) * low, "The scale is upside down: alpha / rank."),
            ((alpha / rank) * low, "That is the low-rank path alone: add the frozen layer's "
                                   "x @ W.T."),
            (base, "That is the frozen layer alone: add (alpha / rank) * x @ A.T @ B.T."),
            (base + alpha * low, "Divide alpha by the rank: the scale is alpha / rank."),
        ]
        why = next((w for slip, w in slips if close(slip)),
                   "Compute x @ W.T + (alpha / rank) * (x @ A.T @ B.T).")
        return wrong(f"Your output differs from LoRALinear's by up to "
                     f"{(out - expected).abs().max():.3g} ({on}). {why}")
    return right("Your lora_forward equals LoRALinear's forward: the frozen W plus a detour "
                 "through rank numbers per token, scaled by alpha / rank. Merging W + "
                 "(alpha / rank) B A would give the same outputs with no extra work.")
