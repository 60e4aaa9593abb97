"""Pick the device to run on and the autocast context that goes with it."""

from __future__ import annotations

import contextlib
import math
import os

import torch

from course_lib.validation import check_device


def default_device() -> torch.device:
    """cuda if present, then mps, then cpu; the env var COURSE_DEVICE overrides."""
    forced = os.environ.get("COURSE_DEVICE")
    if forced:  # checked: 'cuda' on a machine without a GPU gets a message, not torch's assert
        return check_device("the environment variable COURSE_DEVICE", forced)
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


def _cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this container in cores (cgroup v2 cpu.max, else v1), or None if none."""
    candidates = ((f"{root}/cpu.max", None),
                  (f"{root}/cpu/cpu.cfs_quota_us", f"{root}/cpu/cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            with open(quota_file) as f:
                fields = f.read().split()
            if period_file is not None:
                with open(period_file) as f:
                    fields.append(f.read().strip())
        except OSError:
            continue
        if len(fields) < 2 or fields[0] in ("max", "-1"):
            return None
        try:
            quota, period = float(fields[0]), float(fields[1])
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The cores this process may really use: the affinity mask, capped by the CPU quota.

    A container limited to one core (Binder) still reports the host's cores in os.cpu_count(),
    and PyTorch would start one thread per host core, all fighting over one CPU.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def configure_threads() -> int:
    """Sets torch's intra-op threads to available_cpus(), unless OMP_NUM_THREADS says otherwise
    or torch already uses fewer; returns the number torch uses."""
    if not os.environ.get("OMP_NUM_THREADS"):
        wanted = available_cpus()
        if torch.get_num_threads() > wanted:
            torch.set_num_threads(wanted)
    return torch.get_num_threads()


# Done on import: every lesson imports course_lib.device (through widgets), before any model runs.
configure_threads()
