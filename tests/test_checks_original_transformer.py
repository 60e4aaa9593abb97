import math

import torch

from widgets.checks.original_transformer import (
    check_cross_attention,
    check_cross_weight_count,
    cross_weight_count,
)


def cross_attention(x, memory, w_q, w_k, w_v):
    q, k, v = x @ w_q, memory @ w_k, memory @ w_v
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v


def test_cross_attention_right_and_the_usual_slips():
    assert check_cross_attention(cross_attention)
    assert check_cross_attention(lambda *a: (cross_attention(*a), None))

    def unscaled(x, m, wq, wk, wv):
        return torch.softmax((x @ wq) @ (m @ wk).transpose(-2, -1), -1) @ (m @ wv)

    def wrong_axis(x, m, wq, wk, wv):
        s = (x @ wq) @ (m @ wk).transpose(-2, -1) / math.sqrt(x.shape[-1])
        return torch.softmax(s, dim=-2) @ (m @ wv)

    def keys_from_x(x, m, wq, wk, wv):
        return cross_attention(x, x, wq, wk, wv)

    def raw_values(x, m, wq, wk, wv):
        s = (x @ wq) @ (m @ wk).transpose(-2, -1) / math.sqrt(x.shape[-1])
        return torch.softmax(s, -1) @ m

    assert "scaling" in check_cross_attention(unscaled).message
    assert "over the keys" in check_cross_attention(wrong_axis).message
    assert "keys and values from memory" in check_cross_attention(keys_from_x).message
    assert "values come from memory" in check_cross_attention(raw_values).message
    assert "None" in check_cross_attention(lambda *a: None).message
    assert not check_cross_attention(lambda *a: "junk")


def test_cross_weight_count():
    assert cross_weight_count() == 4 * 22 * 12
    assert check_cross_weight_count(1056)
    assert "eos" in check_cross_weight_count(4 * 21 * 12).message
    assert "one head" in check_cross_weight_count(22 * 12).message
    assert "not square" in check_cross_weight_count(4 * 22 * 22).message
    assert "both decoder layers" in check_cross_weight_count(2112).message
    assert not check_cross_weight_count(7)
