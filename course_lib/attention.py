"""Scaled dot-product attention, the causal mask, and multi-head attention with a KV cache."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.positional import apply_rope


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True where query i may look at key j (j <= i)."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def scaled_dot_product(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v, returning the output and the attention weights.

    mask is boolean, True = may attend (torch's convention for F.scaled_dot_product_attention).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share their last dim, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length, got {k.shape[-2]} and {v.shape[-2]}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = attend), got {mask.dtype}")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _filled(buffer: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if buffer is None else buffer[:, :, :n]


class KVCache:
    """Keys and values of every layer seen so far, so each new token costs one position of work.

    Room for max_len positions is allocated at the first update; each new token is written
    into it, rather than copying the whole cache with torch.cat at every step.
    """

    def __init__(self, n_layer: int, max_len: int):
        if not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        self.max_len = max_len
        self._keys: list[torch.Tensor | None] = [None] * n_layer
        self._values: list[torch.Tensor | None] = [None] * n_layer
        self._lengths = [0] * n_layer

    @property
    def length(self) -> int:
        return self._lengths[0]

    @property
    def keys(self) -> list[torch.Tensor | None]:
        """Each layer's cached keys, (batch, heads, positions, head size), or None."""
        return [_filled(k, n) for k, n in zip(self._keys, self._lengths, strict=True)]

    @property
    def values(self) -> list[torch.Tensor | None]:
        return [_filled(v, n) for v, n in zip(self._values, self._lengths, strict=True)]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k and v (batch, heads, new positions, head size); return all cached so far."""
        start = self._lengths[layer]
        end = start + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"the KV cache holds at most {self.max_len} positions, got {end}")
        if self._keys[layer] is None:
            B, H, _, D = k.shape
            self._keys[layer] = k.new_empty(B, H, self.max_len, D)
            self._values[layer] = v.new_empty(B, H, self.max_len, v.shape[-1])
        self._keys[layer][:, :, start:end] = k
        self._values[layer][:, :, start:end] = v
        self._lengths[layer] = end
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]


class MultiHeadAttention(nn.Module):
    """Split into heads, attend, concatenate, project; GPT-2's layout (one fused qkv projection).

    forward returns (out, weights); weights is (B, n_head, T, T_k) when need_weights is True,
    else None and the fused F.scaled_dot_product_attention kernel is used.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        bias: bool = True,
        dropout: float = 0.0,
        rope: bool = False,
    ):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.rope = rope

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = True,
        need_weights: bool = False,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        head_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        offset = kv_cache.length if kv_cache is not None else 0
        if self.rope:
            q, k = apply_rope(q, offset), apply_rope(k, offset)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        T_k = k.shape[-2]
        mask = None
        if causal and T > 1:
            # Query i sits at absolute position offset + i; it may see keys up to there.
            mask = torch.ones(T, T_k, dtype=torch.bool, device=x.device).tril(diagonal=T_k - T)
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            y, weights = scaled_dot_product(q, k, v, mask)
            if dropout_p:
                y = F.dropout(weights, dropout_p, training=True) @ v
        else:
            weights = None
            if mask is not None and T == T_k:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        if head_mask is not None:
            y = y * head_mask.to(y.dtype).view(1, self.n_head, 1, 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a torch.nn.MultiheadAttention (batch_first, same embed dim)."""
        bias = mha.in_proj_bias is not None
        ours = cls(mha.embed_dim, mha.num_heads, bias=bias)
        with torch.no_grad():
            ours.c_attn.weight.copy_(mha.in_proj_weight)
            ours.c_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                ours.c_attn.bias.copy_(mha.in_proj_bias)
                ours.c_proj.bias.copy_(mha.out_proj.bias)
        return ours
