import pytest
import torch

from course_lib.lora import LoRALinear, add_lora, lora_state_dict, merge_lora, trainable_parameters


def test_lora_starts_as_the_base_layer_and_merges_exactly():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8)
    lora = LoRALinear(base, rank=2, alpha=4)
    x = torch.randn(5, 16)
    assert torch.equal(lora(x), base(x))  # B = 0
    with torch.no_grad():
        lora.lora_B.normal_()
    assert not torch.allclose(lora(x), base(x))
    expected = x @ (base.weight + lora.lora_B @ lora.lora_A * 2.0).T + base.bias
    assert torch.allclose(lora(x), expected, atol=1e-5)
    assert torch.allclose(lora.merged()(x), lora(x), atol=1e-5)


def test_add_lora_freezes_the_rest_and_counts_parameters(small_model):
    idx = torch.randint(0, 97, (1, 12))
    before = small_model(idx)[0]
    _, total = trainable_parameters(small_model)
    add_lora(small_model, rank=4, alpha=8, targets=("c_attn",))
    trainable, total_after = trainable_parameters(small_model)
    # two layers, each c_attn is 32 -> 96: A is 4x32, B is 96x4
    assert trainable == 2 * (4 * 32 + 96 * 4)
    assert total_after == total + trainable
    assert torch.equal(small_model(idx)[0], before)
    assert set(lora_state_dict(small_model)) == {
        f"transformer.h.{i}.attn.c_attn.lora_{m}" for i in range(2) for m in "AB"
    }


def test_training_lora_then_merging_keeps_the_function(small_model):
    add_lora(small_model, rank=2, targets=("c_attn", "c_fc"))
    opt = torch.optim.AdamW([p for p in small_model.parameters() if p.requires_grad], lr=1e-2)
    idx = torch.randint(0, 97, (4, 16))
    small_model.train()
    losses = []
    for _ in range(20):
        _, loss = small_model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    small_model.eval()
    with torch.no_grad():
        adapted = small_model(idx)[0]
        merge_lora(small_model)
        assert not any(isinstance(m, LoRALinear) for m in small_model.modules())
        assert torch.allclose(small_model(idx)[0], adapted, atol=1e-4)


def test_bad_input(small_model):
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(torch.nn.Linear(4, 4), rank=0)
    with pytest.raises(ValueError, match="targets"):
        add_lora(small_model, targets=("nope",))
