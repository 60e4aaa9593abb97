"""Checks for lesson 7 (training): the shifted targets, the loss at step 0, AdamW's first step."""

from __future__ import annotations

import math

from widgets.feedback import (
    A_NUMBER,
    Feedback,
    as_ints,
    exercise,
    right,
    wrong,
)

# The token ids of the first exercise, printed in the lesson.
SHIFT_IDS: list[int] = [40, 7, 312, 9, 58, 1021, 11, 64, 5]
SHIFT_START, SHIFT_BLOCK = 2, 4

GPT2_VOCAB = 50257


@exercise("Replace None with a pair (x, y): two lists of token ids.")
def check_shift(my_answer) -> Feedback:
    """my_answer = (x, y): the input and target windows of SHIFT_BLOCK tokens at SHIFT_START."""
    if not isinstance(my_answer, (list, tuple)) or len(my_answer) != 2:
        return wrong("Give a pair (x, y): the input window and the target window.")
    x, y = (as_ints(v) for v in my_answer)
    if x is None or y is None:
        return wrong("x and y should each be a list of token ids (ints).")
    s, b = SHIFT_START, SHIFT_BLOCK
    want_x, want_y = SHIFT_IDS[s : s + b], SHIFT_IDS[s + 1 : s + b + 1]
    if len(x) != b or len(y) != b:
        return wrong(f"Each window holds block_size = {b} tokens; yours have {len(x)} and "
                     f"{len(y)}.")
    if x == want_x and y == want_y:
        return right(f"x = ids[{s}:{s + b}] and y = ids[{s + 1}:{s + b + 1}]: every target is "
                     "the token that comes right after its input, so one window gives "
                     f"{b} predictions to learn from at once.")
    if x == want_y and y == want_x:
        return wrong("You swapped them: the targets are the later tokens, the inputs the "
                     "earlier ones.")
    if x == want_x:
        return wrong("x is right. y is the same window moved one token to the right.")
    if y == want_y:
        return wrong(f"y is right. x starts at position {s} and holds the {b} tokens "
                     "before each target.")
    return wrong(f"x should be the {b} tokens starting at position {s} (counting from 0), and "
                 "y the same window moved one token to the right.")


@exercise("Replace None with a number: the loss you expect at step 0.", **A_NUMBER)
def check_initial_loss(my_answer: float) -> Feedback:
    """my_answer: the loss at step 0 of a model with GPT-2's vocabulary of 50,257 tokens."""
    want = math.log(GPT2_VOCAB)
    if abs(my_answer - want) < 0.05:
        return right(f"ln(50257) = {want:.3f}. A fresh model spreads its probability about "
                     "evenly, p = 1/50257 for every token, and the loss is -ln p.")
    if abs(my_answer - math.log2(GPT2_VOCAB)) < 0.05:
        return wrong("That is log2, the loss in bits. PyTorch's cross-entropy uses the natural "
                     "log (nats).")
    if abs(my_answer - GPT2_VOCAB) < 1:
        return wrong("That is the perplexity at step 0 (the number of equally likely choices). "
                     "The loss is its natural log.")
    if abs(my_answer - math.log(2048)) < 0.05:
        return wrong("That is ln(2048), the loss for our model's vocabulary. GPT-2 has 50,257 "
                     "tokens.")
    return wrong("At step 0 every token is about equally likely, p = 1 / vocabulary size. "
                 "The loss is the average of -ln p over the targets.")


# Exercise 3: AdamW with these settings (torch's default betas), one step, gradient ADAM_GRAD.
ADAM_LR, ADAM_GRAD, ADAM_BETAS = 0.01, 0.003, (0.9, 0.999)


@exercise("Replace None with a number: the size of the first step.", **A_NUMBER)
def check_first_adam_step(my_answer: float) -> Feedback:
    """my_answer: how far AdamW's first step moves a weight with gradient ADAM_GRAD."""
    size = abs(my_answer)
    # m_hat = g and v_hat = g^2 after bias correction, so the step is lr * g / (|g| + eps).
    want = ADAM_LR * ADAM_GRAD / (ADAM_GRAD + 1e-8)
    if abs(size - want) < 1e-5:
        note = " (minus, since it steps against the gradient)" if my_answer > 0 else ""
        return right(f"{want:.5f}{note}: after bias correction m_hat = g and v_hat = g^2, so the "
                     "first step is lr * g / |g|, the learning rate times the gradient's sign, "
                     "however small or large the gradient is.")
    if abs(size - ADAM_LR * ADAM_GRAD) < 1e-7:
        return wrong("That is plain SGD's step, lr * g. Adam divides by the square root of its "
                     "running average of g^2.")
    beta1, beta2 = ADAM_BETAS
    if abs(size - ADAM_LR * (1 - beta1) / math.sqrt(1 - beta2)) < 1e-4:
        return wrong("Close: don't forget the bias correction. m and v start at 0, so Adam "
                     "divides them by (1 - beta1) and (1 - beta2) on step 1.")
    return wrong("Work through one step: m = (1 - beta1) g, v = (1 - beta2) g^2, then bias "
                 "correction divides by (1 - beta1) and (1 - beta2), and the step is "
                 "lr * m_hat / (sqrt(v_hat) + eps).")
