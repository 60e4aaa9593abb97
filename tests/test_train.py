"""course_lib.train: the training loop, its schedule and optimizer, checkpoints, reports, CLI."""

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import data, tiny_model

from course_lib.model import GPT, GPTConfig
from course_lib.sampling import generate_text
from course_lib.tokenization import CharTokenizer
from course_lib.train import (
    TrainConfig,
    lr_at,
    make_optimizer,
    sample_report,
    train,
    train_with_reports,
)
from course_lib.training_state import load_checkpoint


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


def test_train_rejects_bad_ids_and_a_block_longer_than_the_model():
    with pytest.raises(ValueError, match="block_size"):
        train(tiny_model(), data(), None, config(block_size=32))
    with pytest.raises(TypeError, match="train_ids must hold integer"):
        train(tiny_model(), data().float(), None, config())
    with pytest.raises(ValueError, match=r"token id 50 in train_ids is outside"):
        train(tiny_model(), torch.arange(100) % 51, None, config())
    with pytest.raises(ValueError, match="val_ids must hold more than block_size=16"):
        train(tiny_model(), data(), data(16), config())
    with pytest.raises(ValueError, match="one 1-D sequence"):
        train(tiny_model(), data().view(2, -1), None, config())


def test_accumulating_micro_batches_gives_the_same_losses_as_one_batch():
    whole = train(tiny_model(), data(), data(500), config(max_steps=6, eval_interval=3))
    parts = train(tiny_model(), data(), data(500),
                  config(max_steps=6, eval_interval=3, micro_batch_size=2))
    assert parts["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-5)
    assert parts["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-5)
    assert parts["tokens_per_s"] == parts["tokens_per_s_per_process"]  # one process


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


# ----- every TrainConfig field rejects nonsense, by name ---------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_CONFIGS = [
    # (field, value, error, what the message says)
    ("max_steps", 0, ValueError, "in [1, "),
    ("max_steps", -5, ValueError, "in [1, "),
    ("max_steps", 2.5, TypeError, "must be an int"),
    ("max_steps", 10**12, ValueError, "in [1, "),
    ("max_steps", True, TypeError, "must be an int"),
    ("batch_size", 0, ValueError, "in [1, "),
    ("batch_size", "8", TypeError, "must be an int"),
    ("block_size", 0, ValueError, "in [1, "),
    ("block_size", -16, ValueError, "in [1, "),
    ("micro_batch_size", 0, ValueError, "in [1, "),
    ("micro_batch_size", 3, ValueError, "must divide TrainConfig.batch_size (32)"),
    ("learning_rate", 0, ValueError, "> 0.0"),
    ("learning_rate", -1e-3, ValueError, "> 0.0"),
    ("learning_rate", NAN, ValueError, "finite"),
    ("learning_rate", INF, ValueError, "finite"),
    ("learning_rate", "3e-4", TypeError, "must be a number"),
    ("learning_rate", None, TypeError, "must be a number"),
    ("min_lr", -1e-5, ValueError, "in [0.0, 0.001]"),
    ("min_lr", 2e-3, ValueError, "in [0.0, 0.001]"),
    ("min_lr", NAN, ValueError, "finite"),
    ("warmup_steps", -1, ValueError, "in [0, "),
    ("warmup_steps", 1.0, TypeError, "must be an int"),
    ("weight_decay", -0.1, ValueError, ">= 0.0"),
    ("weight_decay", NAN, ValueError, "finite"),
    ("weight_decay", INF, ValueError, "finite"),
    ("beta1", 1.0, ValueError, "in [0.0, 1.0)"),
    ("beta1", 1.5, ValueError, "in [0.0, 1.0)"),
    ("beta1", -0.1, ValueError, "in [0.0, 1.0)"),
    ("beta1", NAN, ValueError, "finite"),
    ("beta2", 1.0, ValueError, "in [0.0, 1.0)"),
    ("beta2", -INF, ValueError, "finite"),
    ("grad_clip", -1.0, ValueError, ">= 0.0"),
    ("grad_clip", NAN, ValueError, "finite"),
    ("grad_clip", INF, ValueError, "finite"),
    ("eval_interval", -1, ValueError, "in [0, "),
    ("eval_batches", 0, ValueError, "in [1, "),
    ("seed", -1, ValueError, "in [0, 18446744073709551615]"),
    ("seed", 2**64, ValueError, "in [0, 18446744073709551615]"),
    ("seed", 1.5, TypeError, "must be an int"),
    ("seed", "7", TypeError, "must be an int"),
    ("seed", None, TypeError, "must be an int"),
    ("device", "gpu", ValueError, "not a device name"),
    ("device", "tpu:0", ValueError, "not a device name"),
    ("device", 3.5, ValueError, "not a device name"),
    ("compile", "yes", TypeError, "True or False"),
    ("compile", 1, TypeError, "True or False"),
    ("bf16", "auto", TypeError, "True, False or None"),
    ("resume", None, TypeError, "True or False"),
    ("progress", 0, TypeError, "True or False"),
    ("checkpoint_path", 5, TypeError, "must be a path"),
    ("checkpoint_path", "", ValueError, "is empty"),
    ("checkpoint_interval", -100, ValueError, "in [0, "),
]
if not torch.cuda.is_available():
    BAD_CONFIGS.append(("device", "cuda", ValueError, "no CUDA GPU"))


@pytest.mark.parametrize(("field", "value", "error", "message"), BAD_CONFIGS,
                         ids=[f"{f}={v!r}" for f, v, _, _ in BAD_CONFIGS])
def test_every_field_of_the_config_is_checked(field, value, error, message):
    with pytest.raises(error, match=rf"TrainConfig\.{field}.*{re.escape(message)}"):
        TrainConfig(**{field: value})


def test_resume_needs_a_checkpoint_path():
    with pytest.raises(ValueError, match="TrainConfig.resume needs checkpoint_path"):
        TrainConfig(resume=True)


def test_numpy_and_torch_numbers_are_accepted_as_plain_ones():
    c = TrainConfig(max_steps=np.int64(5), learning_rate=np.float32(0.5), min_lr=torch.tensor(0.1),
                    seed=torch.tensor(3), compile=np.bool_(False), checkpoint_path=Path("c.pt"))
    assert (c.max_steps, c.seed, c.checkpoint_path) == (5, 3, "c.pt")
    assert type(c.max_steps) is int and type(c.learning_rate) is float and c.compile is False


def test_a_global_batch_the_processes_cannot_share_is_refused():
    assert TrainConfig(batch_size=8).accumulation_steps(2) == 1
    assert TrainConfig(batch_size=8, micro_batch_size=2).accumulation_steps(2) == 2
    with pytest.raises(ValueError, match=r"batch_size \(8\) must be a multiple of .* 3 processes"):
        TrainConfig(batch_size=8).accumulation_steps(3)


# ----- checkpoints: written atomically, and a bad one is refused by name ----------------------


def _checkpoint(tmp_path, **kw) -> Path:
    path = tmp_path / "ckpt.pt"
    train(tiny_model(), data(), None, config(max_steps=3, eval_interval=0,
                                             checkpoint_path=str(path), **kw))
    return path


def test_a_checkpoint_is_fsynced_then_renamed_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import os

    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append(("replace", Path(a).name,
                                                                   Path(b).name))
                        or real_replace(a, b))
    path = _checkpoint(tmp_path)
    (replace,) = [c for c in calls if c != "fsync"]
    assert calls[0] == "fsync" and calls.index(replace) > 0  # the data is on disk first
    assert replace[2] == "ckpt.pt" and replace[1].startswith(".ckpt.pt.")  # unique temp name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path, tiny_model())["step"] == 3


def test_a_failed_checkpoint_write_keeps_the_old_one_and_no_temporary_file(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *a, **kw):
        real_save({"partial": torch.zeros(10)}, f)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        train(tiny_model(), data(), None, config(max_steps=3, eval_interval=0,
                                                 checkpoint_path=str(path)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def _bad_garbage(path: Path) -> None:
    path.write_bytes(b"these are not the weights you are looking for" * 20)


def _bad_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_empty(path: Path) -> None:
    path.write_bytes(b"")


def _bad_other_model(path: Path) -> None:
    torch.manual_seed(0)
    other = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    train(other, data(), None, config(max_steps=1, eval_interval=0, checkpoint_path=str(path)))


def _bad_not_a_checkpoint(path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, path)


@pytest.mark.parametrize(("spoil", "message"), [
    (_bad_garbage, "cannot be read"),
    (_bad_truncated, "cannot be read"),
    (_bad_empty, "cannot be read"),
    (_bad_other_model, "is from another model"),
    (_bad_not_a_checkpoint, "is not a training checkpoint"),
])
def test_resuming_from_a_bad_checkpoint_names_the_file(tmp_path, spoil, message):
    path = _checkpoint(tmp_path)
    spoil(path)
    model = tiny_model(seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        train(model, data(), None, config(checkpoint_path=str(path), resume=True))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----- train_with_reports and sample_report: measuring and sampling while training ------------

TEXT = "to be or not to be, that is the question.\n" * 60


@pytest.fixture
def tok() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


def char_model(tok) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                         n_embd=32))


def report_config(**kw) -> TrainConfig:
    base = dict(max_steps=40, batch_size=8, learning_rate=1e-2, warmup_steps=5, eval_interval=20,
                eval_batches=2, progress=False, device="cpu", seed=3)
    return TrainConfig(**(base | kw))


def test_reports_at_the_chosen_steps_and_training_is_unchanged(tok):
    ids = torch.tensor(tok.encode(TEXT))
    report = sample_report(tok, "to ", TEXT[:200], max_new_tokens=12, seed=1)
    seen = []
    history, reports = train_with_reports(char_model(tok), ids, ids[:400], report_config(),
                                          report, [0, 20, 40], callback=seen.append)
    assert [r["step"] for r in reports] == [0, 20, 40]
    # Sampling and measuring in between must not change the training run itself.
    assert history["train_loss"] == train(char_model(tok), ids, ids[:400],
                                          report_config())["train_loss"]
    # At step 0 the model is untrained: its loss is about ln(vocab size).
    assert reports[0]["val_loss"] == pytest.approx(math.log(tok.vocab_size), abs=0.3)
    assert reports[-1]["val_loss"] < reports[1]["val_loss"] < reports[0]["val_loss"]
    assert reports[-1]["bits_per_char"] < reports[0]["bits_per_char"]
    assert all(isinstance(r["sample"], str) and len(r["sample"]) == 12 for r in reports)
    assert seen[0] == {"step": 0, "report": reports[0]}
    assert [i["step"] for i in seen if "report" in i] == [0, 20, 40]
    assert len(seen) == 41 and "train_loss" in seen[1]


def test_the_sample_is_the_seeded_sample_of_the_model(tok):
    model = char_model(tok)
    r = sample_report(tok, "be", TEXT[:100], max_new_tokens=10, seed=5)(model)
    assert r["sample"] == generate_text(model, tok, "be", 10, seed=5)


def test_the_reports_held_out_loss_is_the_cross_entropy_of_the_eval_text(tok):
    from course_lib.evaluation import cross_entropy

    model = char_model(tok)
    report = sample_report(tok, "be", TEXT[:100], max_new_tokens=2)
    assert report.val_loss(model) == cross_entropy(model, tok.encode(TEXT[:100]))
    assert report(model)["val_loss"] == report.val_loss(model)


def test_bad_report_arguments(tok):
    ids = torch.tensor(tok.encode(TEXT))
    report = sample_report(tok, "to", TEXT[:100])
    with pytest.raises(ValueError, match="report_at"):
        train_with_reports(char_model(tok), ids, None, report_config(), report, [0, 41])
    with pytest.raises(ValueError, match="prompt"):
        sample_report(tok, "", TEXT)
    with pytest.raises(ValueError, match="eval_text"):
        sample_report(tok, "to", "t")


def test_a_report_callback_returning_false_stops_early(tok):
    ids = torch.tensor(tok.encode(TEXT))
    report = sample_report(tok, "to", TEXT[:100], max_new_tokens=4)
    history, reports = train_with_reports(char_model(tok), ids, None, report_config(), report,
                                          [0, 5, 30], callback=lambda info: info["step"] < 10)
    assert len(history["step"]) == 10
    assert [r["step"] for r in reports] == [0, 5]


def test_the_progress_bar_redraws_on_its_interval_not_every_step(monkeypatch):
    # In a notebook each redraw is a widget message to the browser, so not one per step.
    import tqdm

    import course_lib.train as train_module

    draws = []

    class CountingBar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "mininterval": 1e9, "file": io.StringIO()})

        def display(self, *args, **kwargs):
            draws.append(self.n)
            return super().display(*args, **kwargs)

    monkeypatch.setattr(train_module, "tqdm", CountingBar)
    train(tiny_model(), data(), None, TrainConfig(max_steps=30, batch_size=4, block_size=16,
                                                  eval_interval=0))
    assert len(draws) <= 3, f"the bar redrew {len(draws)} times in 30 steps"
