"""Pick the device to run on and the autocast context that goes with it; what the machine offers
(cores, memory) to this process."""

from __future__ import annotations

import contextlib
import math
import os
import warnings

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


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):  # absent, "max" (no limit), or unreadable
        return None


def _stat_field(path: str, name: str) -> int:
    """The number after name in a file of "name value [unit]" lines, or 0."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == name:
                    return int(fields[1])
    except (OSError, ValueError):
        pass
    return 0


def available_memory(cgroup_root: str = "/sys/fs/cgroup",
                     meminfo: str = "/proc/meminfo") -> int | None:
    """Bytes this process can still take before its container or the machine runs out, or
    None where neither says (not Linux).

    A container (Binder: 2 GB for the whole session) counts every kernel in it: its limit less
    what it holds, the file cache it may drop counted as free (cgroup v2, else v1); capped by
    the machine's MemAvailable.
    """
    found = []
    for limit_file, usage_file, stat_file, cache_field in (
            (f"{cgroup_root}/memory.max", f"{cgroup_root}/memory.current",
             f"{cgroup_root}/memory.stat", "inactive_file"),
            (f"{cgroup_root}/memory/memory.limit_in_bytes",
             f"{cgroup_root}/memory/memory.usage_in_bytes",
             f"{cgroup_root}/memory/memory.stat", "total_inactive_file")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None:
            found.append(max(0, limit - usage + _stat_field(stat_file, cache_field)))
            break
    free_kb = _stat_field(meminfo, "MemAvailable:")
    if free_kb:
        found.append(free_kb * 1024)
    return min(found) if found else None


def warn_if_short_of_memory(needed_bytes: float, what: str, **where) -> bool:
    """Warn, before a load of needed_bytes, when available_memory(**where) is short of it; True
    if it warned. Without it, a kernel is stopped mid-lesson with no word of why."""
    free = available_memory(**where)
    if free is None or free >= needed_bytes:
        return False
    warnings.warn(
        f"{what} takes about {needed_bytes / 1e9:.1f} GB and only {free / 1e9:.1f} GB is free "
        "here: other notebooks' kernels may hold the rest (Binder gives 2 GB for all of them). "
        "Shut them down (JupyterLab: Kernel > Shut Down All Kernels..., or the Running panel), "
        "then restart this kernel and run the lesson again; otherwise, when memory runs out, "
        "the system stops one of the kernels (this one or another) without a word.",
        UserWarning, stacklevel=3)
    return True


# Done on import: every lesson imports course_lib.device (through widgets), before any model runs.
configure_threads()
