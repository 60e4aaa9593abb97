"""course_lib.device: how many threads torch may use inside a container with a CPU quota."""

import os

import pytest
import torch

from course_lib.device import _cgroup_cpu_limit, available_cpus, configure_threads


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
