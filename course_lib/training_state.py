"""A training run's state saved for resuming: weights, optimizer, step, random generators, history.

(A finished model's weights and config, for sharing and loading, are course_lib.checkpoints'.)
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from course_lib.files import replace_atomically

if TYPE_CHECKING:  # train imports this module: the name is for the type hint only
    from course_lib.train import TrainConfig


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, step: int, generator: torch.Generator,
                    history: dict[str, list], config: TrainConfig) -> None:
    """Write the training state atomically: a unique temporary file, fsync, then rename.

    A crash or a full disk leaves the previous checkpoint as it was and no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "generator": generator.get_state(),
        "rng": torch.get_rng_state(),
        "history": history,
        "train_config": asdict(config),
    }
    # The same atomic replacement as GPT.save: unique temporary name, fsync, rename, cleanup.
    replace_atomically(path, lambda tmp: torch.save(state, tmp))


_CHECKPOINT_KEYS = ("model", "optimizer", "step", "generator", "rng", "history")


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> dict:
    """A training checkpoint's contents, checked against model; a ValueError names the file.

    Garbage, a truncated file, a checkpoint of another shape of model, or one missing parts
    all fail here, before anything is loaded into the model.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many kinds for a bad file: unpickling, zip, EOF
        raise ValueError(f"training checkpoint {path} cannot be read (truncated or not a "
                         f"checkpoint): {type(e).__name__}: {str(e)[:200]}") from None
    lacking = [k for k in _CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if lacking:
        raise ValueError(f"{path} is not a training checkpoint of course_lib.train: it lacks "
                         f"{lacking}")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["model"].items()
           if isinstance(v, torch.Tensor)} if isinstance(ckpt["model"], dict) else {}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        wrong = [f"{k} {got[k]} vs {expected[k]}"
                 for k in sorted(set(expected) & set(got)) if expected[k] != got[k]][:3]
        raise ValueError(f"training checkpoint {path} is from another model: missing {missing}, "
                         f"unexpected {extra}, wrong shapes {wrong}")
    if not isinstance(ckpt["step"], int) or ckpt["step"] < 0:
        raise ValueError(f"training checkpoint {path} has a bad step {ckpt['step']!r}")
    return ckpt


def restore_checkpoint(ckpt: dict, path: str | os.PathLike, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    """Load ckpt (from load_checkpoint) into model, optimizer, generator and torch's rng."""
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        model.load_state_dict(backup)  # a failed resume leaves the model as it was
        raise ValueError(f"training checkpoint {path} does not fit this model and optimizer: "
                         f"{str(e)[:200]}") from None
