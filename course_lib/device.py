"""Pick the device to run on and the autocast context that goes with it."""

from __future__ import annotations

import contextlib
import os

import torch

_ALLOWED = ("cpu", "cuda", "mps")


def default_device() -> torch.device:
    """cuda if present, then mps, then cpu; the env var COURSE_DEVICE overrides."""
    forced = os.environ.get("COURSE_DEVICE")
    if forced:
        if forced.split(":")[0] not in _ALLOWED:
            raise ValueError(f"COURSE_DEVICE must be one of {_ALLOWED}, got {forced!r}")
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """bf16 where the hardware runs it fast (CUDA with bf16 support), otherwise None (fp32)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """An autocast context: bf16 on a GPU, a no-op on the CPU so CPU results stay exact."""
    device = torch.device(device)
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
