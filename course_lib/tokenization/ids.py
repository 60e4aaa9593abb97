"""Token ids from a caller, checked and turned into a list of plain ints."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from course_lib.validation import check_int


def _as_id_list(ids: Iterable[int]) -> list[int]:
    """ids as a list of plain ints: from a list, tuple, numpy array or 1-D tensor of integers.

    Floats (even 3.0), booleans, strings and nested lists are a TypeError naming `ids`, so a
    wrong argument never decodes to a plausible-looking text.
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"ids must be token ids (ints), got {type(ids).__name__}: "
                        "decode takes the output of encode")
    # Lessons often hand over a torch tensor or numpy array; iterating those yields 0-d tensors
    # that are not dict keys, so convert to plain ints first.
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        raise TypeError(f"ids must be a sequence of token ids, got the single int {ids}; "
                        "wrap it in a list")
    try:
        ids = list(ids)
    except TypeError:
        raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}") from None
    if all(type(i) is int for i in ids):
        return ids
    return [check_int(f"ids[{k}]", i) for k, i in enumerate(ids)]


def _hashable_in(item: object, mapping: dict[int, Any]) -> bool:
    try:
        return item in mapping
    except TypeError:  # unhashable, e.g. a nested list
        return False


def _is_plain_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
