"""Checks for lesson 6's exercises: LayerNorm from scratch, a block's parameters, the logit lens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_lib.interpret import logit_lens
from course_lib.model import Block, GPTConfig
from widgets.checks import shipped
from widgets.feedback import Feedback, as_int, call_learner, exercise, right, shown, wrong

LENS_TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\n"
             "It is the east, and Juliet is the")
LENS_TOKEN = " sun"


def _trials() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """Random inputs for a layer_norm: odd shapes, far-from-zero means, gains and shifts."""
    g = torch.Generator().manual_seed(6)
    trials = []
    for shape, eps in (((2, 5, 8), 1e-5), ((3, 16), 1e-6), ((7,), 0.1), ((4, 3, 2, 32), 1e-5)):
        C = shape[-1]
        x = torch.randn(shape, generator=g) * 3 + 5
        weight = torch.rand(C, generator=g) + 0.5
        bias = torch.randn(C, generator=g)
        trials.append((x, weight, bias, eps))
    # A row with almost no spread: where eps, and where it goes, matters.
    x = 2 + 1e-3 * torch.randn(2, 6, generator=g)
    trials.append((x, torch.ones(6), torch.zeros(6), 1e-2))
    return trials


def _diagnose(fn, x, weight, bias, eps) -> str:
    """Why a learner's layer_norm differs: compare it with the usual slips."""
    mean = x.mean(-1, keepdim=True)
    slips = {
        "It looks like you divided by the unbiased standard deviation (n - 1). LayerNorm uses "
        "the plain variance over the last axis: x.var(-1, unbiased=False), or "
        "((x - mean) ** 2).mean(-1).":
            (x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + eps) * weight + bias,
        "eps belongs inside the square root: (x - mean) / sqrt(var + eps), as torch does.":
            (x - mean) / (x.var(-1, keepdim=True, unbiased=False).sqrt() + eps) * weight + bias,
        "The normalised x must still be scaled by weight and shifted by bias, one per feature.":
            F.layer_norm(x, x.shape[-1:], None, None, eps),
    }
    result, _ = call_learner(fn, x.clone(), weight.clone(), bias.clone(), eps)
    for why, slip in slips.items():
        if isinstance(result, torch.Tensor) and result.shape == slip.shape and torch.allclose(
                result.float(), slip, atol=1e-4, rtol=1e-4):
            return why
    return ("Normalise each token's vector over its last axis: subtract its mean, divide by "
            "sqrt(variance + eps), then multiply by weight and add bias.")


@exercise()
def check_layer_norm(layer_norm) -> Feedback:
    """A learner's layer_norm(x, weight, bias, eps), run on random inputs against torch's."""
    for x, weight, bias, eps in _trials():
        before = x.clone()
        result, failed = call_learner(
            layer_norm, x, weight, bias, eps,
            if_none="Your layer_norm returns None: write its body so that it returns the "
                    "normalised tensor, then run the cell again.")
        if failed is not None:
            return failed
        if not isinstance(result, torch.Tensor) or not result.is_floating_point():
            return wrong(f"layer_norm should return a tensor (of floats), got {shown(result)}.")
        if not torch.equal(x, before):
            return wrong("Your function changed its input x in place; compute a new tensor.")
        expected = F.layer_norm(x, x.shape[-1:], weight, bias, eps)
        if result.shape != expected.shape:
            return wrong(f"For x of shape {tuple(x.shape)} the result has shape "
                         f"{tuple(result.shape)}; LayerNorm keeps the shape. Did you forget "
                         "keepdim=True on the mean or the variance?")
        if not torch.allclose(result.float(), expected, atol=1e-4, rtol=1e-4):
            return wrong(f"On x of shape {tuple(x.shape)} (eps={eps}) your result differs from "
                         f"torch's by up to {(result.float() - expected).abs().max():.3g}. "
                         + _diagnose(layer_norm, x, weight, bias, eps))
    ln = torch.nn.LayerNorm(32, eps=1e-5)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
    x = torch.randn(2, 4, 32)
    with torch.no_grad():
        result, failed = call_learner(layer_norm, x, ln.weight, ln.bias, ln.eps)
    if failed is not None:
        return failed
    if not (isinstance(result, torch.Tensor) and torch.allclose(result.float(), ln(x),
                                                                 atol=1e-4)):
        return wrong("Your function agrees with F.layer_norm but not with nn.LayerNorm's own "
                     "weight and bias: does it read them as given?")
    return right("Your layer_norm equals torch's on every input tried, among them a row with "
                 "almost no spread, where eps inside the square root keeps the division tame.")


def block_parameters(n_embd: int, n_head: int = 12) -> int:
    """Parameters of one GPT-2 block of width n_embd, counted on a real course_lib Block."""
    block = Block(GPTConfig(n_embd=n_embd, n_head=n_head, block_size=8, vocab_size=8))
    return sum(p.numel() for p in block.parameters())


@exercise(read=as_int, expect="a whole number, like 1234")
def check_block_parameters(answer: int, n_embd: int = 768) -> Feedback:
    """Parameters of one GPT-2 block (two LayerNorms, attention, a 4x MLP, all with biases)."""
    C = n_embd
    expected = block_parameters(C)
    attention, mlp, norms = 4 * C * C + 4 * C, 8 * C * C + 5 * C, 4 * C
    if answer == expected:
        return right(f"{expected:,} = attention {attention:,} + MLP {mlp:,} + two LayerNorms "
                     f"{norms:,}: 12 x {C}² weights and 13 x {C} biases and gains. The MLP "
                     "holds two thirds of the block.")
    if answer == attention + mlp:
        return wrong(f"Close: you left out the two LayerNorms, each with a gain and a shift of "
                     f"{C} numbers ({norms:,} in all).")
    if answer == 12 * C * C:
        return wrong("That is the weight matrices only. Every linear layer has a bias, and each "
                     "LayerNorm a gain and a shift.")
    if answer == attention or answer == attention + norms:
        return wrong(f"That is the attention part. The MLP is bigger: {C} -> {4 * C} -> {C}, "
                     "two matrices with their biases.")
    if answer == 4 * C * C + 4 * C + 2 * C * C + 2 * C + norms:
        return wrong(f"The MLP widens to 4 x {C} = {4 * C}, not {C}: each of its two matrices "
                     f"is {C} x {4 * C}.")
    return wrong(f"Not {answer:,}. Add up the attention (four {C} x {C} matrices with biases), "
                 f"the MLP ({C} x {4 * C} and {4 * C} x {C}, with biases) and two LayerNorms.")


@exercise(read=as_int, expect="a block number, a whole number like 0")
def check_lens_block(
    answer: int, model=None, tokenizer=None, text: str = LENS_TEXT, token: str = LENS_TOKEN
) -> Feedback:
    """After which block (numbered from 0) does the logit lens first rank `token` top?"""
    model, tokenizer = shipped(model, tokenizer)
    n_layer = model.config.n_layer
    if not 0 <= answer < n_layer:
        return wrong(f"The blocks are numbered 0 to {n_layer - 1}, as on the explorer's block "
                     f"slider; got {answer}.")
    (token_id,) = tokenizer.encode(token)
    lens = logit_lens(model, tokenizer.encode(text))
    top = lens.argmax(-1)
    firsts = [b for b in range(n_layer) if int(top[b + 1]) == token_id]
    if not firsts:
        raise ValueError(f"the lens never ranks {token!r} top on this text")
    first = firsts[0]
    p = lens[answer + 1, token_id].item()
    if answer == first:
        before = f"block {first - 1}" if first else "the embeddings"
        return right(f"After block {first}, {token!r} is the most likely next token for the "
                     f"first time ({p:.1%}); after {before} it was not. The lens shows the "
                     "prediction forming as the blocks write into the stream.")
    if answer == first + 1:
        return wrong(f"Blocks are numbered from 0: block {answer} is the {answer + 1}th. Row "
                     f"{answer + 1} of logit_lens (row 0 is the embeddings) is the stream after "
                     f"block {answer}.")
    if int(top[answer + 1]) != token_id:
        rank = int((lens[answer + 1] > lens[answer + 1, token_id]).sum()) + 1
        return wrong(f"After block {answer} the lens ranks {token!r} number {rank} "
                     f"({p:.1%}), not first.")
    return wrong(f"After block {answer} {token!r} is indeed top, but it is top earlier "
                 "already: find the first block.")
