"""Lesson 8's exercise checks: a right answer, the common wrong ones, and None."""

import math

import torch
from test_checks_transformer_block import GPT_SLIPS, gpt_solution

from course_lib.model import GPT, GPTConfig, eval_mode
from widgets.checks.training import (
    ADAM_BETAS,
    ADAM_GRAD,
    ADAM_LR,
    SHIFT_BLOCK,
    SHIFT_IDS,
    SHIFT_START,
    check_first_adam_step,
    check_initial_loss,
    check_my_gpt_trains,
    check_shift,
)


def test_check_shift():
    s, b = SHIFT_START, SHIFT_BLOCK
    x, y = SHIFT_IDS[s : s + b], SHIFT_IDS[s + 1 : s + b + 1]
    assert check_shift((x, y))
    assert check_shift([torch.tensor(x), torch.tensor(y)])  # tensors are fine too
    assert not check_shift(None) and "None" in check_shift(None).message
    assert "swapped" in check_shift((y, x)).message
    assert "x is right" in check_shift((x, SHIFT_IDS[s : s + b])).message
    assert "y is right" in check_shift((SHIFT_IDS[:b], y)).message
    assert not check_shift((x[:-1], y[:-1]))
    assert not check_shift("x, y")
    assert not check_shift((["a"] * b, y))


def test_check_initial_loss():
    assert check_initial_loss(math.log(50257))
    assert check_initial_loss(10.82)
    assert not check_initial_loss(None)
    assert "log2" in check_initial_loss(math.log2(50257)).message
    assert "perplexity" in check_initial_loss(50257).message
    assert "2048" in check_initial_loss(math.log(2048)).message
    assert not check_initial_loss(1.0)
    assert not check_initial_loss("10.8")


def test_check_initial_loss_accepts_a_measured_fresh_gpt2_small_width():
    # What a learner measures: a fresh model of GPT-2-small width and vocabulary, one layer to
    # keep it quick; its logits spread with sigma = 0.02 * sqrt(768), so ln V + sigma^2 / 2.
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=12, n_embd=768))
    x = torch.randint(0, 50257, (4, 32))
    with eval_mode(model):
        loss = model(x, torch.roll(x, -1, dims=1))[1].item()
    assert 10.9 < loss < 11.05  # about 10.97, above ln V = 10.825
    assert check_initial_loss(loss)
    assert check_initial_loss(10.97)
    assert not check_initial_loss(11.5)
    assert not check_initial_loss(10.7)


def test_check_first_adam_step_agrees_with_torch():
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=ADAM_LR, betas=ADAM_BETAS, weight_decay=0.0)
    w.grad = torch.tensor([ADAM_GRAD])
    opt.step()
    step = w.item()  # negative: against the gradient
    assert check_first_adam_step(step)
    assert check_first_adam_step(-step)  # the size is what is asked
    assert check_first_adam_step(ADAM_LR)
    assert not check_first_adam_step(None)
    assert "SGD" in check_first_adam_step(ADAM_LR * ADAM_GRAD).message
    no_correction = ADAM_LR * (1 - ADAM_BETAS[0]) / math.sqrt(1 - ADAM_BETAS[1])
    assert "bias correction" in check_first_adam_step(no_correction).message
    assert not check_first_adam_step(0.5)
    assert not check_first_adam_step(True)


def _step(model, optimizer, x, y, zero=True, step=True):
    if zero:
        optimizer.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    if step:
        optimizer.step()
    return loss.item()


def test_training_step_right_and_the_usual_slips():
    import torch
    import torch.nn.functional as F

    from widgets.checks.training import check_training_step

    assert check_training_step(_step)

    def with_f_cross_entropy(model, optimizer, x, y):
        model.zero_grad()
        logits, _ = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        optimizer.step()
        return loss  # a 1-element tensor is taken too

    assert check_training_step(with_f_cross_entropy)
    assert "None" in check_training_step(None).message
    no_zero = check_training_step(lambda m, o, x, y: _step(m, o, x, y, zero=False))
    assert not no_zero and "zero_grad()" in no_zero.message and "second" in no_zero.message
    no_step = check_training_step(lambda m, o, x, y: _step(m, o, x, y, step=False))
    assert not no_step and "did not move" in no_step.message
    assert "optimizer.step()" in no_step.message

    def loss_after(model, optimizer, x, y):
        _step(model, optimizer, x, y)
        return model(x, y)[1].item()

    late = check_training_step(loss_after)
    assert not late and "loss of the forward pass" in late.message
    assert "returns None" in check_training_step(lambda m, o, x, y: None).message
    assert "raised" in check_training_step(lambda m, o, x, y: m(x, y.float())).message
    assert "one finite number, the loss" in check_training_step(lambda m, o, x, y: m(x)).message
    assert torch.is_grad_enabled()


# ----- exercise 5: training the learner's own GPT ------------------------------------------------

def test_my_gpt_trains_with_the_worked_solution_of_lesson_6():
    fb = check_my_gpt_trains(gpt_solution()["gpt_forward"])
    assert fb.ok, fb.message
    assert "Your own GPT trains" in fb.message


def test_my_gpt_trains_names_what_stops_training():
    # a forward that is wrong on the fresh weights: the stage is named before any training
    no_norm = gpt_solution(GPT_SLIPS["no final norm"][0])["gpt_forward"]
    fb = check_my_gpt_trains(no_norm)
    assert not fb.ok and "before training" in fb.message and "final norm" in fb.message
    # right logits, but cut off from the weights
    forward = gpt_solution()["gpt_forward"]
    fb = check_my_gpt_trains(lambda w, idx, config: forward(
        {k: v.detach() for k, v in w.items()}, idx, config))
    assert not fb.ok and "No gradient can flow" in fb.message, fb.message
    # right logits, but one weight read through .data: it never learns
    fb = check_my_gpt_trains(lambda w, idx, config: forward(
        {**w, "transformer.wpe.weight": w["transformer.wpe.weight"].data}, idx, config))
    assert not fb.ok and "'transformer.wpe.weight'" in fb.message, fb.message
    # right on fresh weights, wrong once it trains: the positions' gradient points backwards
    def positions_ascend(w, idx, config):
        wpe = w["transformer.wpe.weight"]
        return forward({**w, "transformer.wpe.weight": 2 * wpe.detach() - wpe}, idx, config)

    fb = check_my_gpt_trains(positions_ascend)
    assert not fb.ok and "course_lib's GPT from the same weights" in fb.message, fb.message
    assert "Replace None" in check_my_gpt_trains(None).message
