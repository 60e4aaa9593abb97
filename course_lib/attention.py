"""Scaled dot-product attention, the causal mask, and grouped-query attention with a KV cache."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.positional import rope_rotation, rotate_pairs
from course_lib.validation import check_float, check_int, check_qkv, check_tensor


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
    check_qkv(q, k, v, mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def padding_mask(key_mask: torch.Tensor, T_k: int) -> torch.Tensor:
    """key_mask (B, T_k), True for real tokens, as a mask (B, 1, 1, T_k) for every head, query."""
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
        raise TypeError("key_mask must be a bool tensor (batch, keys), True for real tokens")
    if key_mask.dim() != 2 or key_mask.shape[1] != T_k:
        raise ValueError(f"key_mask must have shape (batch, {T_k}), got {tuple(key_mask.shape)}")
    return key_mask[:, None, None, :]


def _filled(buffer: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if buffer is None else buffer[:, :, :n]


_MIN_ROOM = 64  # positions allocated at least, so short generations never reallocate


class KVCache:
    """Keys and values of every layer seen so far, so each new token costs one position of work.

    Only the key/value heads are stored (3 per layer for SmolLM2, not its 9 query heads). Room
    is allocated at the first update, for `capacity` positions (or what the first update needs,
    at least 64), and doubles when full, up to max_len: a model with an 8,192-token context does
    not pay for all of it up front. Each new token is written into that room, rather than
    copying the whole cache with torch.cat at every step.
    """

    def __init__(self, n_layer: int, max_len: int, capacity: int | None = None):
        n_layer = check_int("n_layer", n_layer, minimum=1)
        self.max_len = check_int("max_len", max_len, minimum=1)
        if capacity is not None:
            capacity = check_int("capacity", capacity, minimum=1)
        self.capacity = capacity
        self._keys: list[torch.Tensor | None] = [None] * n_layer
        self._values: list[torch.Tensor | None] = [None] * n_layer
        self._lengths = [0] * n_layer

    @property
    def n_layer(self) -> int:
        return len(self._lengths)

    @property
    def length(self) -> int:
        """Positions cached so far (read it before a forward pass: layer 0 updates first)."""
        return self._lengths[0]

    def layer_length(self, layer: int) -> int:
        return self._lengths[layer]

    @property
    def batch_size(self) -> int | None:
        """The batch size of what is cached, or None while the cache is empty."""
        return None if self._keys[0] is None else self._keys[0].shape[0]

    @property
    def keys(self) -> list[torch.Tensor | None]:
        """Each layer's cached keys, (batch, kv heads, positions, head size), or None."""
        return [_filled(k, n) for k, n in zip(self._keys, self._lengths, strict=True)]

    @property
    def values(self) -> list[torch.Tensor | None]:
        return [_filled(v, n) for v, n in zip(self._values, self._lengths, strict=True)]

    def _room(self, needed: int) -> int:
        if self.capacity is not None and needed <= self.capacity:
            return min(self.capacity, self.max_len)
        return min(self.max_len, max(needed, _MIN_ROOM))

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k and v (batch, heads, new positions, head size); return all cached so far."""
        start = self._lengths[layer]
        end = start + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"the KV cache holds at most {self.max_len} positions, got {end}")
        old_k, old_v = self._keys[layer], self._values[layer]
        if old_k is None or end > old_k.shape[2]:
            grown = min(self.max_len, max(end, 2 * old_k.shape[2])) if old_k is not None else 0
            room = self._room(end) if old_k is None else grown
            B, H, _, D = k.shape
            new_k = k.new_empty(B, H, room, D)
            new_v = v.new_empty(B, H, room, v.shape[-1])
            if old_k is not None:  # grow: copy what is there into a buffer twice the size
                new_k[:, :, :start] = old_k[:, :, :start]
                new_v[:, :, :start] = old_v[:, :, :start]
            self._keys[layer], self._values[layer] = new_k, new_v
        self._keys[layer][:, :, start:end] = k
        self._values[layer][:, :, start:end] = v
        self._lengths[layer] = end
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]

    def reorder(self, indices) -> None:
        """Keep the cached sequences (batch rows) named by indices, in that order.

        A row may be named twice or not at all: beam search continues some beams twice and
        drops others, and each new row must carry its parent's keys and values.
        """
        indices = torch.as_tensor(indices)
        if indices.dim() != 1 or indices.dtype not in (torch.int64, torch.int32):
            raise ValueError("indices must be a 1-D tensor or list of row numbers")
        batch = self.batch_size
        if batch is None:
            raise ValueError("the cache is empty: there are no rows to reorder")
        if indices.numel() == 0 or int(indices.min()) < 0 or int(indices.max()) >= batch:
            raise ValueError(f"indices must be row numbers in [0, {batch}), got {indices.tolist()}")
        for i, (k, v) in enumerate(zip(self._keys, self._values, strict=True)):
            if k is not None:
                index = indices.to(k.device)
                self._keys[i], self._values[i] = k.index_select(0, index), v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Grouped-query attention: n_head query heads share n_kv_head key/value heads.

    Multi-head attention (GPT-2) is the case n_kv_head == n_head; Llama-family models use fewer
    key/value heads (SmolLM2: 9 query heads, 3 key/value heads), each shared by a group of
    n_head // n_kv_head query heads, which shrinks the KV cache by that factor. One fused
    projection c_attn gives q, k and v (GPT-2's layout), c_proj mixes the heads back.

    forward returns (out, weights); weights is (B, n_head, T, T_k) when need_weights is True,
    else None and the fused F.scaled_dot_product_attention kernel is used.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        rope: bool = False,
        n_kv_head: int | None = None,
        rope_base: float = 10000.0,
    ):
        super().__init__()
        n_embd = check_int("n_embd", n_embd, minimum=1)
        n_head = check_int("n_head", n_head, minimum=1)
        n_kv_head = n_head if n_kv_head is None else check_int("n_kv_head", n_kv_head, minimum=1)
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be divisible by n_kv_head ({n_kv_head})")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.n_kv_head = n_kv_head
        if rope and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.head_dim}")
        kv_dim = n_kv_head * self.head_dim
        self.c_attn = nn.Linear(n_embd, n_embd + 2 * kv_dim, bias=bias)  # [W_q; W_k; W_v]
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = check_float("dropout", dropout, minimum=0.0, maximum=1.0,
                                   max_inclusive=False)
        self.resid_dropout = nn.Dropout(dropout)
        self.rope = rope
        self.rope_base = check_float("rope_base", rope_base, minimum=1.0, min_inclusive=False)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = True,
        need_weights: bool = False,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        head_mask: torch.Tensor | None = None,
        rotation: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, n_embd) -> (out, weights). rotation: the rope_rotation of these positions.

        key_mask (B, T_k) bool, True for real tokens: padding keys are never attended to (an
        encoder's batch of sources of different lengths).
        """
        B, T, C = self._check_input("x", x)
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_dim
        qkv = self.c_attn(x)
        if self.rope:
            if rotation is None:  # called on its own: this layer's own cache length is the offset
                offset = kv_cache.layer_length(layer) if kv_cache is not None else 0
                rotation = rope_rotation(offset, T, D, self.rope_base, x.device)
            # q and k sit side by side in qkv: rotate all their heads in one operation.
            # split, not slicing: its backward is one cat, where each slice's backward fills a
            # zero tensor of qkv's size and adds into it (a few percent of a training step).
            qk, v = qkv.split([C + H_kv * D, H_kv * D], dim=-1)
            qk = rotate_pairs(qk.view(B, T, H + H_kv, D), rotation[:, None])
            q, k = qk.split([H, H_kv], dim=2)
        else:
            q, k, v = qkv.split([C, H_kv * D, H_kv * D], dim=-1)
            q, k = q.view(B, T, H, D), k.view(B, T, H_kv, D)
        v = v.view(B, T, H_kv, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        T_k = k.shape[-2]
        # The fused kernel masks a square causal block itself; a mask tensor is built only for
        # the explicit path or for new queries after cached keys.
        kernel_causal = causal and T > 1 and T == T_k and not need_weights and key_mask is None
        mask = None
        if causal and T > 1 and not kernel_causal:
            # Query i sits at absolute position offset + i; it may see keys up to there.
            mask = torch.ones(T, T_k, dtype=torch.bool, device=x.device).tril(diagonal=T_k - T)
        if key_mask is not None:
            keep = padding_mask(key_mask, T_k)
            mask = keep if mask is None else mask & keep
        dropout_p = self.dropout if self.training else 0.0
        grouped = H != H_kv
        if need_weights:
            if grouped:  # the readable path: give every query head its own copy of its k, v
                k, v = k.repeat_interleave(H // H_kv, 1), v.repeat_interleave(H // H_kv, 1)
            y, weights = scaled_dot_product(q, k, v, mask=mask)
            if dropout_p:
                y = F.dropout(weights, dropout_p, training=True) @ v
        else:
            weights = None
            if kernel_causal:
                y = F.scaled_dot_product_attention(
                    q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=grouped
                )
            else:
                y = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=grouped
                )
        if head_mask is not None:
            y = y * head_mask.to(y.dtype).view(1, H, 1, 1)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights

    def _check_input(self, name: str, x) -> torch.Size:
        """x's shape, if x is a float tensor (batch, time, n_embd)."""
        check_tensor(name, x, floating=True)
        if x.dim() != 3 or x.shape[-1] != self.n_embd:
            raise ValueError(f"{name} must have shape (batch, time, n_embd={self.n_embd}), got "
                             f"{tuple(x.shape)}")
        return x.shape

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


class CrossAttention(MultiHeadAttention):
    """Attention whose queries come from x and whose keys and values come from memory.

    The decoder of an encoder-decoder Transformer reads the encoder's output (memory) this way.
    The weights are MultiHeadAttention's (c_attn = [W_q; W_k; W_v], c_proj, so from_torch is
    the same copy); only the rows W_q are applied to x, the rows [W_k; W_v] to memory. The
    memory does not change while the decoder writes, so memory_kv computes its keys and
    values once and each decoding step passes them back in.
    """

    def __init__(self, n_embd: int, n_head: int, *, bias: bool = True, dropout: float = 0.0):
        super().__init__(n_embd, n_head, bias=bias, dropout=dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values (B, n_head, S, head size) of memory (B, S, n_embd)."""
        B, S, C = memory.shape
        w = self.c_attn.weight[C:]
        b = None if self.c_attn.bias is None else self.c_attn.bias[C:]
        kv = F.linear(memory, w, b).view(B, S, 2, self.n_head, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, n_embd) attends to memory (B, S, n_embd), or to its cached memory_kv.

        memory_mask (B, S) bool, True for real tokens of the memory (not padding).
        """
        if (memory is None) == (memory_kv is None):
            raise ValueError("give either memory or memory_kv (its cached keys and values)")
        B, T, C = self._check_input("x", x)
        if memory is not None:
            self._check_input("memory", memory)
        k, v = self.memory_kv(memory) if memory_kv is None else memory_kv
        w = self.c_attn.weight[:C]
        b = None if self.c_attn.bias is None else self.c_attn.bias[:C]
        q = F.linear(x, w, b).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        mask = None if memory_mask is None else padding_mask(memory_mask, k.shape[-2])
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            y, weights = scaled_dot_product(q, k, v, mask=mask)
            if dropout_p:
                y = F.dropout(weights, dropout_p, training=True) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights
