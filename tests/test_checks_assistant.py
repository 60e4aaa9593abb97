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


def test_group_advantages_right_and_wrong():
    from widgets.checks.assistant import check_group_advantages

    def right(rewards, g):
        r = rewards.view(-1, g)
        return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).flatten()

    assert check_group_advantages(right)
    assert check_group_advantages(lambda r, g: right(r, g).numpy())
    assert "None" in check_group_advantages(None).message
    assert "None" in check_group_advantages(lambda r, g: None).message
    no_std = check_group_advantages(lambda r, g: (r.view(-1, g) - r.view(-1, g).mean(
        1, keepdim=True)).flatten())
    assert not no_std and "standard deviation" in no_std.message
    whole = check_group_advantages(lambda r, g: (r - r.mean()) / (r.std() + 1e-4))
    assert not whole and "each group" in whole.message
    population = check_group_advantages(lambda r, g: ((r.view(-1, g) - r.view(-1, g).mean(
        1, keepdim=True)) / (r.view(-1, g).std(1, unbiased=False, keepdim=True) + 1e-4)
    ).flatten())
    assert not population and "group_size - 1" in population.message
    no_eps = check_group_advantages(lambda r, g: ((r.view(-1, g) - r.view(-1, g).mean(
        1, keepdim=True)) / r.view(-1, g).std(1, keepdim=True)).flatten())
    assert not no_eps and "1e-4" in no_eps.message
    assert not check_group_advantages(lambda r, g: -right(r, g))


def test_refusal_interval_right_and_wrong():
    from course_lib.bootstrap import bootstrap_interval
    from widgets.checks.assistant import check_refusal_interval

    def wald(flags):
        p = sum(flags) / len(flags)
        half = 1.96 * math.sqrt(p * (1 - p) / len(flags))
        return p, p - half, p + half

    def bootstrap(flags):
        return (sum(flags) / len(flags), *bootstrap_interval(flags, seed=3))

    assert check_refusal_interval(wald)
    assert check_refusal_interval(bootstrap)
    assert "None" in check_refusal_interval(None).message
    assert "three numbers" in check_refusal_interval(lambda f: 0.2).message
    rate = check_refusal_interval(lambda f: (1 - wald(f)[0], 0.0, 1.0))
    assert not rate and "rate" in rate.message
    narrow = check_refusal_interval(
        lambda f: (wald(f)[0], wald(f)[0] - 0.01, wald(f)[0] + 0.01))
    assert not narrow and "too narrow" in narrow.message
    no_sqrt_n = check_refusal_interval(lambda f: (wald(f)[0], 0.0, 1.0))
    assert not no_sqrt_n and "too wide" in no_sqrt_n.message
    outside = check_refusal_interval(lambda f: (wald(f)[0], wald(f)[2], wald(f)[2] + 0.1))
    assert not outside and "contain" in outside.message
