"""Positional encodings: sinusoidal, learned, and rotary (RoPE)."""

from __future__ import annotations

import math

import torch

from course_lib.validation import check_float, check_int, check_seed, check_tensor
from course_lib.vectors import cosine_similarity

MAX_TABLE_NUMBERS = 1 << 27  # 512 MB of float32: far beyond any lesson, short of a frozen laptop


def _table_size(n_positions, d_model, d_name: str = "d_model") -> tuple[int, int]:
    """(n_positions, d_model) as ints >= 1 whose table fits in memory; d_model even."""
    n_positions = check_int("n_positions", n_positions, minimum=1)
    d_model = check_int(d_name, d_model, minimum=2)
    if d_model % 2:
        raise ValueError(f"{d_name} must be even: its dimensions come in (sin, cos) or rotated "
                         f"pairs, got {d_model}")
    if n_positions * d_model > MAX_TABLE_NUMBERS:
        raise ValueError(f"n_positions x {d_name} = {n_positions} x {d_model} is more than "
                         f"{MAX_TABLE_NUMBERS:,} numbers: choose smaller sizes")
    return n_positions, d_model


def _shape_of(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_base(base) -> float:
    return check_float("base", base, minimum=1, min_inclusive=False)


def sinusoidal(n_positions: int, d_model: int) -> torch.Tensor:
    """The (n_positions, d_model) table of "Attention Is All You Need", section 3.5.

    PE[pos, 2i] = sin(pos / 10000^(2i/d)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d)).
    """
    n_positions, d_model = _table_size(n_positions, d_model)
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2).float() / d_model)
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


def _inv_freq(head_dim: int, base: float) -> torch.Tensor:
    # Written as 1 / base^(2i/d), the same float32 arithmetic as transformers' Llama, so the
    # angles agree to the last bit.
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_angles(n_positions: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotation angle of each (position, pair of dimensions): shape (n_positions, head_dim // 2)."""
    n_positions, head_dim = _table_size(n_positions, head_dim, "head_dim")
    base = _check_base(base)
    return torch.arange(n_positions).float()[:, None] * _inv_freq(head_dim, base)[None, :]


def rope_rotation(
    offset: int,
    length: int,
    head_dim: int,
    base: float = 10000.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """cos + i sin of the rotary angles of positions offset .. offset + length - 1.

    Returns a complex tensor of shape (length, head_dim // 2).

    A model computes this once per forward pass and hands it to every layer, so every layer
    rotates by the same positions (reading the offset from a KV cache that layer 0 has already
    extended would shift the later layers).
    """
    offset = check_int("offset (the position of the first token)", offset, minimum=0)
    length = check_int("length", length, minimum=0)
    positions = torch.arange(offset, offset + length, device=device).float()
    angles = positions[:, None] * _inv_freq(head_dim, base).to(device)[None, :]
    return torch.polar(torch.ones_like(angles), angles)


def rotate_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Turn each pair of dimensions (2i, 2i+1) of x (..., head_dim) by a complex rotation.

    Seen as a complex number x_2i + i x_2i+1, turning a pair by angle a is multiplying by e^{ia};
    rotation must broadcast against x's leading dims. Computed in float32, returned in x's dtype.
    """
    work = x if x.dtype == torch.float64 else x.float()
    if work.stride(-1) != 1 or work.storage_offset() % 2:
        work = work.contiguous()
    pairs = torch.view_as_complex(work.reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def apply_rope(x: torch.Tensor, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotate each pair of dimensions (2i, 2i+1) of x (..., T, head_dim) by its position's angle.

    After rotation, q_m . k_n depends on m - n only: the property that makes RoPE relative.
    """
    check_tensor("x", x, floating=True, min_dims=2)
    T, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"head_dim must be even for rotary encoding, got {d}")
    return rotate_pairs(x, rope_rotation(offset, T, d, base, x.device))


# ----- comparing encodings: similarity between positions -----------------------------------


def cosine_similarity_matrix(table: torch.Tensor) -> torch.Tensor:
    """(n, n) cosine similarity between every pair of rows of an (n, d) position table."""
    if not isinstance(table, torch.Tensor) or table.dim() != 2:
        raise ValueError(f"table must be a tensor (n_positions, d), got {_shape_of(table)}")
    return cosine_similarity(table.detach().float(), table.detach().float())


def rope_table(x: torch.Tensor, n_positions: int, base: float = 10000.0) -> torch.Tensor:
    """The vector x (d,) rotated by RoPE to each position 0..n_positions-1: shape (n_positions, d).

    A stand-in "position table" for RoPE, which has none of its own: it rotates q and k instead.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {_shape_of(x)}")
    if x.dim() != 1:
        raise ValueError(f"x must be one vector of shape (d,), got {_shape_of(x)}")
    n_positions, _ = _table_size(n_positions, x.shape[0], "x's length d")
    return apply_rope(x.expand(n_positions, -1), base=_check_base(base))


def rope_score_matrix(
    q: torch.Tensor, k: torch.Tensor, n_positions: int, base: float = 10000.0
) -> torch.Tensor:
    """S[m, n] = RoPE(q at position m) . RoPE(k at position n): the raw attention score grid."""
    if _shape_of(q) != _shape_of(k):
        raise ValueError(f"q and k must have the same shape, got {_shape_of(q)} and {_shape_of(k)}")
    return rope_table(q, n_positions, base) @ rope_table(k, n_positions, base).T


def diagonal_spread(matrix: torch.Tensor) -> float:
    """Largest max - min along any diagonal of a square matrix: 0 iff M[m, n] depends on m - n."""
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or (
        matrix.shape[0] != matrix.shape[1]
    ):
        raise ValueError(f"matrix must be a square tensor, got {_shape_of(matrix)}")
    n = matrix.shape[0]
    spread = 0.0
    for offset in range(-(n - 1), n):
        diag = torch.diagonal(matrix, offset)
        spread = max(spread, (diag.max() - diag.min()).item())
    return spread


def similarity_by_offset(sim: torch.Tensor, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row `position` of a similarity matrix, against offset = other position - position."""
    if not isinstance(sim, torch.Tensor) or sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"sim must be a square similarity matrix (n, n), got {_shape_of(sim)}")
    n = sim.shape[0]
    position = check_int("position", position, minimum=0, maximum=n - 1)
    return torch.arange(n) - position, sim[position]


def position_similarities(
    n_positions: int, d_model: int, learned: torch.Tensor | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Cosine similarity between positions for each kind of encoding: {kind: (n, n)}.

    "sinusoidal" uses sinusoidal(n_positions, d_model); "rotary" rotates one seeded random vector
    of size d_model to every position; "learned" (only if a table is given) uses its rows.
    """
    n_positions, d_model = _table_size(n_positions, d_model)
    x = torch.randn(d_model, generator=torch.Generator().manual_seed(check_seed("seed", seed)))
    out = {
        "sinusoidal": cosine_similarity_matrix(sinusoidal(n_positions, d_model)),
        "rotary": cosine_similarity_matrix(rope_table(x, n_positions)),
    }
    if learned is not None:
        if not isinstance(learned, torch.Tensor) or learned.dim() != 2 or (
            learned.shape[0] < n_positions
        ):
            raise ValueError(
                f"learned must be an (n, d) table with n >= n_positions={n_positions}, "
                f"got {_shape_of(learned)}"
            )
        out["learned"] = cosine_similarity_matrix(learned[:n_positions].detach())
    return out


def rope_pair_rotation(
    position: int, pair: int, d_model: int, base: float = 10000.0
) -> tuple[float, float]:
    """(angle in radians, wavelength in positions) by which RoPE turns pair `pair` at `position`.

    The angle is position * base^(-2 pair / d_model): the same frequency as the sinusoidal
    encoding's dimensions 2 pair and 2 pair + 1.
    """
    _, d_model = _table_size(1, d_model)
    pair = check_int("pair", pair, minimum=0, maximum=d_model // 2 - 1)
    position = check_int("position", position, minimum=0)
    base = _check_base(base)
    freq = base ** (-2 * pair / d_model)
    return position * freq, 2 * math.pi / freq
