import pytest
import torch
import torch.nn.functional as F

from course_lib.fast_attention import (
    attention_scores_bytes,
    kv_cache_bytes,
    online_softmax_update,
    tiled_attention,
)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("blocks", [(64, 64), (16, 8), (7, 5), (1, 1), (200, 200)])
def test_tiled_attention_equals_sdpa(causal, blocks):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 16, dtype=torch.float64) for _ in range(3))
    ours = tiled_attention(q, k, v, causal=causal, block_q=blocks[0], block_k=blocks[1])
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_causal_with_a_kv_cache_offset():
    # 3 new queries against 10 keys: query i sits at position 7 + i, as in cached decoding.
    torch.manual_seed(1)
    q = torch.randn(1, 2, 3, 8)
    k, v = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    mask = torch.ones(3, 10, dtype=torch.bool).tril(diagonal=7)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(tiled_attention(q, k, v, causal=True, block_q=2, block_k=4), ref)


def test_large_scores_do_not_overflow():
    # Scores of several hundred: a naive exp overflows float32, the running max keeps it finite.
    q = torch.full((1, 4, 4), 30.0)
    k = torch.randn(1, 9, 4) * 30
    v = torch.randn(1, 9, 4)
    out = tiled_attention(q, k, v, block_q=2, block_k=2)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_online_update_equals_one_softmax():
    torch.manual_seed(2)
    s, v = torch.randn(4, 12), torch.randn(12, 3)
    m, total, acc = torch.full((4,), float("-inf")), torch.zeros(4), torch.zeros(4, 3)
    for j in range(0, 12, 5):
        m, total, acc = online_softmax_update(m, total, acc, s[:, j : j + 5], v[j : j + 5])
    torch.testing.assert_close(acc / total[:, None], torch.softmax(s, -1) @ v)
    torch.testing.assert_close(m, s.amax(-1))
    torch.testing.assert_close(total, torch.exp(s - s.amax(-1, keepdim=True)).sum(-1))


def test_memory_arithmetic_and_bad_input():
    assert attention_scores_bytes(4096, 32) == 32 * 4096 * 4096 * 4
    assert attention_scores_bytes(4096, 32, block_q=64, block_k=64) == 32 * 64 * 64 * 4
    assert attention_scores_bytes(10, 1, block_q=64, block_k=64, bytes_per_value=2) == 200
    with pytest.raises(ValueError, match="seq_len"):
        attention_scores_bytes(0, 1)
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="block_q"):
        tiled_attention(q, q, q, block_q=0)
    with pytest.raises(ValueError, match="q and k must share their last dim"):
        tiled_attention(q, torch.randn(1, 4, 5), q)
    with pytest.raises(TypeError, match="v must be a torch tensor"):
        tiled_attention(q, q, [1, 2])


def test_kv_cache_formula_matches_a_real_cache(small_model):
    # GPT-2 small: 12 layers, 12 heads of 64, 1024 tokens in float32 = 72 MiB (HF's own config)
    assert kv_cache_bytes(12, 12, 64, 1024, bytes_per_value=4) == 72 * 2**20
    cache = small_model.new_cache()
    with torch.no_grad():
        small_model(torch.randint(0, 97, (3, 20)), kv_cache=cache)
    cfg = small_model.config
    measured = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert measured == kv_cache_bytes(cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, 20,
                                      batch=3, bytes_per_value=4)
    with pytest.raises(ValueError, match="n_kv_head"):
        kv_cache_bytes(2, 0, 64, 10)
