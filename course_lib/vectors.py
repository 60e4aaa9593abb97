"""Vectors from any source (tensor, array, list) as float tensors, their cosine similarity, and
how well a grouping of vectors (a word's senses, say) shows in their cosines.

Low-level on purpose: embeddings, positional encodings and hidden states all compare by cosine.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GroupSeparation:
    """How a grouping shows in cosines: `same` and `other` are the mean cosine of pairs of rows in
    the same group and in different groups; `nearest_same` counts the rows whose most similar
    other row is in their own group, out of `n`; `every_pair` says whether every same-group pair
    is more similar than every cross-group pair (the strict claim, which one example can fake)."""

    same: float
    other: float
    nearest_same: int
    n: int
    every_pair: bool

    @property
    def gap(self) -> float:
        """same - other: how much closer, on average, two rows of one group are."""
        return self.same - self.other


def group_separation(vectors: torch.Tensor | np.ndarray, groups: Sequence) -> GroupSeparation:
    """Compare the cosines of same-group pairs of rows of vectors (n, d) with cross-group pairs.

    groups[i] is row i's group (any hashable label); there must be at least two groups and a
    group with two rows. Ties for the nearest row go to the lower index.
    """
    v = as_float_tensor(vectors, "vectors")
    if v.ndim != 2:
        raise ValueError(f"vectors must be a 2-D matrix (n, d), got shape {tuple(v.shape)}")
    labels = list(groups)
    if len(labels) != v.shape[0]:
        raise ValueError(f"groups must give one label per row: {len(labels)} labels for "
                         f"{v.shape[0]} rows")
    sims = cosine_similarity(v, v)
    same, other = [], []
    for i, j in itertools.combinations(range(len(labels)), 2):
        (same if labels[i] == labels[j] else other).append(float(sims[i, j]))
    if not same or not other:
        raise ValueError("groups must hold at least two labels, one of them on two rows or more")
    masked = sims.clone()
    masked.fill_diagonal_(float("-inf"))
    nearest = masked.argmax(dim=1).tolist()  # argmax returns the first of equal maxima
    return GroupSeparation(
        same=sum(same) / len(same),
        other=sum(other) / len(other),
        nearest_same=sum(labels[i] == labels[j] for i, j in enumerate(nearest)),
        n=len(labels),
        every_pair=min(same) > max(other),
    )
