"""course_lib.train under torchrun: two gloo processes on loopback train exactly like one."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_training import data, tiny_model

from course_lib.model import GPT
from course_lib.train import TrainConfig, train

WORKER = Path(__file__).parent / "tiny_training.py"
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300  # a healthy run takes seconds; a hang must not stall the suite

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no gloo backend",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """torchrun --nproc_per_node=nproc ARGS on 127.0.0.1, killed (all of it) after TIMEOUT_S."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    env = os.environ | {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
                        "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and the workers it started
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def base_config(**kw) -> dict:
    return dict(max_steps=6, batch_size=8, learning_rate=1e-2, warmup_steps=2,
                eval_interval=3, eval_batches=2, progress=False, device="cpu", seed=7) | kw


def run_worker(tmp_path: Path, name: str, config: dict, **spec) -> subprocess.CompletedProcess:
    spec_path = tmp_path / f"{name}.json"
    spec_path.write_text(json.dumps({"config": config, "out": str(tmp_path / f"{name}.pt"),
                                     **spec}))
    return torchrun([str(WORKER), str(spec_path)])


def test_two_processes_match_one_then_resume_in_one(tmp_path):
    # One process, the whole global batch of 8 rows at once; its step-4 checkpoint is kept.
    one_ckpt = tmp_path / "one.pt"
    one = train(tiny_model(), data(), data(600, seed=1),
                TrainConfig(**base_config(checkpoint_path=str(one_ckpt), checkpoint_interval=4)),
                callback=lambda info: info["step"] < 4)
    at_step_4 = torch.load(one_ckpt, weights_only=True)["model"]
    full = train(tiny_model(), data(), data(600, seed=1), TrainConfig(**base_config()))

    # Two processes, each 2 micro-batches of 2 rows (accumulated under no_sync): the same 8
    # rows a step. Stopped by rank 0's callback after step 4, checkpointing there.
    ddp_ckpt = tmp_path / "ddp_ckpt.pt"
    result = run_worker(tmp_path, "ddp", base_config(micro_batch_size=2,
                                                     checkpoint_path=str(ddp_ckpt),
                                                     checkpoint_interval=4), stop_at=4)
    assert result.returncode == 0, result.stdout[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert len(ddp["history"]["train_loss"]) == 4
    assert ddp["history"]["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    assert ddp["history"]["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
    assert ddp["history"]["step"] == [1, 2, 3, 4]
    n_embd = tiny_model().config.n_embd
    for name, value in at_step_4.items():
        got = ddp["state"][name]
        if name.endswith("attn.c_attn.bias"):
            # The key bias adds the same q.b to every score of a query, which softmax ignores:
            # its true gradient is 0, so it holds only rounding noise, which Adam scales up to
            # a step of ~lr * noise / eps. Summing in another order moves it by ~1e-5.
            keys = slice(n_embd, 2 * n_embd)
            assert torch.allclose(got[keys], value[keys], atol=1e-4), name
            got, value = got[torch.arange(3 * n_embd) // n_embd != 1], \
                value[torch.arange(3 * n_embd) // n_embd != 1]
        assert torch.allclose(got, value, atol=1e-5), name
    rates = ddp["history"]
    assert [r / 2 for r in rates["tokens_per_s"]] == pytest.approx(
        rates["tokens_per_s_per_process"])

    # The two-process checkpoint resumes in one process (a different initial model, since the
    # checkpoint replaces it) with the losses one process would have had.
    resumed = train(tiny_model(seed=99), data(), data(600, seed=1),
                    TrainConfig(**base_config(checkpoint_path=str(ddp_ckpt), resume=True)))
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-5)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-5)


def test_one_failing_rank_ends_the_job_with_its_message(tmp_path):
    # Rank 1 fails on a bad argument while rank 0 waits for it inside DDP's first broadcast.
    result = run_worker(tmp_path, "bad", base_config(), bad_rank=1)
    assert result.returncode != 0
    assert "TrainConfig.learning_rate must be > 0.0, got -1.0" in result.stdout
    assert not (tmp_path / "bad.pt").exists()


def test_the_command_line_runs_under_torchrun(tmp_path):
    from course_lib.data import load_corpus
    from course_lib.tokenization import BPETokenizer

    tok_path = tmp_path / "tok.json"
    BPETokenizer.train(load_corpus("train")[:20_000], 300).save(tok_path)
    out = tmp_path / "run"
    result = torchrun(["-m", "course_lib.train", "--config", "tiny", "--out", str(out),
                       "--tokenizer", str(tok_path), "--max-steps", "4", "--device", "cpu",
                       "--micro-batch-size", "2"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "global batch 8 = 2 x 2 rows x 2 accumulation step(s)" in result.stdout
    assert "for the whole job" in result.stdout and "per process" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    assert summary["median_tokens_per_s_per_process"] == pytest.approx(
        summary["median_tokens_per_s"] / 2)
    model = GPT.load(out / "model.safetensors")  # written by rank 0, loads in one process
    assert model.config.vocab_size == 300

    # A global batch that two processes cannot share evenly: every rank stops, and says why.
    bad = torchrun(["-m", "course_lib.train", "--config", "tiny", "--out", str(tmp_path / "b"),
                    "--tokenizer", str(tok_path), "--batch-size", "5", "--device", "cpu"])
    assert bad.returncode != 0
    assert "TrainConfig.batch_size (5) must be a multiple of" in bad.stdout
