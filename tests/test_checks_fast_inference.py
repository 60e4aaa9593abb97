import torch

from course_lib.fast_attention import kv_cache_bytes
from widgets.checks.fast_inference import (
    check_absmax_int8,
    check_kv_cache_bytes,
    check_tokens_per_round,
    expected_tokens_per_round,
)


def _right_int8(w):
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    return torch.round(w / scale).to(torch.int8), scale


def test_absmax_int8():
    assert check_absmax_int8(_right_int8)
    assert check_absmax_int8(lambda w: (_right_int8(w)[0], _right_int8(w)[1][:, 0]))
    assert "None" in check_absmax_int8(None).message
    assert not check_absmax_int8(42)

    def per_tensor(w):
        scale = w.abs().max() / 127
        return torch.round(w / scale).to(torch.int8), scale

    assert "one number per row" in check_absmax_int8(per_tensor).message

    def floats(w):
        q, s = _right_int8(w)
        return q.float(), s

    assert "torch.int8" in check_absmax_int8(floats).message

    def max_not_abs(w):
        scale = w.amax(dim=1, keepdim=True) / 127
        return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale

    assert "negative weights" in check_absmax_int8(max_not_abs).message

    def by_128(w):
        scale = w.abs().amax(dim=1, keepdim=True) / 128
        return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale

    assert "by 127" in check_absmax_int8(by_128).message

    def floor(w):
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        return torch.floor(w / scale).to(torch.int8), scale

    assert "half a step" in check_absmax_int8(floor).message
    assert "raised ZeroDivisionError" in check_absmax_int8(lambda w: 1 / 0).message
    assert "pair" in check_absmax_int8(lambda w: w).message


def test_kv_cache_bytes():
    right = 2 * 32 * 8 * 128 * 8192 * 2
    assert right == 2**30 == kv_cache_bytes(32, 8, 128, 8192)
    assert check_kv_cache_bytes(right)
    assert check_kv_cache_bytes(torch.tensor(float(right)))
    assert "None" in check_kv_cache_bytes(None).message
    assert "number of bytes" in check_kv_cache_bytes("1 GiB").message
    assert "grouped-query" in check_kv_cache_bytes(right * 4).message
    assert "multiply by 2" in check_kv_cache_bytes(right // 2).message
    assert "one layer" in check_kv_cache_bytes(right // 32).message
    assert "not 4" in check_kv_cache_bytes(right * 2).message
    assert not check_kv_cache_bytes(right + 10**7)


def test_tokens_per_round():
    expected = 1 + 0.8 + 0.8**2 + 0.8**3 + 0.8**4
    assert abs(expected_tokens_per_round(0.8, 4) - expected) < 1e-12
    assert expected_tokens_per_round(1.0, 4) == 5.0
    assert check_tokens_per_round(expected)
    assert "None" in check_tokens_per_round(None).message
    assert not check_tokens_per_round([3.36])
    assert "bonus" in check_tokens_per_round(1 + 0.8 + 0.8**2 + 0.8**3).message
    assert "0.8^3" in check_tokens_per_round(4 * 0.8).message
    assert "0.8^3" in check_tokens_per_round(1 + 4 * 0.8).message
    assert "prefix" in check_tokens_per_round(0.8**4).message
    assert not check_tokens_per_round(5)
