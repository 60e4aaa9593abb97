"""Attention at inference: tiled attention with an online softmax, and attention's memory cost.

The tiling is FlashAttention's idea; the memory arithmetic covers the attention scores and
the KV cache.
"""

from __future__ import annotations

import math

import torch

from course_lib.validation import check_bool, check_int, check_qkv


def online_softmax_update(
    m: torch.Tensor, total: torch.Tensor, acc: torch.Tensor, scores: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile of scores (.., q, k) and values (.., k, d) into the running state.

    m: running max of the scores per query, total: running sum of exp(score - m),
    acc: running sum of exp(score - m) * v. When a tile raises the max, what was summed so far
    is rescaled by exp(old max - new max), so the result equals one softmax over all keys.
    """
    m_new = torch.maximum(m, scores.amax(dim=-1))
    # A row whose keys are all masked so far has m_new = -inf; keep its exps at 0, not nan.
    m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
    p = torch.exp(scores - m_safe[..., None])
    correction = torch.exp(m - m_safe)
    total_new = total * correction + p.sum(dim=-1)
    acc_new = acc * correction[..., None] + p @ v
    return m_new, total_new, acc_new


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    block_q: int = 64,
    block_k: int = 64,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, computed block_q queries by block_k keys at a time.

    Never holds more than a (block_q, block_k) tile of scores per head, where plain attention
    holds the whole (T, T) matrix. Equal (to float rounding) to F.scaled_dot_product_attention.
    causal: query i sees keys j <= i + (T_k - T_q), as with a KV cache.
    """
    check_qkv(q, k, v)
    causal = check_bool("causal", causal)
    if causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"causal attention with more queries ({q.shape[-2]}) than keys "
                         f"({k.shape[-2]}): query i sees keys up to i + T_k - T_q, so the first "
                         "queries would see no key at all")
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (t.expand(*batch, *t.shape[-2:]) for t in (q, k, v))
    block_q = check_int("block_q", block_q, minimum=1)
    block_k = check_int("block_k", block_k, minimum=1)
    T_q, T_k = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    shift = T_k - T_q  # query i sits at absolute position shift + i
    for qs in range(0, T_q, block_q):
        qt = q[..., qs : qs + block_q, :] * scale
        n = qt.shape[-2]
        m = torch.full((*qt.shape[:-1],), float("-inf"), dtype=q.dtype, device=q.device)
        total = torch.zeros_like(m)
        acc = torch.zeros(*qt.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        last_key = T_k if not causal else min(T_k, shift + qs + n)
        for ks in range(0, last_key, block_k):
            scores = qt @ k[..., ks : ks + block_k, :].transpose(-2, -1)
            if causal:
                qpos = torch.arange(qs, qs + n, device=q.device)[:, None] + shift
                kpos = torch.arange(ks, ks + scores.shape[-1], device=q.device)[None, :]
                scores = scores.masked_fill(kpos > qpos, float("-inf"))
            vt = v[..., ks : ks + block_k, :]
            m, total, acc = online_softmax_update(m, total, acc, scores, vt)
        out[..., qs : qs + n, :] = acc / total[..., None]
    return out


def attention_scores_bytes(
    seq_len: int, n_head: int, batch: int = 1, bytes_per_value: int = 4,
    block_q: int | None = None, block_k: int | None = None,
) -> int:
    """Bytes of attention scores held at once: the full T x T matrix, or one tile per head."""
    seq_len = check_int("seq_len", seq_len, minimum=1)
    n_head = check_int("n_head", n_head, minimum=1)
    batch = check_int("batch", batch, minimum=1)
    bytes_per_value = check_int("bytes_per_value", bytes_per_value, minimum=1)
    rows = seq_len if block_q is None else min(check_int("block_q", block_q, minimum=1), seq_len)
    cols = seq_len if block_k is None else min(check_int("block_k", block_k, minimum=1), seq_len)
    return batch * n_head * rows * cols * bytes_per_value


def kv_cache_bytes(
    n_layer: int, n_kv_head: int, head_dim: int, seq_len: int, batch: int = 1,
    bytes_per_value: int = 2,
) -> int:
    """Bytes of a KV cache: a key and a value vector per layer, key/value head and position.

    2 * n_layer * n_kv_head * head_dim * seq_len * batch * bytes_per_value. Multi-head
    attention has n_kv_head = n_head; grouped-query fewer; multi-query one.
    """
    n_layer = check_int("n_layer", n_layer, minimum=1)
    n_kv_head = check_int("n_kv_head", n_kv_head, minimum=1)
    head_dim = check_int("head_dim", head_dim, minimum=1)
    seq_len = check_int("seq_len", seq_len, minimum=0)
    batch = check_int("batch", batch, minimum=1)
    bytes_per_value = check_int("bytes_per_value", bytes_per_value, minimum=1)
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * bytes_per_value
