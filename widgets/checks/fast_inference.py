"""Checks for lesson 12's exercises: absmax int8 by hand, a KV cache's size, and what a round of
speculative decoding is worth."""

from __future__ import annotations

import math

import torch

from course_lib.fast_attention import kv_cache_bytes
from course_lib.quantize import quantize
from widgets.feedback import (
    A_NUMBER,
    Feedback,
    as_number,
    call_learner,
    exercise,
    right,
    wrong,
)

# Exercise 2: Llama 3 8B's published config (config.json: num_hidden_layers 32,
# num_attention_heads 32, num_key_value_heads 8, hidden_size 4096), bfloat16, 8,192 tokens.
LLAMA3_8B = {"n_layer": 32, "n_head": 32, "n_kv_head": 8, "head_dim": 128}
KV_TOKENS = 8192
KV_BYTES_PER_VALUE = 2
# Exercise 3: a draft whose tokens the target accepts with this probability, each on its own.
ACCEPTANCE = 0.8
DRAFT_TOKENS = 4


def _near(a: float, b: float, rel: float = 1e-3) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


@exercise("Replace None with your function absmax_int8(w) returning (q, scale).")
def check_absmax_int8(fn: object) -> Feedback:
    """Exercise 1: fn(w) -> (q, scale), absmax int8 per row, so that q * scale ~ w."""
    g = torch.Generator().manual_seed(11)
    w = torch.randn(6, 64, generator=g) * torch.tensor([0.02, 0.1, 1.0, 3.0, 0.5, 0.05])[:, None]
    w[1, 5] = -0.9  # a row whose largest magnitude is negative
    result, failed = call_learner(fn, w.clone())
    if failed is not None:  # a wrong Feedback is falsy
        return failed
    if not isinstance(result, tuple) or len(result) != 2:
        return wrong("Return a pair (q, scale): the int8 codes and the scale of each row.")
    q, scale = result
    if not isinstance(q, torch.Tensor) or q.shape != w.shape:
        return wrong(f"q should be a tensor of w's shape {tuple(w.shape)}.")
    if q.dtype != torch.int8:
        return wrong(f"q should be stored as torch.int8 (1 byte per weight), got {q.dtype}: "
                     "round, then .to(torch.int8).")
    if not isinstance(scale, torch.Tensor) or scale.is_complex() or scale.numel() != w.shape[0]:
        n = scale.numel() if isinstance(scale, torch.Tensor) else "no"
        return wrong(f"scale should hold one number per row ({w.shape[0]}), got {n}. Per row "
                     "means a small row is not crushed by a large one.")
    deq = q.float() * scale.reshape(-1, 1).float()
    ref = quantize(w, 8).dequantize()
    step = w.abs().amax(dim=1, keepdim=True) / 127
    if int(q.abs().max()) > 127 or int(q.min()) < -127:
        return wrong("Codes should stay in [-127, 127]: symmetric around 0.")
    if _near(float(scale.reshape(-1)[2]), float(w[2].max() / 127), 1e-4) and not _near(
            float(scale.reshape(-1)[2]), float(step[2]), 1e-4):
        return wrong("Take the largest |w| of each row (w.abs().amax), not the largest w: "
                     "negative weights count too.")
    if _near(float(scale.reshape(-1)[2]), float(step[2] * 127 / 128), 1e-4) or _near(
            float(scale.reshape(-1)[2]), float(step[2] * 127 / 255), 1e-4):
        return wrong("Divide each row's largest |w| by 127, the largest int8 code of a "
                     "symmetric range, so that it maps exactly to 127.")
    if not ((deq - w).abs() <= step * 0.5 * 1.01 + 1e-8).all():
        worst = float(((deq - w).abs() / step).max())
        return wrong(f"q * scale is off from w by up to {worst:.2f} steps; rounding to the "
                     "nearest code keeps every error within half a step. Round, do not floor.")
    if not torch.allclose(deq, ref, atol=float(step.max()) * 1.01, rtol=0):
        return wrong("Close, but not what course_lib.quantize.quantize(w, 8) gives.")
    return right("Each row's largest |w| maps to 127 and every weight lands within half a step "
                 "of itself: 1 byte per weight instead of 4, with course_lib's answer.")


@exercise("Replace None with the number of bytes you computed.", as_number, "a number of bytes")
def check_kv_cache_bytes(x: float) -> Feedback:
    """Exercise 2: the KV cache of Llama 3 8B for 8,192 tokens in bfloat16, in bytes."""
    c = LLAMA3_8B
    expected = kv_cache_bytes(c["n_layer"], c["n_kv_head"], c["head_dim"], KV_TOKENS,
                              bytes_per_value=KV_BYTES_PER_VALUE)
    if _near(x, expected):
        return right(f"2 x 32 layers x 8 key/value heads x 128 x 8192 tokens x 2 bytes = "
                     f"{expected:,} bytes = {expected / 2**30:.0f} GiB per sequence. With 32 "
                     "key/value heads (plain multi-head attention) it would be 4 GiB.")
    if _near(x, expected * c["n_head"] / c["n_kv_head"]):
        return wrong("That counts 32 heads. Llama 3 8B uses grouped-query attention: only its "
                     "8 key/value heads are cached.")
    if _near(x, expected / 2):
        return wrong("Keys and values are both cached: multiply by 2.")
    if _near(x, expected / c["n_layer"]):
        return wrong("That is one layer. Every layer keeps its own keys and values.")
    if _near(x, expected * 2):
        return wrong("bfloat16 takes 2 bytes per value, not 4.")
    if _near(x, expected / KV_BYTES_PER_VALUE):
        return wrong("That counts values; each bfloat16 value takes 2 bytes.")
    return wrong(f"Not {x:,.0f}. Multiply: 2 (key and value) x layers x key/value heads x head "
                 "size x tokens x bytes per value.")


def expected_tokens_per_round(acceptance: float, k: int) -> float:
    """Tokens one target pass yields when each of k drafted tokens is accepted with probability
    acceptance on its own: 1 + a + a^2 + ... + a^k = (1 - a^(k+1)) / (1 - a)."""
    return float(k + 1) if acceptance == 1 else (1 - acceptance ** (k + 1)) / (1 - acceptance)


@exercise("Replace None with the expected number of tokens per round.", **A_NUMBER)
def check_tokens_per_round(x: float) -> Feedback:
    """Exercise 3: expected tokens per target pass for ACCEPTANCE and DRAFT_TOKENS."""
    a, k = ACCEPTANCE, DRAFT_TOKENS
    expected = expected_tokens_per_round(a, k)
    if _near(x, expected):
        return right(f"1 + {a} + {a}^2 + {a}^3 + {a}^4 = {expected:.4f} tokens per target pass: "
                     "the target's own token always comes, and draft token i counts only if all "
                     "before it were accepted too.")
    if _near(x, expected_tokens_per_round(a, k - 1)):
        return wrong("Nearly: you left out one term. Even when all 4 drafts are accepted, the "
                     "target's pass gives one more token of its own (the bonus).")
    if _near(x, k * a) or _near(x, 1 + k * a):
        return wrong("Draft token 3 counts only if tokens 1 and 2 were accepted too: its chance "
                     f"is {a}^3, not {a}.")
    if _near(x, a ** k) or _near(x, 1 + a ** k):
        return wrong("a^4 is the chance that all four are accepted; add up the chances of each "
                     "prefix length.")
    return wrong(f"Not {x:g}. Add 1 (the target's own token) to the chance that draft token 1 "
                 "is accepted, that tokens 1 and 2 are, and so on up to all four.")
