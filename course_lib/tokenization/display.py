"""Token pieces: the one way to turn ids into the bytes of each token, and to show them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tiktoken

from course_lib.tokenization.bpe import BPETokenizer
from course_lib.tokenization.ids import _as_id_list

# Whitespace made visible, as editors do: otherwise a token " the" looks like "the".
_VISIBLE_WHITESPACE = {" ": "\u00b7", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}
_EMPTY_PIECE = "\u2205"


def token_pieces(tokenizer: Any, ids: Iterable[int]) -> list[bytes]:
    """The bytes of each token; joined, they are exactly the bytes of the decoded text.

    Works for BPETokenizer, CharTokenizer, a tiktoken Encoding, any tokenizer with a
    `decode_bytes(ids) -> bytes`, and any with a `decode(ids) -> str` of whole characters. A
    token holding part of a character keeps its own bytes (decoding it alone would give
    U+FFFD). ids: a list, a 1-D array or tensor, or a batch of one sequence.
    """
    if hasattr(ids, "ndim") and ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    ids = _as_id_list(ids)
    if isinstance(tokenizer, BPETokenizer):
        return [tokenizer.token_bytes(i) for i in ids]
    if isinstance(tokenizer, tiktoken.Encoding):
        pieces = []
        for i in ids:
            try:
                pieces.append(tokenizer.decode_single_token_bytes(i))
            except (KeyError, OverflowError, ValueError):
                raise ValueError(
                    f"ids must be token ids of {tokenizer.name} (in [0, {tokenizer.n_vocab}) "
                    f"and assigned), got {i}"
                ) from None
        return pieces
    if callable(getattr(tokenizer, "decode_bytes", None)):  # another byte-level tokenizer
        return [tokenizer.decode_bytes([i]) for i in ids]
    if not callable(getattr(tokenizer, "decode", None)):
        raise TypeError(f"tokenizer must have a decode method, got {type(tokenizer).__name__}")
    # Character tokenizers: every token is whole characters, so decoding one alone is exact.
    return [tokenizer.decode([i]).encode("utf-8", errors="surrogatepass") for i in ids]


def visible_piece(piece: str | bytes) -> str:
    """A token's text made visible: whitespace as editors show it, nothing invisible or lost.

    A space shows as '·', a newline '↵', a tab '→', a carriage return '␍', an empty piece '∅';
    other invisible characters as escapes ('\\u200d'). Bytes that are not whole UTF-8 (part of a
    character split across tokens) show as their hex escapes ('\\xf0\\x9f'), never as U+FFFD.
    """
    if isinstance(piece, (bytes, bytearray)):
        piece = bytes(piece).decode("utf-8", errors="backslashreplace")
    elif not isinstance(piece, str):
        raise TypeError(f"piece must be str or bytes, got {type(piece).__name__}")
    if not piece:
        return _EMPTY_PIECE
    if piece.isprintable():  # the common case: no whitespace but plain spaces to map
        return piece.replace(" ", _VISIBLE_WHITESPACE[" "])
    out = []
    for c in piece:
        if c in _VISIBLE_WHITESPACE:
            out.append(_VISIBLE_WHITESPACE[c])
        elif c.isprintable():
            out.append(c)
        else:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
