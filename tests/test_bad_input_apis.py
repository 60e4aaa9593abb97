"""Bad and edge input to the newer APIs (GGUF, fast inference, quantization, the assistant,
interpretability, the training CLI) and the older ones they build on: each gets a clear
ValueError or TypeError naming the argument, or works; and kills during saving leave no
temporary file behind once the next save has run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from course_lib.files import remove_stale_temporaries, replace_atomically, temporary_pattern
from course_lib.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]


def _temporaries(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(temporary_pattern(path)))


def _all_temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


# ----- kills while saving: the file is the old or the new one, and no temporary file stays ----

# A process that imports torch once, then forks a child per request that saves in a loop,
# so each kill costs a fork, not a Python start.
_SAVER = r"""
import os, signal, sys
import torch
torch.set_num_threads(1)
from course_lib.model import GPT, GPTConfig
from course_lib.train import TrainConfig
from course_lib.training_state import save_checkpoint

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped at once
folder = sys.argv[1]
cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=4, n_head=4, n_embd=128)
torch.manual_seed(0)
models = [GPT(cfg), GPT(cfg)]
print("ready", flush=True)
for line in sys.stdin:
    kind = line.strip()
    pid = os.fork()
    if pid == 0:
        i = 0
        while True:
            m = models[i % 2]
            if kind == "model":
                m.save(os.path.join(folder, "m.safetensors"))
            else:
                opt = torch.optim.SGD(m.parameters(), lr=0.1)
                save_checkpoint(os.path.join(folder, "ckpt.pt"), m, opt, i % 2,
                                torch.Generator(), {}, TrainConfig(progress=False))
            i += 1
    print(pid, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kill_9_while_saving_leaves_a_loadable_file_and_no_temporary_after_the_next_save(
        tmp_path):
    from course_lib.train import TrainConfig
    from course_lib.training_state import load_checkpoint, save_checkpoint

    cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=4, n_head=4, n_embd=128)
    torch.manual_seed(0)
    versions = [GPT(cfg), GPT(cfg)]  # the same two models the saver writes in turn
    model_path, ckpt_path = tmp_path / "m.safetensors", tmp_path / "ckpt.pt"

    def save(kind: str) -> None:
        if kind == "model":
            versions[0].save(model_path)
        else:
            save_checkpoint(ckpt_path, versions[0], torch.optim.SGD(versions[0].parameters(),
                                                                    lr=0.1),
                            0, torch.Generator(), {}, TrainConfig(progress=False))

    def which_version(kind: str) -> int:
        if kind == "model":
            w = GPT.load(model_path).transformer.wte.weight
        else:
            w = load_checkpoint(ckpt_path, GPT(cfg))["model"]["transformer.wte.weight"]
        return next(i for i, v in enumerate(versions) if torch.equal(w,
                                                                     v.transformer.wte.weight))

    save("model")
    save("checkpoint")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO),
                                                       os.environ.get("PYTHONPATH", "")])}
    saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    rng = random.Random(0)
    stale_seen = 0
    try:
        assert saver.stdout.readline().strip() == "ready"
        trial = 0
        # Kill at random moments until two kills have landed mid-write (about a third do).
        while trial < 8 or stale_seen < 2 and trial < 60:
            kind = ("model", "checkpoint")[trial % 2]
            saver.stdin.write(kind + "\n")
            saver.stdin.flush()
            pid = int(saver.stdout.readline())
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)  # let the kernel finish the kill
            assert which_version(kind) in (0, 1)  # whole: the old or the new version
            stale_seen += len(_all_temporaries(tmp_path))
            save(kind)  # the next save removes what the killed writer left
            save("checkpoint" if kind == "model" else "model")  # (the other file's too)
            assert _all_temporaries(tmp_path) == []
            assert which_version(kind) == 0
            trial += 1
    finally:
        saver.kill()
        saver.wait()
    assert stale_seen >= 2  # the kills did land mid-write: the cleanup was exercised
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "m.json", "m.safetensors"]


def test_a_temporary_still_being_written_is_left_alone(tmp_path):
    path = tmp_path / "f.bin"
    seen = {}

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"new")
        seen["removed"] = remove_stale_temporaries(path)  # another saver's cleanup, mid-write
        seen["during"] = _temporaries(path)

    (tmp_path / ".f.bin.dead.tmp").write_bytes(b"left by a killed writer")
    replace_atomically(path, write)
    assert seen["removed"] == [] and len(seen["during"]) == 1  # the live one stays
    assert path.read_bytes() == b"new" and _temporaries(path) == []
    (tmp_path / ".f.bin.dead.tmp").write_bytes(b"left by a killed writer")
    (tmp_path / ".other.bin.x.tmp").write_bytes(b"another file's")
    assert [p.name for p in remove_stale_temporaries(path)] == [".f.bin.dead.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.bin.x.tmp", "f.bin"]


# ----- GGUF: declared sizes that overflow 64 bits ----------------------------------------------


def _hand_built_gguf(path: Path, dims: tuple[int, ...], data: bytes = b"\0" * 64) -> Path:
    """A GGUF v3 file with no metadata and one F32 tensor 'w' of the declared dims (ggml's
    order, fastest first), written byte by byte after the format's specification."""
    import struct

    name = b"w"
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    head += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
    head += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, 0)
    head += b"\0" * (-len(head) % 32)  # the data starts at the next multiple of 32
    path.write_bytes(head + data)
    return path


def test_a_hand_built_gguf_file_reads(tmp_path):
    import numpy as np

    from course_lib.gguf_file import read_gguf

    values = np.arange(8, dtype="<f4")
    f = read_gguf(_hand_built_gguf(tmp_path / "ok.gguf", (4, 2), values.tobytes()))
    assert f.tensors["w"].shape == (2, 4) and f.tensors["w"].n_bytes == 32
    assert np.array_equal(f.read("w"), values.reshape(2, 4))


@pytest.mark.parametrize("dims", [(2**32, 2**32, 2**32), (2, 2**63), (2**64 - 1, 2**64 - 1),
                                  (2**62,), (16, 2**60)])
def test_gguf_dimensions_that_multiply_past_the_file_are_refused_as_corrupt(tmp_path, dims):
    import numpy as np

    from course_lib.gguf_file import read_gguf

    assert int(np.prod(dims, dtype=np.uint64)) * 4 % 2**64 <= 64  # what a wrapping product gave
    path = _hand_built_gguf(tmp_path / "big.gguf", dims)
    with pytest.raises(ValueError, match=r"big\.gguf is corrupt: tensor 'w' has dimensions"):
        read_gguf(path)
