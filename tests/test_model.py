import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from course_lib.model import GPT, GPTConfig


def test_same_logits_as_transformers_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=101, n_positions=40, n_embd=48, n_layer=3, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "eager"  # the SDPA path does not return attention weights
    hf = GPT2LMHeadModel(config).eval()
    ours = GPT.from_hf_gpt2(hf).eval()
    idx = torch.randint(0, 101, (2, 40))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = ours(idx)
        logits_w, _, attn = ours(idx, return_attention=True)
        hf_attn = hf(idx, output_attentions=True).attentions
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.allclose(logits_w, expected, atol=1e-4)
    for a, b in zip(attn, hf_attn, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    labels = idx.clone()
    with torch.no_grad():
        hf_loss = hf(idx, labels=labels).loss
        _, loss = ours(idx[:, :-1], idx[:, 1:])
    assert loss.item() == pytest.approx(hf_loss.item(), abs=1e-5)


def test_kv_cache_matches_full_forward(small_model):
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full, _ = small_model(idx)
        cache = small_model.new_cache()
        parts = [small_model(idx[:, :7], kv_cache=cache)[0]]
        for t in range(7, 20):
            parts.append(small_model(idx[:, t : t + 1], kv_cache=cache)[0])
    assert cache.length == 20
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_kv_cache_writes_in_place_and_refuses_overflow(small_model):
    idx = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        cache = small_model.new_cache()
        small_model(idx, kv_cache=cache)
        buffer = cache.keys[0].untyped_storage().data_ptr()
        small_model(idx[:, :1], kv_cache=cache)
    # A new token is written into the buffer allocated once, not into a fresh copy.
    assert cache.keys[0].untyped_storage().data_ptr() == buffer
    assert cache.keys[0].shape[-2] == cache.values[1].shape[-2] == 6
    k = torch.zeros(1, 4, small_model.config.block_size, 8)
    with pytest.raises(ValueError, match="at most"):
        cache.update(0, k, k)


def _scaled_up(config: GPTConfig, scale: float = 20.0) -> GPT:
    """A seeded model whose weights are scaled up, so its logits are large (about 100) and an
    error in positions cannot hide under a tolerance, as it can with random-init logits."""
    torch.manual_seed(0)
    m = GPT(config).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m


LLAMA_TINY = dict(vocab_size=50, block_size=24, n_layer=3, n_head=4, n_kv_head=2, n_embd=32,
                  position="rope", norm="rmsnorm", mlp="swiglu", mlp_hidden=40, bias=False,
                  rope_base=100000.0, tie_embeddings=False)


@pytest.mark.parametrize("config", [
    GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=16, position="rope"),
    GPTConfig(**LLAMA_TINY),
], ids=["gpt-rope", "llama-gqa"])
def test_rope_model_with_cache_in_unequal_chunks(config):
    # Issue 10, bug 1: layers after the first read the rotary offset after layer 0 had already
    # extended the cache, so a prompt fed as 9 + 3 tokens gave different logits (error ~40).
    m = _scaled_up(config)
    assert m.transformer.wpe is None
    idx = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        full, _ = m(idx)
        cache = m.new_cache()
        a, _ = m(idx[:, :9], kv_cache=cache)
        b, _ = m(idx[:, 9:], kv_cache=cache)
        one_by_one = m.new_cache()
        singles = [m(idx[:, t : t + 1], kv_cache=one_by_one)[0] for t in range(12)]
    assert full.abs().max() > 20
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-3)
    assert torch.allclose(torch.cat(singles, 1), full, atol=1e-3)


def test_rope_greedy_is_the_same_with_and_without_the_cache():
    from course_lib.sampling import generate

    m = _scaled_up(GPTConfig(**LLAMA_TINY), scale=3.0)
    prompt = torch.randint(0, 50, (2, 9))
    cached = generate(m, prompt, 12, temperature=0)
    plain = generate(m, prompt, 12, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)
    assert len(set(cached[0, 9:].tolist())) > 2  # a real sequence, not one token repeated


def test_llama_config_builds_the_llama_pieces():
    m = GPT(GPTConfig(**LLAMA_TINY))
    block = m.transformer.h[0]
    assert isinstance(block.ln_1, torch.nn.RMSNorm) and isinstance(m.transformer.ln_f,
                                                                    torch.nn.RMSNorm)
    assert block.attn.c_attn.weight.shape == (32 + 2 * 2 * 8, 32)  # q: 4 heads, k and v: 2
    assert block.attn.c_attn.bias is None and block.mlp.c_proj.bias is None
    assert block.mlp.c_fc.weight.shape == (2 * 40, 32)  # [W_gate; W_up]
    assert m.lm_head.weight is not m.transformer.wte.weight
    x = torch.randn(1, 5, 32)
    gate, up = block.mlp.c_fc(x).chunk(2, -1)
    expected = block.mlp.c_proj(torch.nn.functional.silu(gate) * up)
    assert torch.allclose(block.mlp(x), expected)
    cache = m.new_cache()
    with torch.no_grad():
        m(torch.randint(0, 50, (2, 7)), kv_cache=cache)
    assert cache.keys[0].shape == (2, 2, 7, 8)  # only the 2 key/value heads are cached


def test_untied_model_saves_and_loads_its_head(tmp_path):
    m = _scaled_up(GPTConfig(**LLAMA_TINY), scale=1.0)
    loaded = GPT.load(m.save(tmp_path / "llama.safetensors")).eval()
    idx = torch.randint(0, 50, (1, 10))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], m(idx)[0])
    assert loaded.lm_head.weight is not loaded.transformer.wte.weight
    assert loaded.config == m.config


def test_kv_cache_grows_instead_of_allocating_the_whole_context():
    m = GPT(GPTConfig(vocab_size=50, block_size=1000, n_layer=1, n_head=2, n_embd=8)).eval()
    cache = m.new_cache()
    with torch.no_grad():
        m(torch.randint(0, 50, (1, 10)), kv_cache=cache)
        room = cache._keys[0].shape[2]
        for _ in range(room - 10 + 1):  # one past the first room: it must grow
            m(torch.randint(0, 50, (1, 1)), kv_cache=cache)
    assert room < 1000 and cache._keys[0].shape[2] == 2 * room
    assert cache.length == room + 1
    sized = m.new_cache(capacity=30)
    with torch.no_grad():
        m(torch.randint(0, 50, (1, 4)), kv_cache=sized)
    assert sized._keys[0].shape[2] == 30


def test_attention_weights_rows_sum_to_one_and_are_causal(small_model):
    idx = torch.randint(0, 97, (1, 10))
    _, _, attn = small_model(idx, return_attention=True)
    assert len(attn) == 2 and attn[0].shape == (1, 4, 10, 10)
    for w in attn:
        assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5)
        assert torch.all(w.triu(diagonal=1) == 0)


def test_head_mask_switches_a_head_off(small_model):
    idx = torch.randint(0, 97, (1, 10))
    base, _ = small_model(idx)
    mask = torch.ones(2, 4)
    assert torch.allclose(small_model(idx, head_mask=mask)[0], base)
    mask[0, 1] = 0
    assert not torch.allclose(small_model(idx, head_mask=mask)[0], base, atol=1e-4)


def test_loss_at_init_is_about_ln_vocab(small_model):
    torch.manual_seed(1)
    idx = torch.randint(0, 97, (8, 32))
    _, loss = small_model(idx[:, :-1], idx[:, 1:])
    assert loss.item() == pytest.approx(torch.log(torch.tensor(97.0)).item(), rel=0.05)


def test_save_load_round_trip(tmp_path, small_model):
    path = small_model.save(tmp_path / "m.safetensors")
    assert path.with_suffix(".json").exists()
    loaded = GPT.load(path).eval()
    idx = torch.randint(0, 97, (1, 16))
    assert torch.equal(loaded(idx)[0], small_model(idx)[0])
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_corrupt_checkpoint_is_refused_and_left_alone(tmp_path, small_model):
    path = small_model.save(tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:200])
    before = _digest(path)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        GPT.load(path)
    assert _digest(path) == before


def _write_checkpoint(path, model, config_text=None):
    """A safetensors file with model's weights and, if given, config_text as its metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(tensors, str(path), metadata=None if config_text is None else {"config": config_text})
    return path


def test_mismatched_checkpoint_is_refused(tmp_path, small_model):
    other = '{"vocab_size": 97, "block_size": 32, "n_layer": 3, "n_head": 4, "n_embd": 32}'
    path = _write_checkpoint(tmp_path / "m.safetensors", small_model, other)
    before = _digest(path)
    with pytest.raises(ValueError, match="does not match its config"):
        GPT.load(path)
    assert _digest(path) == before
    _write_checkpoint(path, small_model, "{not json")
    with pytest.raises(ValueError, match="corrupt config"):
        GPT.load(path)
    # A file without embedded config (older checkpoints) falls back to the .json beside it.
    _write_checkpoint(path, small_model)
    with pytest.raises(ValueError, match="missing"):
        GPT.load(path)
    path.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="corrupt config"):
        GPT.load(path)
    small_model_config = json.dumps(dataclasses.asdict(small_model.config))
    path.with_suffix(".json").write_text(small_model_config)
    idx = torch.randint(0, 97, (1, 8))
    assert torch.equal(GPT.load(path).eval()(idx)[0], small_model(idx)[0])


def test_load_reads_the_config_stored_with_the_weights(tmp_path, small_model):
    # Weights and config are replaced by one rename: a kill before the .json copy is renamed
    # leaves a stale .json beside new weights, and the checkpoint still loads as saved.
    path = small_model.save(tmp_path / "m.safetensors")
    path.with_suffix(".json").write_text('{"vocab_size": 5, "n_layer": 9}')
    idx = torch.randint(0, 97, (1, 8))
    assert torch.equal(GPT.load(path).eval()(idx)[0], small_model(idx)[0])


def test_save_refuses_bad_dtype_and_a_json_path_and_leaves_files_alone(tmp_path, small_model):
    path = small_model.save(tmp_path / "m.safetensors")
    before = (_digest(path), _digest(path.with_suffix(".json")))
    for dtype in (torch.int8, torch.int64, torch.bool, "float32"):
        with pytest.raises(ValueError, match="floating-point"):
            small_model.save(path, dtype=dtype)
    with pytest.raises(ValueError, match="overwrite"):
        small_model.save(tmp_path / "m.json")
    with pytest.raises(ValueError, match="directory"):
        small_model.save(tmp_path)
    with pytest.raises(TypeError, match="path"):
        small_model.save(3)
    assert (_digest(path), _digest(path.with_suffix(".json"))) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    half = GPT.load(small_model.save(tmp_path / "h.safetensors", dtype=torch.bfloat16))
    w = small_model.transformer.wte.weight
    assert torch.equal(half.transformer.wte.weight, w.to(torch.bfloat16).float())


def test_failed_save_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path, small_model,
                                                                      monkeypatch):
    path = small_model.save(tmp_path / "m.safetensors")
    before = (_digest(path), _digest(path.with_suffix(".json")))

    def half_written(self, data):  # the weights' bytes go to disk through Path.write_bytes
        with open(self, "wb") as f:
            f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_written)
    with pytest.raises(OSError, match="No space"):
        small_model.save(path)
    assert (_digest(path), _digest(path.with_suffix(".json"))) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_bad_input_gets_clear_errors(small_model):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        small_model(torch.tensor([[1, 2, 97]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        small_model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="block_size"):
        small_model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        small_model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        small_model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="position"):
        GPTConfig(position="alibi")


BAD_FORWARD_ARGS = [
    (dict(targets=torch.tensor([[1, 2, 97]])), ValueError, "target 97 is outside"),
    (dict(targets=torch.tensor([[1, -2, 3]])), ValueError, "target -2 is outside"),
    (dict(targets=torch.tensor([[1.0, 2.0, 3.0]])), TypeError, "targets must be"),
    (dict(targets=torch.tensor([[1, 2]])), ValueError, "idx's shape"),
    (dict(targets=[[1, 2, 3]]), TypeError, "targets must be"),
    (dict(head_mask=torch.ones(4)), ValueError, r"head_mask must be .*\(2, 4\)"),
    (dict(head_mask=[[1, 1, 1, 1]] * 2), ValueError, "head_mask must be"),
    (dict(kv_cache="cache"), TypeError, "KVCache"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD_FORWARD_ARGS)
def test_forward_refuses_bad_optional_arguments(small_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        small_model(torch.tensor([[1, 2, 3]]), **kwargs)


def test_forward_refuses_a_cache_of_another_model_or_batch(small_model):
    from course_lib.attention import KVCache

    with pytest.raises(ValueError, match="3 layers"):
        small_model(torch.tensor([[1, 2]]), kv_cache=KVCache(3, 32))
    cache = small_model.new_cache()
    small_model(torch.tensor([[1, 2]]), kv_cache=cache)
    with pytest.raises(ValueError, match="batch of 1"):
        small_model(torch.tensor([[1], [2]]), kv_cache=cache)


BAD_CONFIGS = [
    (dict(n_kv_head=3), "divisible by n_kv_head"),
    (dict(n_kv_head=0), "n_kv_head"),
    (dict(norm="batchnorm"), "norm"),
    (dict(mlp="sigmoid"), "mlp"),
    (dict(mlp_hidden=-4), "mlp_hidden"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(norm_eps=float("nan")), "norm_eps"),
    (dict(rope_base=1.0), "rope_base"),
    (dict(rope_base=float("inf")), "rope_base"),
    (dict(tie_embeddings="yes"), "tie_embeddings"),
    (dict(dropout=1.0), "dropout"),
    (dict(n_head=0), "n_head"),
    (dict(position="rope", n_embd=12, n_head=4), "even head size"),
]


@pytest.mark.parametrize("kwargs,match", BAD_CONFIGS)
def test_config_refuses_nonsense(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GPTConfig(**kwargs)


def test_cross_entropy_matches_torch_in_value_and_gradient():
    from course_lib.model import cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(12, 30, dtype=torch.float64)
    targets = torch.randint(0, 30, (12,))
    targets[[2, 7]] = -1  # skipped, as padding is
    ours = logits.clone().requires_grad_()
    ref = logits.clone().requires_grad_()
    loss = cross_entropy(ours, targets)
    ref_loss = torch.nn.functional.cross_entropy(ref, targets, ignore_index=-1)
    (loss * 3).backward()
    (ref_loss * 3).backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    assert torch.allclose(ours.grad, ref.grad, atol=1e-12)
    assert torch.equal(ours.grad[2], torch.zeros(30, dtype=torch.float64))


def test_cross_entropy_refuses_a_second_backward_instead_of_a_wrong_gradient():
    from course_lib.model import cross_entropy

    logits = torch.randn(4, 10, requires_grad=True)
    loss = cross_entropy(logits, torch.tensor([1, 2, 3, 4]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_gelu_exact_mlp_uses_the_erf_form():
    from course_lib.model import MLP

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16,
                       mlp="gelu_exact")
    mlp = MLP(config)
    x = torch.randn(2, 3, 16)
    expected = mlp.c_proj(torch.nn.functional.gelu(mlp.c_fc(x)))
    assert torch.allclose(mlp(x), expected, atol=0, rtol=0)
    tanh = mlp.c_proj(torch.nn.functional.gelu(mlp.c_fc(x), approximate="tanh"))
    assert not torch.allclose(mlp(x), tanh, atol=1e-7)


@pytest.mark.parametrize("tie", [True, False])
def test_from_hf_llama_gives_transformers_logits(tie):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=100, hidden_size=48, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=32,
        rms_norm_eps=1e-5, tie_word_embeddings=tie, rope_theta=5000.0)).eval()
    with torch.no_grad():  # weights large enough that a wrong rotary layout cannot hide
        for p in hf.parameters():
            p.mul_(5)
    ours = GPT.from_hf_llama(hf).eval()
    assert ours.config.n_kv_head == 2 and ours.config.rope_base == 5000.0
    assert (ours.lm_head.weight is ours.transformer.wte.weight) == tie
    probe = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        ref = hf(probe).logits
        assert ref.abs().max() > 1
        assert torch.allclose(ours(probe)[0], ref, atol=1e-4)


def test_from_hf_llama_refuses_other_models():
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="Llama"):
        GPT.from_hf_llama(hf)


def test_attention_only_model_has_no_mlp_and_its_cache_matches_full_passes():
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, mlp="none")
    m = _scaled_up(config, scale=5.0)
    names = [n for n, _ in m.named_parameters()]
    assert not [n for n in names if ".mlp." in n or ".ln_2." in n]
    with_mlp = GPT(dataclasses.replace(config, mlp="gelu"))
    mlp_and_norm = sum(p.numel() for n, p in with_mlp.named_parameters()
                       if ".mlp." in n or ".ln_2." in n)
    assert m.num_parameters() == with_mlp.num_parameters() - mlp_and_norm
    idx = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        full, _ = m(idx)
        # The block is x + attn(ln_1(x)) and nothing more.
        x = m.transformer.wte(idx) + m.transformer.wpe(torch.arange(12))
        for block in m.transformer.h:
            x = x + block.attn(block.ln_1(x))[0]
        by_hand = m.lm_head(m.transformer.ln_f(x))
        cache = m.new_cache()
        parts = [m(idx[:, :5], kv_cache=cache)[0]]
        parts += [m(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(5, 12)]
    assert full.abs().max() > 5
    assert torch.allclose(full, by_hand, atol=1e-4)
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4)
    loss = m(idx, idx)[1]
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_last_only_gives_the_last_positions_logits_and_no_loss(small_model):
    idx = torch.randint(0, 97, (3, 20))
    with torch.no_grad():
        full, _ = small_model(idx)
        last, loss = small_model(idx, last_only=True)
        cache = small_model.new_cache()
        small_model(idx[:, :12], kv_cache=cache)
        cached, _ = small_model(idx[:, 12:], kv_cache=cache, last_only=True)
    assert last.shape == (3, 1, 97) and loss is None
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(cached, full[:, -1:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="last_only=True gives no loss"):
        small_model(idx, idx, last_only=True)
