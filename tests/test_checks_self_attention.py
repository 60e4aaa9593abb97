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
