import math

import torch
import torch.nn.functional as F

from widgets.checks.assistant import check_dpo_by_hand, check_dpo_loss, check_masked_targets


def test_masked_targets_right_and_wrong():
    def right(prompt, answer):
        ids = prompt + answer
        return ids[:-1], [-1] * (len(prompt) - 1) + answer

    assert check_masked_targets(right)
    assert check_masked_targets(lambda p, a: tuple(torch.tensor(v) for v in right(p, a)))
    assert "None" in check_masked_targets(None).message
    assert "function" in check_masked_targets(3).message
    assert "None" in check_masked_targets(lambda p, a: None).message
    assert "masked" in check_masked_targets(lambda p, a: ((p + a)[:-1], (p + a)[1:])).message
    too_many = check_masked_targets(lambda p, a: ((p + a)[:-1], [-1] * len(p) + a[1:]))
    assert not too_many and "too many" in too_many.message
    assert "last token" in check_masked_targets(lambda p, a: (p + a, right(p, a)[1])).message
    assert not check_masked_targets(lambda p, a: right(p, a)[0])
    assert "raised" in check_masked_targets(lambda p, a: 1 / 0).message


def test_dpo_loss_right_and_wrong():
    def right(pc, pr, rc, rr, beta):
        return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()

    assert check_dpo_loss(right)
    assert check_dpo_loss(lambda *a: right(*a).item())
    assert "None" in check_dpo_loss(None).message
    assert "sign" in check_dpo_loss(
        lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean()).message
    assert "reference" in check_dpo_loss(
        lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean()).message
    assert "beta" in check_dpo_loss(
        lambda pc, pr, rc, rr, b: -F.logsigmoid((pc - rc) - (pr - rr)).mean()).message
    assert "sum" in check_dpo_loss(
        lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum()).message
    assert "one number" in check_dpo_loss(
        lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr)))).message
    assert not check_dpo_loss(lambda *a: 0.5)


def test_dpo_by_hand():
    assert check_dpo_by_hand(-math.log(1 / (1 + math.exp(-0.3))))
    assert check_dpo_by_hand(0.554)
    assert "None" in check_dpo_by_hand(None).message
    assert "2 - (-1)" in check_dpo_by_hand(-math.log(1 / (1 + math.exp(-0.1)))).message
    assert "log 2" in check_dpo_by_hand(math.log(2)).message
    assert "beta" in check_dpo_by_hand(-math.log(1 / (1 + math.exp(-3)))).message
    assert not check_dpo_by_hand(1.0) and not check_dpo_by_hand("big")
