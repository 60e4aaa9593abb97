"""LoRA: the layer, add_lora and merging, counting, memory, adapters, and bad input."""

import copy
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from course_lib.data import DOC_MODULES_HELDOUT, DOC_MODULES_TRAIN, python_docs_text
from course_lib.lora import (
    LoRALinear,
    add_lora,
    gradient_bytes,
    load_lora_state_dict,
    lora_parameter_count,
    lora_state_dict,
    lora_target_layers,
    merge_lora,
    optimizer_state_bytes,
    trainable_parameters,
)


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


@pytest.mark.parametrize(
    "targets", [("c_attn",), ("attn.c_proj",), ("c_proj",), ("c_attn", "c_fc")]
)
@pytest.mark.parametrize("rank", [1, 4])
def test_parameter_count_matches_add_lora(small_model, targets, rank):
    predicted = lora_parameter_count(small_model, rank, targets)
    names = set(lora_target_layers(small_model, targets))
    add_lora(small_model, rank=rank, targets=targets)
    assert trainable_parameters(small_model)[0] == predicted
    # the same layers are found after wrapping, by the same names
    assert set(lora_target_layers(small_model, targets)) == names
    assert all(isinstance(small_model.get_submodule(n), LoRALinear) for n in names)


def test_target_layers_and_bad_input(small_model):
    # c_proj matches both the attention and the MLP output projections
    assert len(lora_target_layers(small_model, ("c_proj",))) == 4
    assert len(lora_target_layers(small_model, ("mlp.c_proj",))) == 2
    assert lora_target_layers(small_model, ("nope",)) == {}
    with pytest.raises(ValueError, match="rank"):
        lora_parameter_count(small_model, 0)
    with pytest.raises(ValueError, match="targets"):
        lora_parameter_count(small_model, 2, ("nope",))
    with pytest.raises(ValueError, match="targets"):
        lora_target_layers(small_model, ())


def _one_adamw_step(model):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    idx = torch.randint(0, 97, (2, 9))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    opt.step()
    return opt


def test_memory_of_full_fine_tuning_and_lora(small_model):
    full = copy.deepcopy(small_model)
    opt = _one_adamw_step(full)
    n = trainable_parameters(full)[0]
    assert gradient_bytes(full) == 4 * n  # one float32 gradient per parameter
    assert optimizer_state_bytes(opt) == 2 * 4 * n  # AdamW: two moments per parameter
    add_lora(small_model, rank=2)
    opt = _one_adamw_step(small_model)
    n_lora = trainable_parameters(small_model)[0]
    assert gradient_bytes(small_model) == 4 * n_lora
    assert optimizer_state_bytes(opt) == 2 * 4 * n_lora
    assert n_lora < n / 10


def test_adapter_round_trip_through_safetensors(small_model, tmp_path):
    base = copy.deepcopy(small_model)
    add_lora(small_model, rank=2, targets=("c_attn", "c_fc"))
    with torch.no_grad():
        for m in small_model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_()
    save_file(lora_state_dict(small_model), tmp_path / "adapter.safetensors")
    add_lora(base, rank=2, targets=("c_attn", "c_fc"))
    load_lora_state_dict(base, load_file(tmp_path / "adapter.safetensors"))
    idx = torch.randint(0, 97, (1, 10))
    assert torch.equal(base(idx)[0], small_model(idx)[0])


def test_load_lora_state_dict_refuses_mismatches(small_model):
    other = copy.deepcopy(small_model)
    with pytest.raises(ValueError, match="add_lora"):
        load_lora_state_dict(other, {})
    add_lora(small_model, rank=2)
    add_lora(other, rank=3)
    with pytest.raises(ValueError, match="rank"):
        load_lora_state_dict(other, lora_state_dict(small_model))
    third = add_lora(copy.deepcopy(other), rank=2, targets=("c_fc",))
    with pytest.raises(ValueError, match="targets"):
        load_lora_state_dict(third, lora_state_dict(small_model))


def test_python_docs_text():
    train, held_out = python_docs_text(), python_docs_text(DOC_MODULES_HELDOUT)
    assert not set(DOC_MODULES_TRAIN) & set(DOC_MODULES_HELDOUT)
    assert len(train) > 100_000 and len(held_out) > 10_000
    assert "Return" in train and "KING" not in train
    assert python_docs_text() == train  # deterministic


# ----- bad input: a clear error, and the model left as it was -----------------------------------

BAD_LAYER_SETTINGS = [
    ({"rank": 0}, ValueError, "rank"),
    ({"rank": -3}, ValueError, "rank"),
    ({"rank": 2.0}, TypeError, "rank"),
    ({"rank": True}, TypeError, "rank"),
    ({"rank": "4"}, TypeError, "rank"),
    ({"rank": 2**70}, ValueError, "rank"),
    ({"rank": 9}, ValueError, "rank must be in \\[1, 8\\]"),
    ({"alpha": math.nan}, ValueError, "alpha"),
    ({"alpha": math.inf}, ValueError, "alpha"),
    ({"alpha": -1.0}, ValueError, "alpha"),
    ({"alpha": 0}, ValueError, "alpha"),
    ({"alpha": "8"}, TypeError, "alpha"),
    ({"alpha": None}, TypeError, "alpha"),
    ({"alpha": 10**400}, ValueError, "alpha"),
    ({"dropout": 1.0}, ValueError, "dropout"),
    ({"dropout": -0.1}, ValueError, "dropout"),
    ({"dropout": math.nan}, ValueError, "dropout"),
]


@pytest.mark.parametrize("settings, error, match", BAD_LAYER_SETTINGS)
def test_lora_linear_bad_input(settings, error, match):
    with pytest.raises(error, match=match):
        LoRALinear(torch.nn.Linear(16, 8), **settings)


def test_lora_linear_takes_numpy_and_torch_settings():
    layer = LoRALinear(torch.nn.Linear(16, 8), rank=np.int64(2), alpha=torch.tensor(4.0))
    assert layer.rank == 2 and layer.scaling == 2.0 and isinstance(layer.scaling, float)
    with pytest.raises(TypeError, match="base"):
        LoRALinear(torch.nn.Conv1d(2, 2, 1))


BAD_ADD_LORA = [
    # rank 9 fits small_model's layers (32 -> 96): its limit is 32
    *(case for case in BAD_LAYER_SETTINGS if case[0] != {"rank": 9}),
    ({"rank": 33}, ValueError, "rank must be at most 32"),  # more than c_attn's 32 inputs
    ({"targets": ("nope",)}, ValueError, "targets"),
    ({"targets": ()}, ValueError, "targets"),
    ({"targets": ("",)}, ValueError, "targets"),
    ({"targets": (3,)}, ValueError, "targets"),
    ({"targets": 3}, TypeError, "targets"),
    ({"targets": None}, TypeError, "targets"),
]


def _state(model):
    return (
        [(n, p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()],
        [type(m).__name__ for m in model.modules()],
    )


def _assert_same(model, state):
    params, kinds = _state(model)
    assert kinds == state[1]
    assert [(n, g) for n, g, _ in params] == [(n, g) for n, g, _ in state[0]]
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(params, state[0], strict=True))


@pytest.mark.parametrize("settings, error, match", BAD_ADD_LORA)
def test_add_lora_bad_input_leaves_the_model_as_it_was(small_model, settings, error, match):
    small_model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)  # a caller's own choice
    before = _state(small_model)
    with pytest.raises(error, match=match):
        add_lora(small_model, **settings)
    _assert_same(small_model, before)
    assert trainable_parameters(small_model)[0] > 0


def test_add_lora_one_name_is_not_its_letters(small_model):
    add_lora(small_model, rank=2, targets="c_attn")
    assert set(lora_target_layers(small_model, "c_attn")) == {
        "transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"
    }
    assert sum(isinstance(m, LoRALinear) for m in small_model.modules()) == 2


def test_a_second_add_lora(small_model):
    add_lora(small_model, rank=2, targets=("c_attn",))
    first = trainable_parameters(small_model)[0]
    before = _state(small_model)
    # the same layers again: refused, and nothing changes (the adapters stay trainable)
    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        add_lora(small_model, rank=2, targets=("c_attn",))
    _assert_same(small_model, before)
    # other layers: added, and the first adapters are still trained
    add_lora(small_model, rank=2, targets=("c_fc",))
    assert trainable_parameters(small_model)[0] == first + lora_parameter_count(
        small_model, 2, ("c_fc",))
    assert all(m.lora_A.requires_grad and m.lora_B.requires_grad
               for m in small_model.modules() if isinstance(m, LoRALinear))


@pytest.mark.parametrize("rank, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                          (None, TypeError), (np.int64(2), None)])
def test_parameter_count_rank(small_model, rank, error):
    if error is None:
        assert lora_parameter_count(small_model, rank) == 2 * 2 * (32 + 96)
    else:
        with pytest.raises(error, match="rank"):
            lora_parameter_count(small_model, rank)


def test_lora_budget_agrees_with_add_lora(small_model):
    from course_lib.lora import lora_budget

    budget = lora_budget(small_model, ("c_attn", "mlp.c_fc"))
    base_total = trainable_parameters(small_model)[1]
    model = copy.deepcopy(small_model)
    add_lora(model, rank=3, targets=("c_attn", "mlp.c_fc"))
    assert trainable_parameters(model)[0] == 3 * budget["per_rank"]
    assert budget["base_total"] == base_total  # adapters are not the model's own parameters
    assert lora_budget(model, ("c_attn", "mlp.c_fc")) == budget  # the same after add_lora
    layers = lora_target_layers(small_model, ("c_attn", "mlp.c_fc")).values()
    assert budget["full"] == sum(m.weight.numel() for m in layers)
    assert budget["max_rank"] == min(min(m.weight.shape) for m in layers)
    with pytest.raises(ValueError, match="targets"):
        lora_budget(small_model, ("nothing_like_this",))
