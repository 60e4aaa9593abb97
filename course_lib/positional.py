"""Positional encodings: sinusoidal, learned, and rotary (RoPE)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def sinusoidal(n_positions: int, d_model: int) -> torch.Tensor:
    """The (n_positions, d_model) table of "Attention Is All You Need", section 3.5.

    PE[pos, 2i] = sin(pos / 10000^(2i/d)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d)).
    """
    _check_positive("n_positions", n_positions)
    _check_positive("d_model", d_model)
    if d_model % 2:
        raise ValueError(f"d_model must be even for sinusoidal encoding, got {d_model}")
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2).float() / d_model)
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class LearnedPositionalEmbedding(nn.Module):
    """One trainable vector per position, as in GPT-2."""

    def __init__(self, n_positions: int, d_model: int):
        super().__init__()
        _check_positive("n_positions", n_positions)
        self.n_positions = n_positions
        self.weight = nn.Parameter(torch.randn(n_positions, d_model) * 0.02)

    def forward(self, seq_len: int, offset: int = 0) -> torch.Tensor:
        if offset + seq_len > self.n_positions:
            raise ValueError(
                f"positions up to {offset + seq_len} requested but only "
                f"n_positions={self.n_positions} are learned"
            )
        return self.weight[offset : offset + seq_len]


def rope_angles(n_positions: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotation angle of each (position, pair of dimensions): shape (n_positions, head_dim // 2)."""
    _check_positive("n_positions", n_positions)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary encoding, got {head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim, 2).float() / head_dim)
    return torch.arange(n_positions).float()[:, None] * inv_freq[None, :]


def apply_rope(x: torch.Tensor, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotate each pair of dimensions (2i, 2i+1) of x (..., T, head_dim) by its position's angle.

    After rotation, q_m . k_n depends on m - n only: the property that makes RoPE relative.
    """
    T, d = x.shape[-2], x.shape[-1]
    angles = rope_angles(offset + T, d, base)[offset:].to(x.device)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x_even * cos - x_odd * sin
    out[..., 1::2] = x_even * sin + x_odd * cos
    return out
