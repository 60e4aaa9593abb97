"""The JSON file that BPETokenizer.save writes and BPETokenizer.load reads, every field checked."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from course_lib.tokenization.ids import _is_plain_int
from course_lib.tokenization.patterns import KNOWN_SPLIT_PATTERNS

if TYPE_CHECKING:
    from course_lib.tokenization.bpe import BPETokenizer

_FORMAT_NAME = "course_lib.BPETokenizer"
_FORMAT_VERSION = 2  # version 1 (read, no longer written) had no merges and contiguous ids


def _tokenizer_file_bytes(tokenizer: BPETokenizer) -> bytes:
    """The bytes of a saved file: JSON, token bytes base64-encoded, in id order."""
    data: dict[str, Any] = {
        "format": _FORMAT_NAME,
        "version": _FORMAT_VERSION,
        "pattern": tokenizer.pattern,
        "merge_rule": tokenizer.merge_rule,
        "tokens": [
            [i, base64.b64encode(token).decode("ascii")]
            for token, i in sorted(tokenizer.ranks.items(), key=lambda item: item[1])
        ],
        "special_tokens": tokenizer.special_tokens,
    }
    if tokenizer.merge_rule == "merges":
        data["merges"] = [list(pair) for pair in tokenizer.merges]
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def _parse_tokenizer_file(raw: bytes) -> dict[str, Any]:
    """BPETokenizer's constructor arguments from the bytes of a saved file, every field checked."""
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict) or data.get("format") != _FORMAT_NAME:
        raise ValueError(f"no 'format': {_FORMAT_NAME!r} field")
    version = data.get("version")
    if not _is_plain_int(version) or version not in (1, 2):
        raise ValueError(f"unsupported version {version!r:.60} (1 and 2 are supported)")
    pattern = data.get("pattern")
    if not isinstance(pattern, str):
        raise ValueError("'pattern' must be a string")
    if pattern not in KNOWN_SPLIT_PATTERNS:
        raise ValueError(
            f"'pattern' {pattern!r:.80} is not a known pre-split pattern (GPT-2's or "
            "cl100k's); a pattern from a file is not compiled, it could hang encode()"
        )
    specials = data.get("special_tokens")
    if not isinstance(specials, dict) or not all(
        isinstance(k, str) and _is_plain_int(v) for k, v in specials.items()
    ):
        raise ValueError("'special_tokens' must map names to integer ids")

    if version == 1:  # ids 0..n-1 in order, tiktoken's rule
        tokens = data.get("ranks")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("'ranks' must be a list of base64 strings")
        pairs: list = list(enumerate(tokens))
        merge_rule, merges = "ranks", None
    else:
        pairs = data.get("tokens")
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and _is_plain_int(p[0]) and isinstance(p[1], str)
            for p in pairs
        ):
            raise ValueError("'tokens' must be a list of [id, base64 bytes] pairs")
        merge_rule = data.get("merge_rule")
        if merge_rule not in ("ranks", "merges"):
            raise ValueError(f"'merge_rule' must be 'ranks' or 'merges', got {merge_rule!r:.60}")
        merges = data.get("merges")
        if merge_rule == "merges" and not isinstance(merges, list):
            raise ValueError("'merges' must be a list of [id, id] pairs")
        if merge_rule == "ranks":
            merges = None
    ranks = {base64.b64decode(t, validate=True): i for i, t in pairs}
    if len(ranks) != len(pairs):
        raise ValueError("two tokens have the same bytes")
    return {"ranks": ranks, "special_tokens": specials, "pattern": pattern, "merges": merges,
            "merge_rule": merge_rule}
