"""The checks that make ranks, special tokens and merges a usable BPE vocabulary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Literal

from course_lib.tokenization.ids import _is_plain_int
from course_lib.validation import check_choice, check_int, check_str

# No real vocabulary comes near this (cl100k has 100k tokens, the largest in use about 260k);
# a bigger number is a typo, and would make tables sized by the vocabulary absurd.
MAX_VOCAB_SIZE = 2**22


def _checked_vocabulary(
    ranks: dict[bytes, int],
    special_tokens: dict[str, int] | None,
    pattern: str,
    merges: Iterable[tuple[int, int]] | None,
    merge_rule: Literal["ranks", "merges"],
) -> tuple[dict[str, int], dict[int, bytes], list[int]]:
    """BPETokenizer's arguments checked: the special tokens as a new dict, the decoder (id ->
    bytes, a special token's being its name in UTF-8) and the single bytes that have no token.

    Each problem is a TypeError or ValueError naming the first bad entry.
    """
    if not isinstance(ranks, dict):
        raise TypeError(
            f"ranks must be a dict of token bytes to ids, got {type(ranks).__name__}"
        )
    if special_tokens is not None and not isinstance(special_tokens, dict):
        raise TypeError(
            "special_tokens must be a dict of names to ids, got "
            f"{type(special_tokens).__name__}"
        )
    check_str("pattern", pattern)
    check_choice("merge_rule", merge_rule, ("ranks", "merges"))
    if merge_rule == "merges" and merges is None:
        raise ValueError("merge_rule='merges' needs the merges")
    special_tokens = dict(special_tokens or {})
    # Bulk checks first (100k tokens), the named error only for the first bad entry.
    if not all(type(t) is bytes and t for t in ranks):
        bad = next(t for t in ranks if not (isinstance(t, bytes) and t))
        raise TypeError(f"ranks must map non-empty bytes to ids, got key {bad!r:.60}")
    ids = ranks.values()
    if ranks and not (
        all(type(i) is int for i in ids) and min(ids) >= 0 and max(ids) < MAX_VOCAB_SIZE
    ):
        for i in ids:
            check_int("token id", i, minimum=0, maximum=MAX_VOCAB_SIZE - 1)
    for name, i in special_tokens.items():
        check_str("special token name", name)
        check_int(f"id of special token {name!r}", i, minimum=0, maximum=MAX_VOCAB_SIZE - 1)

    decoder: dict[int, bytes] = {i: t for t, i in ranks.items()}
    if len(decoder) != len(ranks):
        raise ValueError("ranks must give every token a different id")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing and merge_rule == "ranks":
        # Without every single byte some texts could not be encoded at all.
        raise ValueError(f"ranks must contain all 256 single bytes; missing {missing[:5]}")
    for name, i in special_tokens.items():
        if i in decoder:
            raise ValueError(f"special token {name!r} reuses id {i}, already a token")
        decoder[i] = name.encode("utf-8")
    return special_tokens, decoder, missing


def _checked_merges(
    merges: Iterable[tuple[int, int]],
    decoder: dict[int, bytes],
    ranks: dict[bytes, int],
    special_tokens: dict[str, int],
) -> list[tuple[int, int]]:
    """merges as a list of id pairs, each made of two tokens whose join is a token too."""
    specials = set(special_tokens.values())
    merges = list(merges)
    # Fast path for the 50k merges of a real vocabulary; the loop below names a bad one.
    with contextlib.suppress(ValueError, TypeError, KeyError):
        out = [(a, b) for a, b in merges]
        used = {i for pair in out for i in pair}
        if (
            all(type(i) is int for i in used)
            and used.isdisjoint(specials)
            and all(decoder[a] + decoder[b] in ranks for a, b in out)
        ):
            return out
    out = []
    for k, pair in enumerate(merges):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"merges[{k}] must be a pair of token ids, got {pair!r:.60}")
        a, b = pair
        for i in (a, b):
            if not _is_plain_int(i) or i not in decoder or i in specials:
                raise ValueError(f"merges[{k}] = {pair!r:.60} refers to an unknown token id")
        if decoder[a] + decoder[b] not in ranks:
            raise ValueError(
                f"merges[{k}] = {pair!r:.60} joins two tokens into bytes that are no token"
            )
        out.append((a, b))
    return out
