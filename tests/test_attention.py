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
