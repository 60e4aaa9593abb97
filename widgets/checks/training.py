"""Checks for lesson 8 (training): the shifted targets, the loss at step 0, AdamW's first step,
one training step (code), training the GPT the learner wrote in lesson 6 (code)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from course_lib.data import get_batch, load_corpus
from course_lib.model import GPT, GPTConfig
from widgets.checks import shipped
from widgets.checks.transformer_block import gpt_mismatch
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    a_function,
    as_ints,
    call_learner,
    exercise,
    learner_number,
    right,
    shown,
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
    # Measured, a fresh model scores ln V + sigma^2 / 2, sigma the spread of its logits: about
    # 10.97 at GPT-2-small width (sigma = 0.02 * sqrt(768)), up to about 11.15 for GPT-2 XL.
    if want - 0.05 < my_answer < want + 0.35:
        return right(f"ln(50257) = {want:.3f}. A fresh model spreads its probability about "
                     "evenly, p = 1/50257 for every token, and the loss is -ln p. Measured, it "
                     "comes out a little above (about 10.97 at GPT-2-small width): the logits "
                     "are not exactly 0 but spread with some sigma, which adds sigma^2 / 2.")
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


# ----- Exercise 4 (code): one training step ---------------------------------------------------

STEP_CONFIG = GPTConfig(vocab_size=48, block_size=16, n_layer=2, n_head=2, n_embd=32)
STEP_LR = 1e-3
# A right step that computes the loss with F.cross_entropy instead of the model's own lands
# about 1e-6 away: AdamW divides each gradient by its size, so the last-bit differences of
# near-zero gradients grow to lr-sized ones. A slip (old gradients kept) moves them by ~1e-3.
STEP_TOLERANCE = 1e-5


def _step_setup() -> tuple[GPT, torch.optim.Optimizer, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A fresh small GPT (the same weights every time), its AdamW, and two batches."""
    with torch.random.fork_rng():  # leave the learner's own random state alone
        torch.manual_seed(7)
        model = GPT(STEP_CONFIG).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=STEP_LR)
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randint(0, STEP_CONFIG.vocab_size, (4, 8), generator=g),
                torch.randint(0, STEP_CONFIG.vocab_size, (4, 8), generator=g)) for _ in range(2)]
    return model, optimizer, batches


@functools.cache  # the same every time; only read, never changed
def _reference_steps(zero_grad: bool = True) -> tuple[list[float], list[list[torch.Tensor]]]:
    """The losses and the weights after each of the two steps, done the right way (or without
    zeroing the gradients, the slip to recognise)."""
    model, optimizer, batches = _step_setup()
    losses, weights = [], []
    for x, y in batches:
        if zero_grad:
            optimizer.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        weights.append([p.detach().clone() for p in model.parameters()])
    return losses, weights


def _max_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(a, b, strict=True))


@exercise(**a_function("training_step(model, optimizer, x, y)"))
def check_training_step(fn: object) -> Feedback:
    """Exercise 4: fn(model, optimizer, x, y) does one step and returns the loss as a float.

    Exercise text to paste:

    Write `training_step(model, optimizer, x, y)`: clear the old gradients, run the model on
    the inputs x with targets y (it returns logits and the loss), backpropagate, let the
    optimizer update the weights, and return the loss as a Python float. The check gives your
    function a fresh small GPT and its AdamW for two steps in a row, and compares the losses
    and the weights with a step it does itself.

        def training_step(model, optimizer, x, y):
            ...  # return the loss as a float

        check_training_step(training_step)

    Solution:

        def training_step(model, optimizer, x, y):
            optimizer.zero_grad()      # gradients add up: clear the last step's
            logits, loss = model(x, y)
            loss.backward()            # a gradient for every weight
            optimizer.step()           # move the weights against it
            return loss.item()

        check_training_step(training_step)
    """
    model, optimizer, batches = _step_setup()
    losses, weights = _reference_steps()
    start = [p.detach().clone() for p in model.parameters()]
    for step, (x, y) in enumerate(batches):
        loss, failed = learner_number(
            fn, model, optimizer, x.clone(), y.clone(), on=f"on step {step + 1}",
            what="the loss (loss.item())",
            if_none="Your function returns None: return the loss as a float, loss.item().")
        if failed is not None:
            return failed
        now = [p.detach() for p in model.parameters()]
        if len(now) != len(start) or any(p.shape != q.shape for p, q in zip(now, start,
                                                                          strict=False)):
            return wrong("The model's weights changed shape: the step should only change "
                         "their values.")
        if step == 0 and _max_gap(now, start) == 0:
            no_grads = all(p.grad is None or not p.grad.any() for p in model.parameters())
            return wrong("The weights did not move. " + (
                "No gradients are left on them either: call loss.backward(), then "
                "optimizer.step(); zero the gradients before the forward pass, not in "
                "between." if no_grads else
                "Call optimizer.step() after loss.backward(): the step uses the gradients "
                "that backward has just computed."))
        gap = _max_gap(now, weights[step])
        if gap > STEP_TOLERANCE:
            if step == 1 and _max_gap(now, _reference_steps(zero_grad=False)[1][1]) <= \
                    STEP_TOLERANCE:
                return wrong("The first step is right, the second is not: the gradients of "
                             "step 1 were added to those of step 2. Call "
                             "optimizer.zero_grad() at the start of every step.")
            return wrong(f"After step {step + 1} the weights differ from the check's own step "
                         f"by up to {gap:.3g}. Do zero_grad, forward with targets, backward and "
                         "step, in that order, once each.")
        if abs(loss - losses[step]) > STEP_TOLERANCE:
            return wrong(f"The weights are right, but on step {step + 1} you return "
                         f"{loss:.6f} and the loss was {losses[step]:.6f}: return the loss of "
                         "the forward pass, loss.item().")
    return right(f"Two steps, the same weights and losses as the check's own ({losses[0]:.4f}, "
                 f"then {losses[1]:.4f}): zero_grad, forward, backward, step. Gradients add up "
                 "in .grad, which is why each step clears them first.")


# ----- Exercise 5 (code): train the GPT the learner wrote in lesson 6 ---------------------------

# The lesson's small model, narrower and with a shorter context so the check takes seconds.
MY_GPT_CONFIG = GPTConfig(vocab_size=2048, block_size=32, n_layer=2, n_head=4, n_embd=64)
MY_GPT_STEPS, MY_GPT_BATCH, MY_GPT_LR = 30, 8, 1e-2
MY_GPT_FALL = 0.75  # nats: the loss of the last 5 steps must sit at least this far below step 0
MY_GPT_TRACK = 0.05  # nats: and within this of course_lib's GPT trained the same way,
MY_GPT_WEIGHTS = 1e-2  # with every weight this close to the GPT's after training


@functools.cache
def _my_gpt_data() -> torch.Tensor:
    """Token ids of the opening of the training plays, with the shipped tokenizer."""
    _, tokenizer = shipped()
    return torch.tensor(tokenizer.encode(load_corpus("train")[:60_000]))


def _my_gpt_run(forward, model: GPT, batches
                ) -> tuple[list[float], dict[str, torch.Tensor], Feedback | None]:
    """Train a copy of model's weights (a dict) with forward(w, x, config), one step a batch:
    the losses and the trained weights, or a Feedback saying why forward cannot be trained."""
    config = model.config
    w = {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(w.values(), lr=MY_GPT_LR, weight_decay=0.0)
    losses = []
    with torch.enable_grad():
        for step, (x, y) in enumerate(batches):
            logits, failed = call_learner(forward, w, x, config, on=f"on training step {step}")
            if failed is not None:
                return losses, w, failed
            if not isinstance(logits, torch.Tensor) or logits.shape != (*x.shape,
                                                                        config.vocab_size):
                return losses, w, wrong(f"On training step {step} your gpt_forward returned "
                                     f"{shown(logits)}, not logits of shape "
                                     f"{(*x.shape, config.vocab_size)}.")
            loss = F.cross_entropy(logits.float().reshape(-1, config.vocab_size), y.reshape(-1))
            if not loss.requires_grad:
                return losses, w, wrong(
                    "No gradient can flow through your gpt_forward: its logits are cut off "
                    "from the weights (a .detach(), .data, .numpy() or torch.no_grad() inside?). "
                    "Compute with the tensors of w themselves.")
            optimizer.zero_grad()
            loss.backward()
            if step == 0:
                missing = [name for name, p in w.items() if p.grad is None or not p.grad.any()]
                if missing:
                    return losses, w, wrong(
                        f"No gradient reached {len(missing)} of the {len(w)} weights, among "
                        f"them {missing[0]!r}: your forward does not use them in a way "
                        "autograd can follow, so training cannot change them.")
            optimizer.step()
            losses.append(loss.item())
    return losses, w, None


@exercise(**a_function("gpt_forward(w, idx, config)"))
def check_my_gpt_trains(fn: object) -> Feedback:
    """Exercise 5: train the learner's gpt_forward (lesson 6, exercise 4) from fresh weights.

    The check builds fresh weights for a small GPT (MY_GPT_CONFIG), makes sure fn gives
    course_lib's logits on them, then trains them with fn and AdamW for MY_GPT_STEPS steps on
    the training plays, and the same weights as a course_lib GPT on the same batches: the
    learner's loss must fall by MY_GPT_FALL and track the library's within MY_GPT_TRACK.
    """
    with torch.random.fork_rng():  # leave the learner's own random state alone
        torch.manual_seed(8)
        fresh = GPT(MY_GPT_CONFIG)
    g = torch.Generator().manual_seed(8)
    probe = torch.randint(0, MY_GPT_CONFIG.vocab_size, (2, 16), generator=g)
    failed = gpt_mismatch(fn, fresh, probe)
    if failed is not None:
        return wrong("On the fresh weights, before training: " + failed.message)
    ids = _my_gpt_data()
    batches = [get_batch(ids, MY_GPT_BATCH, MY_GPT_CONFIG.block_size, g)
               for _ in range(MY_GPT_STEPS)]
    losses, trained, failed = _my_gpt_run(fn, fresh, batches)
    if failed is not None:
        return failed
    reference, expected, _ = _my_gpt_run(lambda w, x, c: functional_call(fresh, w, (x,))[0],
                                         fresh, batches)
    start, end, ref_end = losses[0], sum(losses[-5:]) / 5, sum(reference[-5:]) / 5
    if not end < start - MY_GPT_FALL:
        return wrong(f"The loss went from {start:.2f} to {end:.2f} (mean of the last 5 steps) "
                     f"in {MY_GPT_STEPS} steps; course_lib's GPT from the same weights reached "
                     f"{ref_end:.2f}.")
    gaps = {name: (trained[name] - expected[name]).abs().max().item() for name in expected}
    worst = max(gaps, key=gaps.get)
    if abs(end - ref_end) > MY_GPT_TRACK or gaps[worst] > MY_GPT_WEIGHTS:
        return wrong(f"Your model learns (loss {start:.2f} -> {end:.2f}; course_lib's GPT from "
                     f"the same weights on the same batches: {ref_end:.2f}), but its weights "
                     f"moved differently from the library's, most of all {worst!r} (by up to "
                     f"{gaps[worst]:.2g}): the gradients through your forward are not the "
                     "library's. Do you use every weight as the forward pass of lesson 6 "
                     "does, with nothing detached?")
    return right(f"Your own GPT trains: {MY_GPT_STEPS} AdamW steps on the plays took its loss "
                 f"from {start:.2f} (about ln {MY_GPT_CONFIG.vocab_size} = "
                 f"{math.log(MY_GPT_CONFIG.vocab_size):.2f}) to {end:.2f}, and course_lib's GPT "
                 f"from the same weights on the same batches to {ref_end:.2f}. Autograd found "
                 "the gradient of every weight through the code you wrote.")
