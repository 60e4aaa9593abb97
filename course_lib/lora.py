"""LoRA: train a low-rank update B @ A beside frozen weights, then merge it in."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
from torch import nn

from course_lib.validation import check_float, check_int, check_module


class LoRALinear(nn.Module):
    """base(x) + (alpha / rank) * x A^T B^T, with base frozen; B starts at zero, so at first
    the layer computes exactly what base does."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        rank, alpha, dropout = _check_settings(rank, alpha, dropout)
        rank = check_int(  # a larger rank is a full matrix again, with more parameters
            "rank", rank, minimum=1, maximum=min(base.in_features, base.out_features)
        )
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as in the LoRA paper's code
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update dW = (alpha / rank) * B @ A that merging adds to the base weight."""
        return self.lora_B @ self.lora_A * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function, with dW folded in."""
        out = nn.Linear(
            self.base.in_features, self.base.out_features, bias=self.base.bias is not None
        ).to(self.base.weight.device, self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _check_settings(rank, alpha, dropout) -> tuple[int, float, float]:
    return (
        check_int("rank", rank, minimum=1),
        check_float("alpha", alpha, minimum=0, min_inclusive=False),
        check_float("dropout", dropout, minimum=0, maximum=1, max_inclusive=False),
    )


def add_lora(
    model: nn.Module,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Iterable[str] = ("c_attn",),
    dropout: float = 0.0,
) -> nn.Module:
    """Freeze model and wrap each nn.Linear whose name ends with a target in a LoRALinear.

    targets: a tuple of name endings, ("c_attn", "c_proj"); a plain string is one name, and a
    string holding several ("c_attn, c_proj") is refused rather than read as one.

    A second call may add other layers; adapters already there stay trainable. Everything is
    checked before anything changes: a call that raises leaves the model as it was.
    """
    model = check_module("model", model)
    rank, alpha, dropout = _check_settings(rank, alpha, dropout)
    targets = _check_targets(targets)
    layers = lora_target_layers(model, targets)
    if not layers:
        raise ValueError(f"no nn.Linear layer in the model matches targets={targets}")
    done = sorted(n for n in layers if isinstance(model.get_submodule(n), LoRALinear))
    if done:
        raise ValueError(f"{done[0]} already has a LoRA adapter: merge_lora(model) first, or "
                         "choose targets that are not wrapped yet")
    for name, layer in layers.items():
        most = min(layer.in_features, layer.out_features)
        if rank > most:
            raise ValueError(f"rank must be at most {most} for layer {name} "
                             f"({layer.in_features} in, {layer.out_features} out), got {rank}")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:  # LoRALinear freezes its base as it is built
        wrappers = {name: LoRALinear(layer, rank, alpha, dropout) for name, layer in layers.items()}
    except BaseException:
        for p, flag in flags:
            p.requires_grad_(flag)
        raise
    adapters = {id(p) for m in model.modules() if isinstance(m, LoRALinear)
                for p in (m.lora_A, m.lora_B)}
    for p, _ in flags:
        p.requires_grad_(id(p) in adapters)
    for name, wrapper in wrappers.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, wrapper)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by a plain nn.Linear with the update folded in."""
    model = check_module("model", model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights: what you need to save to share a fine-tune."""
    model = check_module("model", model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if "lora_" in k}


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters that will be trained, all parameters), counting tied weights once."""
    model = check_module("model", model)
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


# ----- counting, memory, saving, and a text to fine-tune on ----------------------------------


def lora_target_layers(
    model: nn.Module, targets: Iterable[str] = ("c_attn",)
) -> dict[str, nn.Linear]:
    """The nn.Linear layers that add_lora(model, targets=targets) wraps, by full name.

    Layers already wrapped in a LoRALinear count by their base layer, so the answer is the same
    before and after add_lora.
    """
    model = check_module("model", model)
    targets = _check_targets(targets)
    found: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            if name.endswith(targets):
                found[name] = module.base
        elif isinstance(module, nn.Linear) and name.endswith(targets):
            if not name.endswith(".base"):  # the inside of a LoRALinear, counted above
                found[name] = module
    return found


def _check_targets(targets) -> tuple[str, ...]:
    if isinstance(targets, str):  # one name, not its letters
        names = tuple(n for n in re.split(r"[,;\s]+", targets) if n)
        if len(names) > 1 or (names and names[0] != targets):
            raise ValueError(f"targets={targets!r} is one string holding several names or "
                             f"spaces: give a tuple of layer names, like {names}")
        targets = (targets,)
    try:
        targets = tuple(targets)
    except TypeError:
        raise TypeError(
            f"targets must be layer names like ('c_attn',), got {targets!r:.60}"
        ) from None
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(
            f"targets must be non-empty layer names like ('c_attn',), got {targets!r:.60}"
        )
    return targets


def lora_parameter_count(
    model: nn.Module, rank: int, targets: Iterable[str] = ("c_attn",)
) -> int:
    """Trainable parameters add_lora(model, rank, targets=targets) would add: rank * (in + out)
    per wrapped layer. Nothing is built or changed."""
    model = check_module("model", model)
    rank = check_int("rank", rank, minimum=1)
    targets = _check_targets(targets)
    layers = lora_target_layers(model, targets)
    if not layers:
        raise ValueError(f"no nn.Linear layer in the model matches targets={targets}")
    return sum(rank * (layer.in_features + layer.out_features) for layer in layers.values())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in an optimizer's state (AdamW: two moments per trained parameter)."""
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0  # skip AdamW's scalar step counters
    )


def gradient_bytes(model: nn.Module) -> int:
    """Bytes held in the .grad tensors of the model's parameters (tied weights once)."""
    model = check_module("model", model)
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or p.grad is None:
            continue
        seen.add(id(p))
        total += p.grad.numel() * p.grad.element_size()
    return total


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Copy adapter weights (from lora_state_dict) into a model that add_lora has prepared
    with the same rank and targets; mismatches are a ValueError, not a silent partial load."""
    model = check_module("model", model)
    own = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    if not own:
        raise ValueError(
            "model has no LoRA layers: call add_lora(model, rank, alpha, targets) first"
        )
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"adapter does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(were add_lora's targets the same?)"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ValueError(
                f"adapter tensor {k} has shape {tuple(v.shape)} but the model's is "
                f"{tuple(own[k].shape)} (was add_lora's rank the same?)"
            )
    model.load_state_dict(state, strict=False)
    return model


def lora_budget(model: nn.Module, targets: Iterable[str] = ("c_attn",)) -> dict[str, int]:
    """What LoRA on `targets` costs against the model, without building anything.

    per_rank: trainable parameters per unit of rank (sum of in + out over the wrapped layers,
    so rank r trains r * per_rank); full: the same layers' weight matrices trained in full
    (sum of in * out); max_rank: the largest rank every wrapped layer allows (min of in, out);
    base_total: the model's own parameters, adapters excluded, tied weights counted once.
    """
    model = check_module("model", model)
    targets = _check_targets(targets)
    layers = list(lora_target_layers(model, targets).values())
    if not layers:
        raise ValueError(f"no nn.Linear layer in the model matches targets={targets}")
    seen: set[int] = set()
    base_total = 0
    for name, p in model.named_parameters():
        if "lora_" not in name and id(p) not in seen:
            seen.add(id(p))
            base_total += p.numel()
    return {
        "per_rank": sum(m.in_features + m.out_features for m in layers),
        "full": sum(m.in_features * m.out_features for m in layers),
        "max_rank": min(min(m.in_features, m.out_features) for m in layers),
        "base_total": base_total,
    }
