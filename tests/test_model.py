import hashlib

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


def test_rope_model_with_cache():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16,
                      position="rope")).eval()
    assert m.transformer.wpe is None
    idx = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        full, _ = m(idx)
        cache = m.new_cache()
        a, _ = m(idx[:, :5], kv_cache=cache)
        b, _ = m(idx[:, 5:], kv_cache=cache)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-4)


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


def test_mismatched_checkpoint_is_refused(tmp_path, small_model):
    path = small_model.save(tmp_path / "m.safetensors")
    path.with_suffix(".json").write_text(
        '{"vocab_size": 97, "block_size": 32, "n_layer": 3, "n_head": 4, "n_embd": 32}'
    )
    before = _digest(path)
    with pytest.raises(ValueError, match="does not match its config"):
        GPT.load(path)
    assert _digest(path) == before
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        GPT.load(path)


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
