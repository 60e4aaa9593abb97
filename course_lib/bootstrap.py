"""Bootstrap confidence intervals: of a score over items, and of two models' difference on them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from course_lib.validation import check_float, check_int


def bootstrap_interval(
    values: Sequence[float] | torch.Tensor,
    weights: Sequence[float] | torch.Tensor | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(values) / sum(weights) (the mean without weights).

    The items are resampled with replacement n_resamples times; the interval holds the middle
    confidence of the statistic. Per-item accuracies (0/1) give an accuracy's interval; per-line
    bits with each line's characters as weights give bits per character's.
    """
    n_resamples = check_int("n_resamples", n_resamples, minimum=10)
    confidence = check_float("confidence", confidence, minimum=0.0, maximum=1.0,
                             min_inclusive=False, max_inclusive=False)
    seed = check_int("seed", seed, minimum=0)
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() < 2:
        raise ValueError(f"values must hold at least 2 numbers, got {v.numel()}")
    w = torch.ones_like(v) if weights is None else torch.as_tensor(
        weights, dtype=torch.float64).reshape(-1)
    if w.shape != v.shape:
        raise ValueError(f"weights must match values: {w.numel()} against {v.numel()}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(v), (n_resamples, len(v)), generator=g)
    stats = v[idx].sum(1) / w[idx].sum(1)
    a = (1 - confidence) / 2
    return float(stats.quantile(a)), float(stats.quantile(1 - a))


def paired_bootstrap_interval(
    values_a: Sequence[float] | torch.Tensor,
    values_b: Sequence[float] | torch.Tensor,
    weights: Sequence[float] | torch.Tensor | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of the difference A - B of two models scored on the same items.

    Each resample draws the same items for both, so what the items share (a hard line is hard
    for both) cancels: far narrower than two separate intervals. If it excludes 0, the
    difference is unlikely to be an accident of which items were drawn.
    """
    a = torch.as_tensor(values_a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(values_b, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"values_a and values_b must score the same items: {a.numel()} "
                         f"against {b.numel()}")
    # The interval of the per-item differences: each resample draws an item for A and B alike.
    return bootstrap_interval(a - b, weights, n_resamples, confidence, seed)
