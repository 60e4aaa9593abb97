"""Shared fixtures: small seeded models so library tests run in seconds on a CPU."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("COURSE_DEVICE", "cpu")

from course_lib.model import GPT, GPTConfig  # noqa: E402


@pytest.fixture
def small_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
