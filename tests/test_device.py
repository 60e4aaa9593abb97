"""course_lib.device: how many threads torch may use inside a container with a CPU quota, and how
much memory is left to load a model into."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from course_lib import device
from course_lib.device import (
    _cgroup_cpu_limit,
    available_cpus,
    available_memory,
    configure_threads,
    warn_if_short_of_memory,
)


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    return str(tmp_path)


@pytest.mark.parametrize("v2, v1, cores", [
    ("100000 100000", None, 1.0),      # Binder: one core
    ("150000 100000", None, 1.5),
    ("max 100000", None, None),        # no quota
    (None, ("200000", "100000"), 2.0),  # cgroup v1
    (None, ("-1", "100000"), None),
    (None, None, None),                # no cgroup files at all
    ("garbage", None, None),
])
def test_cpu_quota_is_read_from_cgroup_files(tmp_path, v2, v1, cores):
    assert _cgroup_cpu_limit(_cgroup(tmp_path, v2, v1)) == cores


def test_available_cpus_is_capped_by_the_quota_and_the_affinity_mask(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(_cgroup(tmp_path, "100000 100000")) == 1
    # 1.5 cores of quota keep two threads busy: round up, but never beyond the mask.
    (tmp_path / "half").mkdir()
    assert available_cpus(_cgroup(tmp_path / "half", "150000 100000")) == min(2, affinity)
    assert available_cpus(str(tmp_path / "missing")) == affinity


def test_configure_threads_never_raises_the_count(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(1)
        assert configure_threads() == 1
    finally:
        torch.set_num_threads(before)


GB = 1024**3


def _memory(tmp_path, v2=None, v1=None, available_kb=20 * 1024**2):
    """Fake cgroup files (v2: (max, current, inactive_file); v1 the same) and /proc/meminfo."""
    if v2 is not None:
        (tmp_path / "memory.max").write_text(f"{v2[0]}\n")
        (tmp_path / "memory.current").write_text(f"{v2[1]}\n")
        (tmp_path / "memory.stat").write_text(f"anon 1000\ninactive_file {v2[2]}\nactive_file 7\n")
    if v1 is not None:
        (tmp_path / "memory").mkdir()
        (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{v1[0]}\n")
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{v1[1]}\n")
        (tmp_path / "memory" / "memory.stat").write_text(f"total_inactive_file {v1[2]}\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       32000000 kB\nMemAvailable:   {available_kb} kB\n")
    return {"cgroup_root": str(tmp_path), "meminfo": str(meminfo)}


@pytest.mark.parametrize("v2, v1, machine, free", [
    # Binder: 2 GB for the container, 1.9 GB held, 50 MB of it file cache the kernel may drop
    ((2 * GB, 1_900_000_000, 50_000_000), None, 20 * GB, 2 * GB - 1_900_000_000 + 50_000_000),
    (("max", 1_900_000_000, 0), None, 20 * GB, 20 * GB),   # no limit: the machine's MemAvailable
    ((8 * GB, GB, 0), None, 5 * GB, 5 * GB),                # the machine is shorter than the limit
    (None, (2 * GB, GB, 0), 20 * GB, GB),                   # cgroup v1
    (None, (9223372036854771712, GB, 0), 20 * GB, 20 * GB),  # v1's "no limit"
    (None, None, 20 * GB, 20 * GB),                         # no cgroup files at all
])
def test_available_memory_reads_the_container_and_the_machine(tmp_path, v2, v1, machine, free):
    assert available_memory(**_memory(tmp_path, v2, v1, available_kb=machine // 1024)) == free


def test_available_memory_is_none_where_nothing_says(tmp_path):
    assert available_memory(cgroup_root=str(tmp_path), meminfo=str(tmp_path / "no")) is None


def test_available_memory_on_this_machine_agrees_with_psutil():
    psutil = pytest.importorskip("psutil")
    ours, theirs = available_memory(), psutil.virtual_memory().available
    assert ours is not None and ours <= theirs * 1.05 + 200e6  # never more than the machine has
    assert ours >= min(theirs, 1e9) * 0.5  # and not a stray small number


def test_a_load_short_of_memory_warns_what_to_do(tmp_path):
    short = _memory(tmp_path, v2=(2 * GB, 2 * GB - 300_000_000, 0))  # 0.3 GB left
    with pytest.warns(UserWarning, match=r"takes about 0\.6 GB and only 0\.3 GB is free.*Shut them "
                                         r"down.*restart this kernel"):
        assert warn_if_short_of_memory(625e6, "Loading SmolLM2", **short)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_short_of_memory(200e6, "Loading SmolLM2", **short)
        assert not warn_if_short_of_memory(625e6, "x", cgroup_root=str(tmp_path / "none"),
                                           meminfo=str(tmp_path / "none"))


def test_load_smollm2_warns_before_loading_and_still_loads(monkeypatch):
    monkeypatch.setattr(device, "available_memory", lambda **where: 100_000_000)
    from course_lib.pretrained import load_smollm2

    with pytest.warns(UserWarning, match="Loading SmolLM2 in 4 bits takes about 0.2 GB"):
        model, tokenizer = load_smollm2(quantized=True)
    assert model.config.n_layer == 30


MEASURE_LOAD = """
import json, sys
from course_lib.pretrained import _SMOLLM2_LOAD_BYTES, load_smollm2
def rss():
    status = open("/proc/self/status").read().splitlines()
    return int(next(l for l in status if l.startswith("VmRSS")).split()[1]) * 1024
before = rss()
model = load_smollm2(quantized=sys.argv[1] == "4")
print(json.dumps([rss() - before, _SMOLLM2_LOAD_BYTES[sys.argv[1] == "4"]]))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmRSS")
@pytest.mark.parametrize("bits", ["32", "4"])
def test_smollm2_load_bytes_are_what_loading_takes(bits):
    out = subprocess.run([sys.executable, "-c", MEASURE_LOAD, bits], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    grown, stated = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.8 * stated <= grown <= 1.2 * stated, (grown, stated)
