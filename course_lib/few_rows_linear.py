"""A float32 linear layer whose products with a few rows (decoding) stream its weights faster.

torch's F.linear hands one row (one decoded token) to MKL's matrix-vector routine, which on
this course's machine (an AMD EPYC, one core) reads a float32 (out, in) matrix at about 10 GB/s.
The same matrix times two rows, computed as W @ X^T, goes through MKL's matrix-matrix routine at
about 18 GB/s, closer to the speed at which the core reads memory at all. So a single row is sent
with a copy of itself and the extra result dropped: twice the arithmetic, the same bytes, about
half the time. Up to MAX_ROWS rows that form is also faster than F.linear (a small batch of
sequences, a beam of four); more rows (a prompt, training) take F.linear.
`python scripts/measure_decode_floor.py --products` measures each shape of SmolLM2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# SmolLM2's decode step on one core, W @ X^T against F.linear (measure_decode_floor.py
# --batches): 1.5x for one sequence, 2.4x for two, 1.3x for four, 0.95x for eight.
MAX_ROWS = 4


def few_rows_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (rows, in) @ weight (out, in)^T for 1 <= rows <= MAX_ROWS, as W @ X^T.

    Equals F.linear(x, weight) up to the order of the additions (the last digits).
    """
    rows = x.shape[0]
    if rows == 1:  # MKL takes its matrix-vector routine for one column: give it two
        x = torch.cat([x, x])  # a real copy: a broadcast row (stride 0) is slow again
    # The product comes out (out, rows), one column per row: turned into rows (a small copy),
    # so that what follows gets the memory order F.linear gives.
    return torch.mm(weight, x.t()).t()[:rows].contiguous()


def takes_few_rows_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether few_rows_product is the faster way to multiply x by weight here: float32 on
    the CPU with MKL, at most MAX_ROWS rows, and no gradient to compute (training keeps
    F.linear, whose backward is the one everything else is measured with)."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and torch.backends.mkl.is_available()
            and x.numel() <= MAX_ROWS * weight.shape[1] and x.numel() > 0
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


class FewRowsLinear(nn.Linear):
    """nn.Linear (the same parameters and results) that multiplies a few rows as W @ X^T."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not takes_few_rows_path(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        y = few_rows_product(x.reshape(-1, self.in_features), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    @classmethod
    def taking_over(cls, linear: nn.Linear) -> FewRowsLinear:
        """A FewRowsLinear holding linear's own parameters (shared, not copied: a tied output
        layer stays tied to its embedding)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.register_parameter("bias", linear.bias)
        new.train(linear.training)
        return new


def bare_product(linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (rows, in) -> x W^T as linear computes it, without the module call or the bias (what
    a benchmark times as the layer's product): few_rows_product for a FewRowsLinear, F.linear
    for a plain nn.Linear."""
    multiply = few_rows_product if isinstance(linear, FewRowsLinear) else F.linear
    weight = linear.weight
    return lambda x: multiply(x, weight)


def use_few_rows_linears(model: nn.Module) -> nn.Module:
    """Replace every plain nn.Linear of model by a FewRowsLinear on the same parameters."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, FewRowsLinear.taking_over(child))
    return model
