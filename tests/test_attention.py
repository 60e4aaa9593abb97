import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention, causal_mask, scaled_dot_product


def test_scaled_dot_product_equals_torch_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    out, weights = scaled_dot_product(q, k, v)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 7), atol=1e-6)
    mask = causal_mask(7)
    out, weights = scaled_dot_product(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
    assert torch.all(weights[..., ~mask] == 0)


def test_causal_mask_shape_and_values():
    m = causal_mask(4)
    assert m.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    with pytest.raises(ValueError, match="T must"):
        causal_mask(0)


def test_multi_head_attention_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(2, 9, 32)
    mask = causal_mask(9)
    # torch's bool attn_mask marks positions NOT allowed; ours marks allowed ones.
    ref_out, ref_w = ref(x, x, x, attn_mask=~mask, need_weights=True, average_attn_weights=False)
    out, w = ours(x, causal=True, need_weights=True)
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert torch.allclose(w, ref_w, atol=1e-6)
    fast, none = ours(x, causal=True)  # the SDPA path gives the same output
    assert none is None and torch.allclose(fast, out, atol=1e-5)
    ref_out, _ = ref(x, x, x, need_weights=False)
    assert torch.allclose(ours(x, causal=False)[0], ref_out, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(30, 4)
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="last dim"):
        scaled_dot_product(q, torch.randn(1, 4, 6), torch.randn(1, 4, 8))
    with pytest.raises(TypeError, match="bool"):
        scaled_dot_product(q, q, q, mask=torch.ones(4, 4))


def _mha_copy_of_grouped(gqa: MultiHeadAttention) -> MultiHeadAttention:
    """The multi-head attention that gives each query head its own copy of its group's k, v."""
    H, H_kv, D, C = gqa.n_head, gqa.n_kv_head, gqa.head_dim, gqa.n_embd
    mha = MultiHeadAttention(C, H, bias=gqa.c_attn.bias is not None, rope=gqa.rope,
                             rope_base=gqa.rope_base)
    w_q, w_k, w_v = gqa.c_attn.weight.split([C, H_kv * D, H_kv * D])
    # Query head h uses key/value head h // (H / H_kv): repeat each kv head's rows H / H_kv times.
    widen = lambda w: w.view(H_kv, D, C).repeat_interleave(H // H_kv, 0).reshape(H * D, C)  # noqa: E731
    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([w_q, widen(w_k), widen(w_v)]))
        mha.c_proj.load_state_dict(gqa.c_proj.state_dict())
    return mha


@pytest.mark.parametrize("rope", [False, True])
def test_grouped_query_attention_equals_multi_head_with_shared_kv_heads(rope):
    torch.manual_seed(0)
    gqa = MultiHeadAttention(48, 6, bias=False, rope=rope, n_kv_head=2).eval()
    mha = _mha_copy_of_grouped(gqa).eval()
    x = torch.randn(2, 7, 48)
    out, w = gqa(x, need_weights=True)
    ref, ref_w = mha(x, need_weights=True)
    assert w.shape == (2, 6, 7, 7)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(w, ref_w, atol=1e-6)
    assert torch.allclose(gqa(x)[0], ref, atol=1e-5)  # the fused kernel's grouped path
    mask = torch.ones(6)
    mask[4] = 0
    assert torch.allclose(gqa(x, head_mask=mask)[0], mha(x, head_mask=mask)[0], atol=1e-5)


def test_equal_head_counts_is_plain_multi_head_attention():
    torch.manual_seed(0)
    a = MultiHeadAttention(32, 4).eval()
    b = MultiHeadAttention(32, 4, n_kv_head=4).eval()
    b.load_state_dict(a.state_dict())
    assert b.c_attn.weight.shape == (96, 32)
    x = torch.randn(1, 5, 32)
    assert torch.equal(a(x)[0], b(x)[0])


def test_attention_alone_with_a_cache_uses_its_own_offset():
    from course_lib.attention import KVCache

    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, rope=True, n_kv_head=2).eval()
    x = torch.randn(1, 12, 32) * 5
    full, _ = attn(x)
    cache = KVCache(1, 16)
    parts = [attn(x[:, :9], kv_cache=cache)[0], attn(x[:, 9:], kv_cache=cache)[0]]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4)
    assert cache.keys[0].shape == (1, 2, 12, 8)


def test_bad_grouping_is_refused():
    with pytest.raises(ValueError, match="n_kv_head"):
        MultiHeadAttention(32, 4, n_kv_head=3)
    with pytest.raises(ValueError, match="n_kv_head"):
        MultiHeadAttention(32, 4, n_kv_head=0)
    with pytest.raises(TypeError, match="n_head"):
        MultiHeadAttention(32, 4.0)
    with pytest.raises(ValueError, match="even head size"):
        MultiHeadAttention(12, 4, rope=True)
