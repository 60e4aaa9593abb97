"""Vectors from any source (tensor, array, list) as float tensors, and their cosine similarity.

Low-level on purpose: embeddings and positional encodings both compare vectors by cosine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_float_tensor(x: Any, name: str) -> torch.Tensor:
    """x as a finite floating-point tensor of 1 or 2 dimensions.

    x may be a torch tensor, a NumPy array or a nested list of real numbers; anything else gets
    a TypeError or ValueError that names the parameter `name`.
    """
    try:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        t = None
    if t is None or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a tensor, array or nested list of real numbers, "
                        f"got {type(x).__name__}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.ndim not in (1, 2) or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector or 2-D matrix, "
                         f"got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinity: a cosine of it means nothing")
    return t


def cosine_similarity(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Cosine similarity of every row of a (n, d) with every row of b (m, d): shape (n, m).

    1-D inputs drop their axis: vector-vector gives a scalar, vector-matrix gives (m,),
    matrix-vector gives (n,). Accepts torch tensors, NumPy arrays or nested lists.
    """
    ta = as_float_tensor(a, "a")
    tb = as_float_tensor(b, "b")
    if ta.shape[-1] != tb.shape[-1]:
        raise ValueError(
            f"a and b must have the same last dimension, got shapes {tuple(ta.shape)} "
            f"and {tuple(tb.shape)}"
        )
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    a2 = torch.atleast_2d(ta.to(dtype))
    b2 = torch.atleast_2d(tb.to(dtype))
    # eps keeps an all-zero row at similarity 0 instead of NaN, as torch's own version does.
    a2 = torch.nn.functional.normalize(a2, dim=-1, eps=1e-12)
    b2 = torch.nn.functional.normalize(b2, dim=-1, eps=1e-12)
    sims = a2 @ b2.T
    if ta.ndim == 1 and tb.ndim == 1:
        return sims[0, 0]
    if ta.ndim == 1:
        return sims[0]
    if tb.ndim == 1:
        return sims[:, 0]
    return sims
