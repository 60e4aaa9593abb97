import torch

from course_lib.lora import lora_parameter_count
from course_lib.pretrained import load_pretrained
from widgets.checks.fine_tuning import check_break_even_rank, check_lora_count, check_merge


def test_lora_count_on_the_shipped_model():
    model = load_pretrained()[0]
    d, n = model.config.n_embd, model.config.n_layer
    right = n * 8 * ((d + 3 * d) + (d + 4 * d))
    assert check_lora_count(right) and check_lora_count(torch.tensor(right))
    assert not check_lora_count(None) and "None" in check_lora_count(None).message
    assert not check_lora_count("lots")
    assert "one kind" in check_lora_count(n * 8 * (d + 3 * d)).message
    assert "one block" in check_lora_count(right // n).message
    assert "full weight" in check_lora_count(n * (3 * d * d + 4 * d * d)).message
    assert not check_lora_count(right + 1)


def test_lora_count_on_any_model(small_model):
    right = lora_parameter_count(small_model, 8, ("attn.c_attn", "mlp.c_fc"))
    assert check_lora_count(right, small_model)
    assert not check_lora_count(right + 8, small_model)


def test_merge():
    assert check_merge(lambda W, A, B, alpha, rank: W + (alpha / rank) * B @ A)
    assert "None" in check_merge(None).message
    assert "function" in check_merge(3).message
    assert "returns None" in check_merge(lambda W, A, B, alpha, rank: None).message
    assert "scaling" in check_merge(lambda W, A, B, alpha, rank: W + B @ A).message
    upside_down = check_merge(lambda W, A, B, alpha, rank: W + rank / alpha * B @ A)
    assert "upside down" in upside_down.message
    assert "dW alone" in check_merge(lambda W, A, B, alpha, rank: alpha / rank * B @ A).message
    assert "unchanged" in check_merge(lambda W, A, B, alpha, rank: W).message
    raised = check_merge(lambda W, A, B, alpha, rank: W + A @ B)
    assert not raised and "raised" in raised.message and "B @ A" in raised.message
    assert "shape" in check_merge(lambda W, A, B, alpha, rank: W.T).message


def test_break_even_rank(small_model):
    from course_lib.pretrained import load_pretrained

    C = load_pretrained()[0].config.n_embd  # the shipped c_attn: C in, 3C out
    rank = C * 3 * C // (4 * C)  # in x out / (in + out), 144 for C = 192
    assert check_break_even_rank(rank) and check_break_even_rank(float(rank))
    assert not check_break_even_rank(None) and not check_break_even_rank(str(rank))
    assert "square" in check_break_even_rank(C // 2).message
    assert "more than" in check_break_even_rank(C).message
    assert not check_break_even_rank(rank - 10)
    # small_model: c_attn is 32 -> 96, so 32 * 96 / 128 = 24
    assert check_break_even_rank(24, small_model) and not check_break_even_rank(144, small_model)


def test_lora_forward_right_and_the_usual_slips():
    from widgets.checks.fine_tuning import check_lora_forward

    def lora_forward(x, W, A, B, alpha, rank):
        return x @ W.T + (alpha / rank) * (x @ A.T @ B.T)

    assert check_lora_forward(lora_forward)
    assert check_lora_forward(lambda x, W, A, B, alpha, rank: (
        x @ (W + alpha / rank * B @ A).T).double())
    assert "None" in check_lora_forward(None).message
    no_scale = check_lora_forward(lambda x, W, A, B, alpha, rank: x @ W.T + x @ A.T @ B.T)
    assert not no_scale and "scaling" in no_scale.message
    no_base = check_lora_forward(lambda x, W, A, B, alpha, rank: alpha / rank * x @ A.T @ B.T)
    assert not no_base and "low-rank path alone" in no_base.message
    flipped = check_lora_forward(lambda x, W, A, B, alpha, rank: x @ W + x @ A.T @ B.T)
    assert not flipped and "raised" in flipped.message and "x @ W.T" in flipped.message
    assert "returns None" in check_lora_forward(lambda *a: None).message
