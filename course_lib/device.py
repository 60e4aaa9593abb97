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


def autocast_dtype(device: torch.device | str, bf16: bool | None = None) -> torch.dtype | None:
    """The dtype autocast runs matrix products in: bfloat16, or None for plain fp32.

    bf16=None picks bf16 where it is fast and usual (a CUDA GPU that supports it); True asks
    for bf16 on any device (on a CPU it pays off only with AMX or AVX512-BF16); False keeps
    fp32 everywhere.
    """
    device = torch.device(device)
    if bf16 is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else None


def autocast(
    device: torch.device | str, bf16: bool | None = None
) -> contextlib.AbstractContextManager:
    """An autocast context for autocast_dtype(device, bf16); a no-op when that is fp32.

    By default the CPU stays in fp32, so CPU results are exact and repeat across machines.
    """
    device = torch.device(device)
    dtype = autocast_dtype(device, bf16)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
