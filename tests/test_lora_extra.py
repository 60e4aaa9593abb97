import copy

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
    optimizer_state_bytes,
    trainable_parameters,
)


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
