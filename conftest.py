"""What every test run shares, the lessons' and the library's: offline, on the CPU, and spread
over pytest-xdist workers (the README's command: -n 2) a notebook or test file to a worker.

It lives at the top of the repository because pytest reads a conftest.py only on the paths it
is given and their parents: from tests/, it was missing when the lessons ran alone
(`pytest --nbval -n 2 lessons`), whose cells were then dealt out between the workers like
independent tests and failed, and the lessons' kernels were not told to stay on the CPU.
"""

import importlib.util
import os

import pytest
import torch

# The kernels that nbval starts inherit these: nothing reaches the network, and the committed
# outputs are the CPU's even on a machine with a GPU.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("COURSE_DEVICE", "cpu")

# On pytest-xdist workers, each worker gets its share of the cores, and so do the kernels and
# JupyterLab servers it starts (they inherit the environment): two workers each running torch
# on every core would fight over them, and OpenMP threads that wait on a busy core spin.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and not os.environ.get("OMP_NUM_THREADS"):
    from course_lib.device import available_cpus

    os.environ["OMP_NUM_THREADS"] = str(max(1, available_cpus() // _WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def work_unit(nodeid: str) -> str:
    """What must run on one worker, in order: a notebook's cells (nbval runs them in one
    kernel) and a test file (its module fixtures are built once); a lesson in the browser
    stands alone, as it needs nothing the one before it left."""
    path, _, name = nodeid.partition("::")
    return nodeid if name.startswith("test_lesson_runs_in_jupyterlab[") else path


def _longest_first(nodeid: str) -> int:
    unit = work_unit(nodeid)
    return 0 if unit.endswith(".ipynb") or unit != nodeid.partition("::")[0] else 1


def _make_scheduler(config: pytest.Config, log):
    """Hands out work_unit()s, in collection order (which puts the lessons first: they are the
    longest units, and a long one handed out last would leave the other worker idle)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the collection order set below
    return ByWorkUnit(config, log)


if importlib.util.find_spec("xdist") is not None:  # pytest refuses hooks of absent plugins
    pytest_xdist_make_scheduler = _make_scheduler


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _WORKERS > 1:
        items.sort(key=lambda item: _longest_first(item.nodeid))  # stable: units keep order
