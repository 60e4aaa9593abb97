"""Checks for lesson 13's exercises: masked SFT targets, the DPO loss, one DPO loss by hand,
GRPO's group-relative advantage, a refusal rate's interval."""

from __future__ import annotations

import math

import torch

from course_lib.assistant import dpo_loss, masked_targets
from course_lib.rl import group_advantages
from course_lib.safety import rate_with_interval
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    a_function,
    as_ints,
    as_numbers,
    call_learner,
    exercise,
    learner_number,
    learner_tensor,
    right,
    shown,
    wrong,
)

# Exercise 3: the policy moved the chosen answer up and the rejected one down, against the
# reference, by these many nats; beta as in the lesson.
BY_HAND_BETA = 0.1
BY_HAND_CHOSEN_UP = 2.0
BY_HAND_REJECTED_DOWN = 1.0

_CASES = [([10, 11, 12], [20, 21, 2]), ([7], [8, 9]), ([1, 2, 3, 4, 5], [6])]


@exercise(**a_function("masked(prompt_ids, answer_ids)"))
def check_masked_targets(fn: object) -> Feedback:
    """Exercise 1: fn(prompt_ids, answer_ids) -> (inputs, targets) with -1 on the prompt."""
    for prompt, answer in _CASES:
        expected_x, expected_y = masked_targets(prompt, answer)
        out, failed = call_learner(
            fn, list(prompt), list(answer), on=f"on prompt {prompt}, answer {answer}",
            if_none="Your function returns None: replace the None in its body with the pair "
                    "(inputs, targets).")
        if failed is not None:
            return failed
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            return wrong("Return a pair (inputs, targets).")
        x, y = as_ints(out[0]), as_ints(out[1])
        if x is None or y is None:
            return wrong("inputs and targets should be lists (or 1-D tensors) of ints.")
        ids = prompt + answer
        if x == ids:
            return wrong("The inputs are every token but the last: the last token is never "
                         "an input, since nothing after it is predicted.")
        if x != expected_x:
            return wrong(f"On prompt {prompt} and answer {answer} the inputs should be "
                         f"{expected_x}, got {x}.")
        if y == expected_y:
            continue
        if y == ids[1:]:
            return wrong("Nothing is masked: the targets inside the prompt should be -1, so "
                         "the loss ignores them.")
        if y == [-1] * len(prompt) + answer[1:]:
            return wrong("One too many -1: the last prompt position predicts the first answer "
                         "token, and that target must stay.")
        if y == [-1] * (len(prompt) - 2) + ids[len(prompt) - 1:] and len(prompt) > 1:
            return wrong("One -1 too few: the target at the second-to-last prompt position is "
                         "still a prompt token.")
        return wrong(f"On prompt {prompt} and answer {answer} the targets should be "
                     f"{expected_y}, got {y}. Shift by one, then put -1 wherever the target "
                     "is a prompt token.")
    return right("Inputs are the sequence but its last token; targets are the same shifted by "
                 "one, with -1 wherever the next token is still the prompt. The loss then "
                 "counts the answer tokens only.")


@exercise(**a_function("dpo(pc, pr, rc, rr, beta)"))
def check_dpo_loss(fn: object) -> Feedback:
    """Exercise 2: fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> loss."""
    g = torch.Generator().manual_seed(12)
    pc, pr, rc, rr = (torch.randn(5, generator=g) * 4 - 20 for _ in range(4))
    beta = 0.2
    out, failed = learner_number(
        fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta,
        on="on 5 pairs of log-probabilities", what="the mean loss over the pairs",
        if_none="Your function returns None: return the mean loss.")
    if failed is not None:
        return failed
    expected = dpo_loss(pc, pr, rc, rr, beta).item()

    def close(value: torch.Tensor | float) -> bool:
        return abs(out - float(value)) < 1e-4

    margin = (pc - rc) - (pr - rr)
    if close(expected):
        return right(f"{expected:.4f}: -log sigmoid(beta x ((chosen log-ratio) - (rejected "
                     "log-ratio))), averaged over the pairs. It falls as the policy moves the "
                     "chosen answer up, relative to the reference, more than the rejected one.")
    if close(-F_logsigmoid(-beta * margin).mean()):
        return wrong("The sign is flipped: that loss would reward preferring the rejected "
                     "answer. The margin is chosen minus rejected.")
    if close(-F_logsigmoid(beta * (pc - pr)).mean()):
        return wrong("The reference is missing: each side's log-probability must be taken "
                     "relative to the frozen reference (policy minus reference).")
    if close(-F_logsigmoid(margin).mean()):
        return wrong("beta is missing: multiply the margin by beta before the sigmoid.")
    if close(-F_logsigmoid(beta * margin).sum()):
        return wrong("That is the sum over the pairs; take the mean.")
    if close(-torch.sigmoid(beta * margin).mean()) or close(torch.sigmoid(beta * margin).mean()):
        return wrong("Take the log of the sigmoid: the loss is -log sigmoid(...).")
    return wrong(f"Not the DPO loss (expected {expected:.4f} on the check's numbers, got "
                 f"{out:.4f}). Compute beta * ((pc - rc) - (pr - rr)), then -log sigmoid, "
                 "then the mean.")


def F_logsigmoid(x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (named after F.logsigmoid)
    return torch.nn.functional.logsigmoid(x)


@exercise("Replace None with the loss, a number.", **A_NUMBER)
def check_dpo_by_hand(answer: float) -> Feedback:
    """Exercise 3: the DPO loss of one pair, the chosen answer up 2 nats and the rejected down 1
    nat against the reference, beta 0.1."""
    margin = BY_HAND_CHOSEN_UP + BY_HAND_REJECTED_DOWN
    expected = math.log1p(math.exp(-BY_HAND_BETA * margin))
    if abs(answer - expected) < 5e-3:
        return right(f"-log sigmoid(0.1 x (2 - (-1))) = -log sigmoid(0.3) = {expected:.3f}, "
                     f"below log 2 = {math.log(2):.3f}, the loss when the policy equals the "
                     "reference.")
    if abs(answer - math.log1p(math.exp(-BY_HAND_BETA * 1.0))) < 5e-3:
        return wrong("The rejected answer went down by 1, so its log-ratio is -1: the margin "
                     "is 2 - (-1) = 3, not 2 - 1.")
    if abs(answer - math.log(2)) < 5e-3:
        return wrong("log 2 is the loss at the start, when the policy equals the reference; "
                     "here the policy has moved.")
    if abs(answer - math.log1p(math.exp(-margin))) < 5e-3:
        return wrong("beta is missing: the sigmoid's argument is beta x margin = 0.3.")
    if abs(answer + math.log1p(math.exp(-BY_HAND_BETA * margin))) < 5e-3:
        return wrong("The sign: the loss is minus log sigmoid, a positive number.")
    return wrong(f"Not {answer}. The margin is (+2) - (-1) = 3; the loss is "
                 "-log sigmoid(beta x margin).")


_REWARDS = [([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0], 4), ([3.0, 1.0, 2.0, 2.0, 0.0, 0.0], 3),
            ([0.5, 0.5, 0.5, 0.5], 2)]


@exercise(**a_function("advantages(rewards, group_size)"))
def check_group_advantages(fn: object) -> Feedback:
    """Exercise 4: fn(rewards, group_size) -> each reward's group-relative advantage."""
    for rewards, g in _REWARDS:
        on = f"on rewards {rewards}, group_size {g}"
        out, failed = learner_tensor(
            fn, torch.tensor(rewards), g, on=on, what="one advantage per reward",
            if_none="Your function returns None: return a tensor of advantages, one per reward.")
        if failed is not None:
            return failed
        out = out.detach().reshape(-1).double()
        if out.numel() != len(rewards):
            return wrong(f"Return one advantage per reward: {len(rewards)} {on}, got "
                         f"{out.numel()}.")
        expected = group_advantages(rewards, g).double()
        if torch.allclose(out, expected, atol=1e-3):
            continue
        r = torch.tensor(rewards, dtype=torch.float64).view(-1, g)
        centred = r - r.mean(1, keepdim=True)
        if torch.isnan(out).any():
            return wrong(f"Your function gives nan {on}: a group whose rewards are all equal "
                         "has standard deviation 0; add 1e-4 to it before dividing.")
        if torch.allclose(out, centred.reshape(-1), atol=1e-3):
            return wrong("You subtracted the group's mean but did not divide by its standard "
                         "deviation (+ 1e-4).")
        whole = torch.tensor(rewards, dtype=torch.float64)
        if torch.allclose(out, ((whole - whole.mean()) / (whole.std() + 1e-4)), atol=1e-3):
            return wrong("You normalised over all the rewards at once: each group (the "
                         "group_size answers to one question) is normalised on its own.")
        population = centred / (r.std(1, unbiased=False, keepdim=True) + 1e-4)
        if torch.allclose(out, population.reshape(-1), atol=1e-3):
            return wrong("Close: that standard deviation divides by group_size; use torch's "
                         "default, which divides by group_size - 1 (as TRL's GRPO does).")
        return wrong(f"{on} the advantages should be {[round(v, 3) for v in expected.tolist()]}, "
                     f"got {[round(v, 3) for v in out.tolist()]}.")
    return right("Each reward minus its group's mean, over its group's standard deviation: an "
                 "answer is good or bad only against the other answers to the same question, "
                 "so no value model is needed, and a group whose answers all score alike "
                 "teaches nothing.")


_FLAGS = [[1] * 6 + [0] * 24, [1] * 27 + [0] * 3, [1, 0] * 15, [0] * 20]


@exercise(**a_function("refusal_interval(flags)"))
def check_refusal_interval(fn: object) -> Feedback:
    """Exercise 5: fn(flags) -> (rate, low, high), a 95% interval of a refusal rate."""
    for flags in _FLAGS:
        on = f"on {len(flags)} replies of which {sum(flags)} refuse"
        out, failed = call_learner(
            fn, list(flags), on=on,
            if_none="Your function returns None: return (rate, low, high).")
        if failed is not None:
            return failed
        values = as_numbers(out) if isinstance(out, (tuple, list)) else None
        if values is None or len(values) != 3:
            return wrong(f"Return three numbers (rate, low, high), got {shown(out)} ({on}).")
        rate, low, high = values
        want, want_low, want_high = rate_with_interval(flags)
        if abs(rate - want) > 1e-6:
            return wrong(f"The rate {on} is {want:.3f} (refusals / replies), got {rate:.3f}.")
        if not low <= rate <= high:
            return wrong(f"The interval ({low:.3f}, {high:.3f}) should contain the rate "
                         f"{rate:.3f} ({on}).")
        if abs(low - want_low) > 0.05 or abs(high - want_high) > 0.05:
            hint = (" It is far too narrow: the standard error of a rate is "
                    "sqrt(p (1 - p) / n), with the square root and the n."
                    if high - low < (want_high - want_low) / 2 else
                    " It is too wide: 95% is about 2 standard errors each side, not more."
                    if high - low > 1.5 * (want_high - want_low) else "")
            return wrong(f"{on} a 95% interval is about ({want_low:.2f}, {want_high:.2f}); got "
                         f"({low:.3f}, {high:.3f}).{hint}")
    return right("A rate measured on a few dozen prompts moves by whole prompts: with 30 of "
                 "them, the interval is some 0.25 wide in the middle. Two models' rates whose "
                 "intervals overlap this much are not shown to differ.")
