import torch
import torch.nn.functional as F

from course_lib.interpret import logit_lens
from widgets.checks import shipped
from widgets.checks.transformer_block import (
    LENS_TEXT,
    LENS_TOKEN,
    check_block_parameters,
    check_layer_norm,
    check_lens_block,
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
