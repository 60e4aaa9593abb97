import inspect
import math
import textwrap

import pytest
import torch
import torch.nn.functional as F

from course_lib.interpret import logit_lens
from course_lib.model import GPT, GPTConfig
from widgets.checks import shipped
from widgets.checks.transformer_block import (
    GPT_TOLERANCE,
    LENS_TEXT,
    LENS_TOKEN,
    batch_of,
    check_block_parameters,
    check_gpt_forward,
    check_layer_norm,
    check_lens_block,
    weights_of,
)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def test_layer_norm_right_and_the_usual_slips():
    assert check_layer_norm(layer_norm)
    assert check_layer_norm(lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], w, b, eps))

    def unbiased(x, w, b, eps):
        m = x.mean(-1, keepdim=True)
        return (x - m) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b

    def eps_outside(x, w, b, eps):
        m = x.mean(-1, keepdim=True)
        return (x - m) / (x.std(-1, keepdim=True, unbiased=False) + eps) * w + b

    def no_affine(x, w, b, eps):
        return F.layer_norm(x, x.shape[-1:], eps=eps)

    def no_keepdim(x, w, b, eps):
        return (x - x.mean(-1)) * w + b

    def in_place(x, w, b, eps):
        return layer_norm(x.sub_(0.5), w, b, eps)

    def flattened(x, w, b, eps):
        return layer_norm(x, w, b, eps).reshape(-1)

    assert "unbiased" in check_layer_norm(unbiased).message
    assert "inside the square root" in check_layer_norm(eps_outside).message
    assert "weight and shifted by bias" in check_layer_norm(no_affine).message
    assert "raised RuntimeError" in check_layer_norm(no_keepdim).message
    assert "in place" in check_layer_norm(in_place).message
    assert "keeps the shape" in check_layer_norm(flattened).message
    assert "returns None" in check_layer_norm(lambda x, w, b, eps: None).message
    assert "return a tensor" in check_layer_norm(lambda x, w, b, eps: x.tolist()).message
    assert "Give a function" in check_layer_norm(3).message
    assert "Replace None" in check_layer_norm(None).message


def test_block_parameters():
    C = 768
    assert check_block_parameters(12 * C * C + 13 * C)  # 7,087,872
    assert check_block_parameters(torch.tensor(12 * 192 * 192 + 13 * 192), n_embd=192)
    assert "LayerNorms" in check_block_parameters(12 * C * C + 9 * C).message
    assert "weight matrices only" in check_block_parameters(12 * C * C).message
    assert "attention part" in check_block_parameters(4 * C * C + 4 * C).message
    assert "widens to 4" in check_block_parameters(6 * C * C + 10 * C).message
    assert not check_block_parameters(7_000_000)
    assert check_block_parameters(7087872.0)  # the right count as a float is right
    assert "whole number" in check_block_parameters(7087872.5).message
    assert "whole number" in check_block_parameters("7087872").message


def test_lens_block_on_the_shipped_model():
    model, tokenizer = shipped()
    (token,) = tokenizer.encode(LENS_TOKEN)
    top = logit_lens(model, tokenizer.encode(LENS_TEXT)).argmax(-1)[1:]  # after each block
    first = [b for b in range(model.config.n_layer) if int(top[b]) == token][0]
    assert check_lens_block(first)
    for other in range(model.config.n_layer):
        if other != first:
            assert not check_lens_block(other)
    if first > 0:
        assert "number" in check_lens_block(first - 1).message  # its rank there
    assert "numbered 0 to" in check_lens_block(model.config.n_layer).message
    assert "block number" in check_lens_block("three").message


# ----- exercise 4: the whole GPT ----------------------------------------------------------------

def gpt_solution(replace: tuple[str, str] | None = None) -> dict:
    """The worked solution of check_gpt_forward's docstring, run (with one slip put in)."""
    code = textwrap.dedent(inspect.getdoc(check_gpt_forward).split("Solution:")[1])
    code = code.replace("\ncheck_gpt_forward(gpt_forward)", "")
    if replace is not None:
        assert replace[0] in code, replace[0]
        code = code.replace(*replace)
    names = {"torch": torch, "math": math}
    exec(code, names)
    return names


def test_gpt_forward_solution_equals_the_shipped_model():
    model, tokenizer = shipped()
    solution = gpt_solution()
    fb = check_gpt_forward(solution["gpt_forward"])
    assert fb.ok, fb.message
    idx = batch_of(tokenizer)
    with torch.no_grad():
        mine = solution["gpt_forward"](weights_of(model), idx, model.config)
        assert (mine - model(idx)[0]).abs().max() < GPT_TOLERANCE
    # and on another GPT-2-shaped model, with other widths and heads
    torch.manual_seed(3)
    other = GPT(GPTConfig(vocab_size=model.config.vocab_size, block_size=32, n_layer=2,
                          n_head=3, n_embd=48))
    assert check_gpt_forward(solution["gpt_forward"], other, tokenizer)


# (the slip, a phrase of the message that names the stage it breaks)
GPT_SLIPS = {
    "no final norm": (('x = layer_norm(x, w["transformer.ln_f.weight"]',
                       'x = 0 * x + x  # layer_norm(x, w["transformer.ln_f.weight"]'),
                      "the final norm"),
    "positions off by one": (('w["transformer.wpe.weight"][:T]',
                              'w["transformer.wpe.weight"][1 : T + 1]'),
                             "rows 1 to T"),
    "no positions": ((' + w["transformer.wpe.weight"][:T]', ""), "the positions"),
    "no residual around attention": (("x = x + (heads @", "x = (heads @"),
                                      "block 0: its attention is right"),
    "no residual around the MLP": (("x = x + (h @", "x = (h @"),
                                   "block 0: its MLP is right"),
    "exact GELU": (("h = gelu(h @", "h = torch.nn.functional.gelu(h @"),
                   "block 0's MLP"),
    "no causal mask": (('masked_fill(~allowed, float("-inf"))', "masked_fill(~allowed, 0.0)"),
                       "block 0's attention"),
    "ln_1 without its gain": (('layer_norm(x, w[p + "ln_1.weight"]', "layer_norm(x, 1.0"),
                              "block 0's norm ln_1"),
    "a shifted head": (('return x @ w["transformer.wte.weight"].T',
                        'return (x + 0.01) @ w["transformer.wte.weight"].T'), "the head"),
    "softmax returned": (('return x @ w["transformer.wte.weight"].T',
                          'return torch.softmax(x @ w["transformer.wte.weight"].T, -1)'),
                         "returns something else"),
    "token rows": (('w["transformer.wte.weight"][idx]', 'w["transformer.wte.weight"][idx + 1]'),
                   "the token embeddings"),
}


@pytest.mark.parametrize("slip", GPT_SLIPS)
def test_gpt_forward_names_the_first_stage_that_differs(slip):
    replace, phrase = GPT_SLIPS[slip]
    fb = check_gpt_forward(gpt_solution(replace)["gpt_forward"])
    assert not fb.ok and phrase in fb.message, fb.message
    if slip == "no final norm":
        assert "left out the final norm" in fb.message


def test_gpt_forward_wrong_forms():
    assert "returns None" in check_gpt_forward(lambda w, idx, config: None).message
    fb = check_gpt_forward(lambda w, idx, config: w["transformer.wte.weight"][idx][0])
    assert "shape (B, T, vocab_size)" in fb.message
    fb = check_gpt_forward(lambda w, idx, config: w["lm_head.weight"])
    assert "raised KeyError" in fb.message
    assert "Give a function" in check_gpt_forward(3).message or \
        "a function (def gpt_forward" in check_gpt_forward(3).message
    assert "Replace None" in check_gpt_forward(None).message
