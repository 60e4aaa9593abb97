"""The small Shakespeare GPT and its BPE tokenizer that ship with the package."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from course_lib.model import GPT
from course_lib.tokenization import BPETokenizer

ASSET_DIR = Path(__file__).parent / "assets"
MODEL_FILE = ASSET_DIR / "shakespeare.safetensors"
TOKENIZER_FILE = ASSET_DIR / "shakespeare_tokenizer.json"
CARD_FILE = ASSET_DIR / "shakespeare_card.json"


def load_pretrained(device: str | torch.device = "cpu") -> tuple[GPT, BPETokenizer]:
    """(model, tokenizer) of the shipped model, in eval mode; reads package files only.

    Each call returns a fresh model, so a lesson may fine-tune it without touching others.
    """
    model = GPT.load(MODEL_FILE, map_location=device).eval()
    tokenizer = BPETokenizer.load(TOKENIZER_FILE)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"shipped tokenizer has {tokenizer.vocab_size} tokens but the model expects "
            f"{model.config.vocab_size}: the package files are mismatched"
        )
    return model, tokenizer


def model_card() -> dict:
    """How the shipped model was trained and what it scores (written when it was exported)."""
    return json.loads(CARD_FILE.read_text())
