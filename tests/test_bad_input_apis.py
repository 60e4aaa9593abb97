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


def save(kind, i):
    m = models[i % 2]
    if kind == "model":
        m.save(os.path.join(folder, "m.safetensors"))
    else:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        save_checkpoint(os.path.join(folder, "ckpt.pt"), m, opt, i % 2, torch.Generator(), {},
                        TrainConfig(progress=False))


save("model", 0)  # the first checkpoint imports torch's lazy parts: once, here, not per child
save("checkpoint", 0)
print("ready", flush=True)
for line in sys.stdin:
    kind = line.strip()
    pid = os.fork()
    if pid == 0:
        i = 1
        while True:
            save(kind, i)
            i += 1
    print(pid, flush=True)
"""


def _wait_until_gone(pid: int, timeout_s: float = 30) -> None:
    """Wait until the killed process pid no longer exists (its parent reaps it at once)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} still exists {timeout_s} s after SIGKILL")


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
        # Kill at random moments until a kill has landed mid-write (about a third do).
        while trial < 6 or stale_seen < 1 and trial < 60:
            kind = ("model", "checkpoint")[trial % 2]
            path = model_path if kind == "model" else ckpt_path
            first = path.stat().st_ino
            saver.stdin.write(kind + "\n")
            saver.stdin.flush()
            pid = int(saver.stdout.readline())
            deadline = time.monotonic() + 30
            while path.stat().st_ino == first and time.monotonic() < deadline:
                time.sleep(0.002)  # until the child's first save is in: it is saving in a loop
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(pid, signal.SIGKILL)
            _wait_until_gone(pid)  # a loaded machine may take a while: until then it writes on
            assert which_version(kind) in (0, 1)  # whole: the old or the new version
            stale_seen += len(_all_temporaries(tmp_path))
            save(kind)  # the next save removes what the killed writer left
            assert _all_temporaries(tmp_path) == []
            assert which_version(kind) == 0
            trial += 1
        print(f"{trial} kills, {stale_seen} temporary files left by them")
    finally:
        saver.kill()
        saver.wait()
    assert stale_seen >= 1  # the kills did land mid-write: the cleanup was exercised
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


# ----- the tables: (id, call, error, what the message must say) --------------------------------
# Each call gets `m` (a small GPT), `sm, tok` (the shipped model and its tokenizer); every model
# it touches must come out unchanged.


def _small() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()


@pytest.fixture(scope="module")
def shipped():
    from course_lib.pretrained import load_pretrained

    return load_pretrained()


def _state(*models) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in model.state_dict().items()} for model in models]


def _unchanged(before, *models) -> bool:
    after = _state(*models)
    return all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
               for a, b in zip(before, after, strict=True))


def _run_row(call, error, match, shipped) -> None:
    sm, tok = shipped
    m = _small()
    before = _state(m, sm)
    with pytest.raises(error, match=match):
        out = call(m, sm, tok)
        if hasattr(out, "__next__"):
            next(out)
    assert _unchanged(before, m, sm)


def _speculative(m, *args, **kw):
    from course_lib.sampling import PromptLookupDraft, speculative_generate

    return speculative_generate(m, PromptLookupDraft(), [1, 2, 3], *args, **kw)


def _batch(m, *args, **kw):
    from course_lib.sampling import generate_batch

    return generate_batch(m, [[1, 2], [3]], *args, **kw)


GENERATION = [
    ("speculative 10**12 tokens", lambda m, sm, tok: _speculative(m, 10**12), ValueError,
     r"max_new_tokens must be in \[0, 1000000\]"),
    ("speculative a float count", lambda m, sm, tok: _speculative(m, 1e3), TypeError,
     "max_new_tokens must be an int"),
    ("speculative -1 tokens", lambda m, sm, tok: _speculative(m, -1), ValueError,
     "max_new_tokens"),
    ("speculative 0 draft tokens", lambda m, sm, tok: _speculative(m, 4, num_draft_tokens=0),
     ValueError, "num_draft_tokens must be >= 1"),
    ("batch 10**12 tokens", lambda m, sm, tok: _batch(m, 10**12), ValueError,
     r"max_new_tokens must be in \[0, 1000000\]"),
    ("batch 10**7 tokens", lambda m, sm, tok: _batch(m, 10**7), ValueError, "max_new_tokens"),
    ("beam search 10**9 beams", lambda m, sm, tok: __import__("course_lib.sampling").sampling
     .beam_search(m, [1, 2], 10**9, 4), ValueError, r"num_beams must be in \[1, 256\]"),
    ("translate 10**9 beams", lambda m, sm, tok: __import__("course_lib.translation")
     .translation.translate_batch(None, None, ["one"], num_beams=10**9), ValueError,
     r"num_beams must be in \[1, 256\]"),
    ("batch no model", lambda m, sm, tok: __import__("course_lib.sampling").sampling
     .generate_batch(None, [[1]], 2), TypeError, "model must be a course_lib GPT"),
    ("batch a bare list", lambda m, sm, tok: __import__("course_lib.sampling").sampling
     .generate_batch(m, [1, 2], 2), TypeError, r"prompts\[0\] is 1, not a prompt"),
]


@pytest.mark.parametrize(("call", "error", "match"), [r[1:] for r in GENERATION],
                         ids=[r[0] for r in GENERATION])
def test_generation_bad_input(call, error, match, shipped):
    _run_row(call, error, match, shipped)


def test_generation_at_the_bounds_works(small_model):
    from course_lib.sampling import (
        PromptLookupDraft,
        generate,
        generate_batch,
        speculative_generate,
    )

    greedy = generate(small_model, [[1, 2, 3]], 5, temperature=0)
    assert torch.equal(speculative_generate(small_model, PromptLookupDraft(), [1, 2, 3], 5),
                       greedy)
    assert generate_batch(small_model, [[1, 2, 3], [4]], 0) == [[1, 2, 3], [4]]
    assert generate_batch(small_model, [[1, 2, 3]], 5, temperature=0) == greedy.tolist()


# ----- quantization ----------------------------------------------------------------------------


def _q(*args, **kw):
    from course_lib.quantize import quantize

    return quantize(*args, **kw)


def _with_nan(m: GPT) -> GPT:
    bad = _small()
    with torch.no_grad():
        bad.transformer.h[1].mlp.c_fc.weight[3, 5] = float("nan")
    return bad


QUANTIZE = [
    ("a scale past float16", lambda: _q(torch.full((2, 4), 1e7)), ValueError,
     r"w holds values up to 1e\+07 .* float16 scale"),
    ("int4: a scale past float16", lambda: _q(torch.full((2, 32), 5e5), 4, 32), ValueError,
     r"with 4-bit codes the float16 scale stores at most 65504 \* 7"),
    ("a zero-width matrix", lambda: _q(torch.zeros(2, 0)), ValueError, "w has no columns"),
    ("NaN", lambda: _q(torch.tensor([[1.0, float("nan")]])), ValueError,
     r"w holds NaN or infinite values \(first at \[0, 1\]\)"),
    ("inf", lambda: _q(torch.tensor([[1.0], [float("-inf")]])), ValueError,
     r"NaN or infinite values \(first at \[1, 0\]\)"),
    ("integers", lambda: _q(torch.ones(2, 4, dtype=torch.long)), TypeError, "2-D float"),
    ("q4_1 codes above 255", lambda: _dq(__import__("numpy").full(20, 300)), ValueError,
     r"raw must hold byte values in \[0, 255\], got 300"),
    ("q4_1 a negative code", lambda: _dq([-1] * 20), ValueError, "got -1"),
    ("q4_1 floats", lambda: _dq([0.5] * 20), TypeError, "raw must hold byte values"),
    ("q4_1 text", lambda: _dq("abcd" * 5), TypeError, "raw must hold byte values"),
    ("q4_1 a partial block", lambda: _dq(bytes(19)), ValueError, "whole 20-byte blocks"),
]


def _dq(raw):
    from course_lib.quantize import dequantize_q4_1

    return dequantize_q4_1(raw)


@pytest.mark.parametrize(("call", "error", "match"), [r[1:] for r in QUANTIZE],
                         ids=[r[0] for r in QUANTIZE])
def test_quantize_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_nan_weight_stops_quantize_model_by_name_and_leaves_the_model_alone():
    from course_lib.quantize import quantize_model

    bad = _with_nan(_small())
    before = _state(bad)
    with pytest.raises(ValueError, match=r"the weight of transformer\.h\.1\.mlp\.c_fc holds NaN "
                                         r"or infinite values \(first at \[3, 5\]\)"):
        quantize_model(bad, 8)
    after = _state(bad)[0]
    assert all(torch.equal(after[k].nan_to_num(), v.nan_to_num()) for k, v in before[0].items())


def test_quantize_edges_that_work():
    import numpy as np

    from course_lib.quantize import dequantize_q4_1, quantize

    w = torch.full((2, 4), 8.0e6)  # the largest absmax whose int8 scale still fits in float16
    assert torch.allclose(quantize(w).dequantize(), w, rtol=1e-3)
    assert quantize(torch.zeros(0, 4)).dequantize().shape == (0, 4)
    block = bytes(np.array([1.0, 0.5], dtype=np.float16).tobytes()) + bytes(range(16))
    lists = dequantize_q4_1(list(block))
    assert np.array_equal(lists, dequantize_q4_1(np.frombuffer(block, np.uint8)))
    assert lists[1] == 0.5 + 1.0 * 1 and lists[17] == 0.5 + 1.0 * 0  # byte 1: low 1, high 0


# ----- fast attention --------------------------------------------------------------------------


def _tiled(*args, **kw):
    from course_lib.fast_attention import tiled_attention

    return tiled_attention(*args, **kw)


_Q = torch.randn(2, 5, 8)
FAST_ATTENTION = [
    ("batch sizes differ", lambda: _tiled(_Q, torch.randn(3, 5, 8), torch.randn(3, 5, 8)),
     ValueError, "batch dimensions of q, k and v"),
    ("v's batch differs", lambda: _tiled(_Q, _Q, torch.randn(3, 5, 8)), ValueError,
     "batch dimensions"),
    ("dtypes differ", lambda: _tiled(_Q, _Q.double(), _Q), TypeError,
     "q, k and v must share one dtype"),
    ("integer tensors", lambda: _tiled(_Q.long(), _Q.long(), _Q.long()), TypeError,
     "q must hold floating-point numbers"),
    ("zero keys", lambda: _tiled(_Q, torch.randn(2, 0, 8), torch.randn(2, 0, 8)), ValueError,
     r"hold no keys \(T_k = 0\)"),
    ("causal, more queries than keys", lambda: _tiled(torch.randn(2, 6, 8), _Q, _Q, causal=True),
     ValueError, r"more queries \(6\) than keys \(5\)"),
    ("causal given as a string", lambda: _tiled(_Q, _Q, _Q, causal="yes"), TypeError,
     "causal must be True or False"),
    ("a list", lambda: _tiled([[1.0]], _Q, _Q), TypeError, "q must be a torch tensor"),
    ("1-D", lambda: _tiled(torch.randn(8), _Q, _Q), ValueError, "q must have >= 2 dimensions"),
    ("scores: negative bytes", lambda: _bytes("attention_scores_bytes", 10, 2,
                                              bytes_per_value=-4),
     ValueError, "bytes_per_value must be >= 1"),
    ("scores: bytes as a string", lambda: _bytes("attention_scores_bytes", 10, 2,
                                                 bytes_per_value="4"),
     TypeError, "bytes_per_value must be an int"),
    ("scores: length as a string", lambda: _bytes("attention_scores_bytes", "10", 2), TypeError,
     "seq_len must be an int"),
    ("kv: negative bytes", lambda: _bytes("kv_cache_bytes", 1, 1, 8, 4, bytes_per_value=-2),
     ValueError, "bytes_per_value must be >= 1"),
    ("kv: layers as a float", lambda: _bytes("kv_cache_bytes", 1.5, 1, 8, 4), TypeError,
     "n_layer must be an int"),
]


def _bytes(name, *args, **kw):
    from course_lib import fast_attention

    return getattr(fast_attention, name)(*args, **kw)


@pytest.mark.parametrize(("call", "error", "match"), [r[1:] for r in FAST_ATTENTION],
                         ids=[r[0] for r in FAST_ATTENTION])
def test_fast_attention_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_tiled_attention_edges_that_work_equal_torch():
    import torch.nn.functional as F

    q, k, v = torch.randn(2, 3, 6, 8), torch.randn(1, 3, 9, 8), torch.randn(1, 3, 9, 4)
    # broadcasting batch dimensions, and causal with fewer queries than keys (a KV cache)
    want = F.scaled_dot_product_attention(q, k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1),
                                          attn_mask=torch.ones(6, 9, dtype=torch.bool).tril(3))
    torch.testing.assert_close(_tiled(q, k, v, causal=True, block_q=4, block_k=4), want)
    one = torch.randn(1, 1, 8)
    torch.testing.assert_close(_tiled(one, one, one, causal=True), one)  # one key: its value


# ----- the assistant ---------------------------------------------------------------------------


def _ex(choices=("A", "B")):
    from course_lib.assistant import Instruction

    return Instruction("speaker", "Who says this, A or B?\nHello there", "A", choices, "x")


def _a(name):
    from course_lib import assistant

    return getattr(assistant, name)


def _char_tokenizer():
    from course_lib.tokenization import CharTokenizer

    return CharTokenizer.from_text("abc ABC?\n#:")


def _dpo_step(sm, tok, pairs):
    import copy

    ref = copy.deepcopy(sm)
    return _a("dpo_step")(sm, ref, torch.optim.SGD(sm.parameters(), lr=1.0), tok, pairs)


ASSISTANT = [
    ("stream_reply 0 tokens", lambda m, sm, tok: _a("stream_reply")(
        sm, tok, [{"role": "user", "content": "hi"}], max_new_tokens=0), ValueError,
     "max_new_tokens must be >= 1, got 0"),
    ("stream_reply no model", lambda m, sm, tok: _a("stream_reply")(
        None, tok, [{"role": "user", "content": "hi"}]), TypeError, "model must be a course_lib"),
    ("sft_train on dicts", lambda m, sm, tok: _a("sft_train")(
        sm, tok, [{"question": "q", "answer": "a"}], steps=1, progress=False), TypeError,
     r"examples\[0\] must be one Instruction \(make_instructions"),
    ("sft_train on one Instruction", lambda m, sm, tok: _a("sft_train")(
        sm, tok, _ex(), steps=1, progress=False), TypeError, r"wrap one in a list"),
    ("sft_train, a character tokenizer", lambda m, sm, tok: _a("sft_train")(
        sm, _char_tokenizer(), [_ex()], steps=1, progress=False), TypeError,
     "tokenizer must be a BPETokenizer"),
    ("sft_batch block_size 0", lambda m, sm, tok: _a("sft_batch")(tok, [_ex()], block_size=0),
     ValueError, "block_size must be >= 1, got 0"),
    ("sft_batch block_size -3", lambda m, sm, tok: _a("sft_batch")(tok, [_ex()], block_size=-3),
     ValueError, "block_size must be >= 1, got -3"),
    ("sft_batch block_size 2.5", lambda m, sm, tok: _a("sft_batch")(tok, [_ex()],
                                                                     block_size=2.5),
     TypeError, "block_size must be an int"),
    ("dpo_loss on strings", lambda m, sm, tok: _a("dpo_loss")("a", 1.0, 1.0, 1.0), TypeError,
     "policy_chosen must be a torch tensor"),
    ("dpo_loss on int tensors", lambda m, sm, tok: _a("dpo_loss")(
        torch.tensor([1]), torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([1.0])),
     TypeError, "policy_chosen must hold floating-point numbers"),
    ("dpo_step one-element pairs", lambda m, sm, tok: _dpo_step(sm, tok, [("q",)]), ValueError,
     r"pairs\[0\] must be a \(question, chosen, rejected\) tuple"),
    ("dpo_step a 3-letter string", lambda m, sm, tok: _dpo_step(sm, tok, ["abc"]), ValueError,
     r"pairs\[0\] must be a \(question, chosen, rejected\) tuple"),
    ("dpo_step a number in a pair", lambda m, sm, tok: _dpo_step(sm, tok, [("q", "a", 3)]),
     TypeError, r"pairs\[0\] \(rejected\) must be a str"),
    ("dpo_step an empty answer", lambda m, sm, tok: _dpo_step(sm, tok, [("q", "", "b")]),
     ValueError, r"pairs\[0\] \(chosen\) is empty"),
    ("dpo_train with itself", lambda m, sm, tok: _a("dpo_train")(
        sm, sm, tok, [("q", "a", "b")], steps=1, progress=False), ValueError,
     "reference must be a separate"),
    ("evaluate an example with no choices", lambda m, sm, tok: _a("evaluate_instructions")(
        sm, tok, [_ex(choices=())], generate=False), ValueError, r"examples\[0\] has no choices"),
    ("choice_scores on strings", lambda m, sm, tok: _a("choice_scores")(sm, tok, ["q"]),
     TypeError, r"examples\[0\] must be one Instruction \(make_instructions"),
    ("answer_loss no model", lambda m, sm, tok: _a("answer_loss")("model", tok, [_ex()]),
     TypeError, "model must be a course_lib GPT"),
]


@pytest.mark.parametrize(("call", "error", "match"), [r[1:] for r in ASSISTANT],
                         ids=[r[0] for r in ASSISTANT])
def test_assistant_bad_input(call, error, match, shipped):
    _run_row(call, error, match, shipped)


def test_dpo_loss_takes_plain_numbers_as_torch_does_with_tensors():
    import torch.nn.functional as F

    got = _a("dpo_loss")(-1.0, -3.0, -2.0, -2.5, beta=0.5)
    assert got.item() == pytest.approx(-F.logsigmoid(torch.tensor(0.5 * (1.0 - -0.5))).item())


# ----- interpretability ------------------------------------------------------------------------


def _i(name):
    from course_lib import interpret

    return getattr(interpret, name)


INTERPRET = [
    ("logit_lens None", lambda m, sm, tok: _i("logit_lens")(None, [1, 2]), TypeError,
     "model must be a course_lib GPT"),
    ("logit_lens a string", lambda m, sm, tok: _i("logit_lens")("gpt", [1, 2]), TypeError,
     "model must be a course_lib GPT"),
    ("logit_lens a bare torch module", lambda m, sm, tok: _i("logit_lens")(
        torch.nn.Linear(2, 2), [1, 2]), TypeError, "model must be a course_lib GPT"),
    ("attention_maps None", lambda m, sm, tok: _i("attention_maps")(None, [1]), TypeError,
     "model must be"),
    ("hidden_states None", lambda m, sm, tok: _i("hidden_states")(None, [1]), TypeError,
     "model must be"),
    ("head_ablation_losses None", lambda m, sm, tok: _i("head_ablation_losses")(None, [[1, 2]]),
     TypeError, "model must be"),
    ("induction_scores None", lambda m, sm, tok: _i("induction_scores")(None), TypeError,
     "model must be"),
    ("parameter_counts a dict", lambda m, sm, tok: _i("parameter_counts")({}), TypeError,
     "model must be a torch nn.Module"),
    ("model_trace None", lambda m, sm, tok: _i("model_trace")(None, tok, [1]), TypeError,
     "model must be"),
    ("logit_lens position past the end", lambda m, sm, tok: _i("logit_lens")(m, [1, 2], 2),
     ValueError, r"position must be in \[-2, 1\]"),
]


@pytest.mark.parametrize(("call", "error", "match"), [r[1:] for r in INTERPRET],
                         ids=[r[0] for r in INTERPRET])
def test_interpret_bad_input(call, error, match, shipped):
    _run_row(call, error, match, shipped)


# ----- the training command line: refused at once, before anything is written ------------------


@pytest.mark.parametrize(("flags", "match"), [
    (["--eval-chars", "0"], r"--eval-chars .* must be >= 1, got 0"),
    (["--eval-chars", "-1"], r"--eval-chars .* must be >= 1, got -1"),
    (["--out", ""], "--out is empty"),
    (["--out", "   "], "--out is empty"),
    (["--dropout", "1.5"], r"--dropout must be in \[0.0, 1.0\)"),
    (["--tokenizer", "no/such/tokenizer.json"], "--tokenizer 'no/such/tokenizer.json': no such"),
    (["--init-from", "no/such/model.safetensors"], "--init-from .*: no such file"),
    (["--device", "cuda:7"], "device"),
    (["--device", "gpu"], "is not a device name"),
])
def test_training_cli_refuses_bad_flags_before_writing(flags, match, tmp_path, monkeypatch):
    from course_lib.train import main

    monkeypatch.chdir(tmp_path)
    if "--out" not in flags:
        flags = ["--out", str(tmp_path / "run"), *flags]
    with pytest.raises(ValueError, match=match):
        main(["--config", "tiny", "--max-steps", "1", *flags])
    assert list(tmp_path.iterdir()) == []


def test_training_cli_refuses_a_file_as_out(tmp_path):
    from course_lib.train import main

    (tmp_path / "f").write_text("mine")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        main(["--out", str(tmp_path / "f")])
    assert (tmp_path / "f").read_text() == "mine"


# ----- older APIs: attention, RoPE, devices, checkpoints, LoRA ---------------------------------


def _sdp(*args, **kw):
    from course_lib.attention import scaled_dot_product

    return scaled_dot_product(*args, **kw)


def _mha(x, **kw):
    from course_lib.attention import MultiHeadAttention

    torch.manual_seed(0)
    return MultiHeadAttention(32, 4, **kw)(x)


def _rope(*args, **kw):
    from course_lib.positional import apply_rope

    return apply_rope(*args, **kw)


_X = torch.randn(2, 3, 4)
OLDER = [
    ("sdp lists", lambda: _sdp([[1.0]], [[1.0]], [[1.0]]), TypeError, "q must be a torch tensor"),
    ("sdp 1-D", lambda: _sdp(torch.randn(4), torch.randn(4), torch.randn(4)), ValueError,
     "q must have >= 2 dimensions"),
    ("sdp d differs", lambda: _sdp(_X, torch.randn(2, 3, 5), _X), ValueError,
     "q and k must share their last dim"),
    ("sdp lengths differ", lambda: _sdp(_X, _X, torch.randn(2, 5, 4)), ValueError,
     r"k and v must have the same length \(T_k\)"),
    ("sdp batches differ", lambda: _sdp(_X, torch.randn(3, 3, 4), torch.randn(3, 3, 4)),
     ValueError, "batch dimensions"),
    ("sdp a mask that does not fit", lambda: _sdp(_X, _X, _X, mask=torch.ones(5, 5).bool()),
     ValueError, r"mask of shape \(5, 5\) does not fit the scores \(2, 3, 3\)"),
    ("sdp a float mask", lambda: _sdp(_X, _X, _X, mask=torch.ones(3, 3)), TypeError,
     "mask must be a bool tensor"),
    ("sdp a list mask", lambda: _sdp(_X, _X, _X, mask=[[True]]), TypeError,
     "mask must be a torch tensor"),
    ("mha a list", lambda: _mha([[1.0] * 32]), TypeError, "x must be a torch tensor"),
    ("mha 2-D", lambda: _mha(torch.randn(5, 32)), ValueError,
     r"x must have shape \(batch, time, n_embd=32\), got \(5, 32\)"),
    ("mha wrong width", lambda: _mha(torch.randn(1, 5, 16)), ValueError, "n_embd=32"),
    ("mha token ids", lambda: _mha(torch.ones(1, 5, 32, dtype=torch.long)), TypeError,
     "x must hold floating-point numbers"),
    ("rope negative offset", lambda: _rope(torch.randn(1, 2, 5, 8), offset=-3), ValueError,
     r"offset \(the position of the first token\) must be >= 0, got -3"),
    ("rope offset as a float", lambda: _rope(torch.randn(1, 2, 5, 8), offset=1.5), TypeError,
     "offset .* must be an int"),
    ("rope a list", lambda: _rope([[1.0, 2.0]]), TypeError, "x must be a torch tensor"),
    ("rope integers", lambda: _rope(torch.ones(2, 4, dtype=torch.long)), TypeError,
     "floating-point"),
    ("lora targets in one string", lambda: _lora("c_attn, c_proj"), ValueError,
     r"one string holding several names .* like \('c_attn', 'c_proj'\)"),
    ("lora targets with a space", lambda: _lora("c_attn c_fc"), ValueError,
     r"\('c_attn', 'c_fc'\)"),
    ("lora no model", lambda: __import__("course_lib.lora").lora.add_lora(None), TypeError,
     "model must be a torch nn.Module"),
]


def _lora(targets):
    from course_lib.lora import add_lora

    m = _small()
    before = _state(m)
    try:
        return add_lora(m, targets=targets)
    finally:
        assert _unchanged(before, m) and all(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize(("call", "error", "match"), [r[1:] for r in OLDER],
                         ids=[r[0] for r in OLDER])
def test_older_apis_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_lora_one_target_as_a_string_is_that_one_layer():
    from course_lib.lora import LoRALinear, add_lora

    one, listed = add_lora(_small(), targets="c_attn"), add_lora(_small(), targets=("c_attn",))
    wrapped = sorted(n for n, mod in one.named_modules() if isinstance(mod, LoRALinear))
    assert wrapped == sorted(n for n, mod in listed.named_modules() if isinstance(mod, LoRALinear))
    assert wrapped == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]


@pytest.mark.parametrize("value", ["cuda", "cuda:0", "CUDA", "tpu", "gpu", "banana", "mps"])
def test_a_device_this_machine_lacks_is_named_with_what_it_has(value, monkeypatch):
    from course_lib.device import default_device
    from course_lib.pretrained import load_pretrained

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv("COURSE_DEVICE", value)
    with pytest.raises(ValueError, match=r"COURSE_DEVICE .*this machine has 'cpu'"):
        default_device()
    with pytest.raises(ValueError, match=r"map_location .*this machine has 'cpu'$"):
        load_pretrained(device=value)
    monkeypatch.setenv("COURSE_DEVICE", " CPU ")
    assert default_device() == torch.device("cpu")


def test_gpt_load_refuses_integer_or_non_finite_weights(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = _small().save(tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    good = load_file(str(path))
    key = "transformer.h.0.mlp.c_fc.weight"
    for name, change, match in [
        ("int64", lambda t: {k: v.long() for k, v in t.items()},
         r"tensor \S+ holds torch.int64, not floating-point weights"),
        ("nan", lambda t: {**t, key: t[key].clone().index_fill_(0, torch.tensor([2]),
                                                                 float("nan"))},
         rf"tensor {key} holds NaN or infinite values"),
        ("inf", lambda t: {**t, key: t[key].clone().index_fill_(0, torch.tensor([0]),
                                                                 float("inf"))},
         rf"tensor {key} holds NaN or infinite values"),
    ]:
        bad = tmp_path / f"{name}.safetensors"
        save_file(change(good), str(bad), metadata=meta)
        with pytest.raises(ValueError, match=match):
            GPT.load(bad)
    half = tmp_path / "half.safetensors"  # float16 weights are weights: they load
    save_file({k: v.half() for k, v in good.items()}, str(half), metadata=meta)
    assert torch.equal(GPT.load(half).transformer.wte.weight, good["transformer.wte.weight"]
                       .half().float())
