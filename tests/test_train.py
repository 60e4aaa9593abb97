import json
import math
import subprocess
import sys

import pytest
import torch

from course_lib.model import GPT, GPTConfig
from course_lib.train import TrainConfig, lr_at, make_optimizer, train


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32))


def data(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 50, (n,), generator=g)


def config(**kw) -> TrainConfig:
    base = dict(max_steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=5, eval_interval=10,
                eval_batches=2, progress=False, device="cpu", seed=7)
    return TrainConfig(**(base | kw))


def test_overfitting_one_batch_drives_the_loss_down():
    ids = torch.arange(17).repeat(2)  # one repeated window: memorisable
    model = tiny_model()
    history = train(model, ids, None, config(max_steps=80, batch_size=4, eval_interval=0,
                                             learning_rate=1e-2))
    assert history["train_loss"][0] > math.log(50) * 0.9
    assert history["train_loss"][-1] < 0.2


def test_training_lowers_train_and_val_loss_on_learnable_data():
    ids = torch.arange(4000) % 25  # a pattern: the next token is predictable
    history = train(tiny_model(), ids[:3000], ids[3000:], config(max_steps=60, learning_rate=1e-2))
    assert history["val_loss"][-1] < history["val_loss"][0] / 4
    assert history["val_step"] == [10, 20, 30, 40, 50, 60]


def test_seeded_training_on_the_cpu_is_deterministic():
    a = train(tiny_model(), data(), None, config())["train_loss"]
    b = train(tiny_model(), data(), None, config())["train_loss"]
    assert a == b


def test_resuming_gives_the_same_losses_as_not_stopping(tmp_path):
    full = train(tiny_model(), data(), data(500), config())
    ckpt = str(tmp_path / "ckpt.pt")
    first = train(tiny_model(), data(), data(500), config(max_steps=30, checkpoint_path=ckpt,
                                                          checkpoint_interval=12),
                  callback=lambda info: info["step"] < 12)  # stop after step 12
    assert len(first["train_loss"]) == 12
    # a fresh model, resumed from the step-12 checkpoint
    resumed = train(tiny_model(seed=99), data(), data(500),
                    config(checkpoint_path=ckpt, resume=True))
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-6)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-6)


def test_callback_sees_every_step_and_can_stop():
    seen = []
    history = train(tiny_model(), data(), data(500), config(),
                    callback=lambda info: seen.append(info) or info["step"] < 15)
    assert [i["step"] for i in seen] == list(range(1, 16))
    assert "val_loss" in seen[9] and "val_loss" not in seen[8]
    assert len(history["train_loss"]) == 15


def test_schedule_warms_up_then_decays_to_min_lr():
    c = config(max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr=0.1)
    assert lr_at(0, c) == pytest.approx(0.1)
    assert lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(55, c) == pytest.approx(0.55)
    assert lr_at(100, c) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = tiny_model()
    opt = make_optimizer(model, config(), torch.device("cpu"))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names and all(n.endswith("weight") and ("c_" in n) for n in names)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))  # tied lm_head counted once


def test_bad_config():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=0)
    with pytest.raises(ValueError, match="block_size"):
        train(tiny_model(), data(), None, config(block_size=32))


def test_cli_help_and_tiny_run(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "course_lib.train", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--config" in help_text and "shipped" in help_text
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "course_lib.train", "--config", "tiny", "--out",
                    str(out), "--max-steps", "6", "--device", "cpu", "--dropout", "0.2"],
                   capture_output=True, text=True, check=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["val_bits_per_char"] > 0
    model = GPT.load(out / "model.safetensors")
    assert model.config.n_layer == 1 and model.config.dropout == 0.2


def test_bf16_autocast_on_the_cpu_is_opt_in():
    from course_lib.device import autocast_dtype

    assert autocast_dtype("cpu") is None  # CPU results stay exact unless asked
    assert autocast_dtype("cpu", bf16=True) is torch.bfloat16
    assert autocast_dtype("cuda", bf16=False) is None
    ids = torch.arange(17).repeat(2)
    model = tiny_model()
    history = train(model, ids, None, config(max_steps=80, batch_size=4, eval_interval=0,
                                             learning_rate=1e-2, bf16=True))
    assert history["train_loss"][-1] < 0.5  # learns in bf16 too
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights fp32


def test_optimizer_is_fused_adamw_on_the_cpu():
    opt = make_optimizer(tiny_model(), config(), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
