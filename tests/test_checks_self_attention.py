import math

import numpy as np
import torch

from course_lib.attention import causal_mask
from widgets.checks.self_attention import (
    SCORES,
    D,
    T,
    check_causal_mask,
    check_scale,
    check_softmax,
)


def test_check_softmax():
    answer = torch.softmax(torch.tensor(SCORES), -1)
    assert check_softmax(answer)
    assert check_softmax(np.round(answer.numpy(), 3))
    assert check_softmax([round(x, 3) for x in answer.tolist()])
    assert not check_softmax(None)
    assert "sum to" in check_softmax([0.5, 0.5, 0.5]).message
    assert "Exponentiate" in check_softmax([s / sum(SCORES) for s in SCORES]).message
    assert "order" in check_softmax(answer.flip(0)).message
    assert "3 probabilities" in check_softmax([1.0]).message
    assert not check_softmax("abc")


def test_check_causal_mask_agrees_with_course_lib():
    blocked = (~causal_mask(T)).nonzero().tolist()
    assert check_causal_mask([tuple(p) for p in blocked])
    assert check_causal_mask(blocked)
    assert not check_causal_mask(None)
    assert "may see" in check_causal_mask([(k, q) for q, k in blocked]).message
    assert "itself" in check_causal_mask([tuple(p) for p in blocked] + [(0, 0)]).message
    assert not check_causal_mask(blocked[:-1])
    assert not check_causal_mask("nope")


def test_check_scale():
    assert check_scale(math.sqrt(D))
    assert check_scale(torch.tensor(float(D)).sqrt())
    assert not check_scale(None)
    assert "variance" in check_scale(D).message
    assert not check_scale(D / 2)
    assert not check_scale("sixteen")


def _attention(q, k, v, scale=True, mask=True):
    import math

    import torch

    T, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d) if scale else 1)
    if mask:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def test_causal_attention_right_and_the_usual_slips():
    import torch.nn.functional as F

    from widgets.checks.self_attention import check_causal_attention

    assert check_causal_attention(_attention)
    assert check_causal_attention(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert "None" in check_causal_attention(None).message
    no_scale = check_causal_attention(lambda q, k, v: _attention(q, k, v, scale=False))
    assert not no_scale and "forgot the scaling" in no_scale.message
    no_mask = check_causal_attention(lambda q, k, v: _attention(q, k, v, mask=False))
    assert not no_mask and "forgot the causal mask" in no_mask.message
    neither = check_causal_attention(lambda q, k, v: _attention(q, k, v, False, False))
    assert not neither and "Both" in neither.message
    k_t = check_causal_attention(lambda q, k, v: _attention(q, k.T.transpose(-2, -1), v))
    assert not k_t and "k.transpose(-2, -1)" in k_t.message
    assert "shape" in check_causal_attention(lambda q, k, v: v[..., :2, :]).message
