"""Checks for lesson 13's exercises: masked SFT targets, the DPO loss, one DPO loss by hand."""

from __future__ import annotations

import math

import torch

from course_lib.assistant import dpo_loss, masked_targets
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    a_function,
    as_ints,
    call_learner,
    exercise,
    learner_number,
    right,
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
