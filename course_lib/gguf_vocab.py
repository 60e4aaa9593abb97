"""A GGUF file's tokenizer: its byte-level BPE vocabulary, merges and control tokens, read."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

from course_lib.tokenization.patterns import GPT2_SPLIT_PATTERN, SMOLLM_SPLIT_PATTERN
from course_lib.tokenization.vocab import MAX_VOCAB_SIZE

if TYPE_CHECKING:
    from course_lib.gguf_file import GGUFFile

# llama.cpp's token types (llama_token_type / gguf TokenType).
_GGUF_NORMAL, _GGUF_CONTROL, _GGUF_USER_DEFINED = 1, 3, 4
# Pre-split per `tokenizer.ggml.pre`. transformers: GPT-2's ByteLevel split for every name it
# has no entry for, SmolLM2's "smollm" among them. llama.cpp: "smollm" isolates every digit
# first, as SmolLM2's tokenizer.json does (only the names we test are listed).
_GGUF_PRE_SPLITS = {
    "transformers": {"default": GPT2_SPLIT_PATTERN, "gpt2": GPT2_SPLIT_PATTERN,
                     "smollm": GPT2_SPLIT_PATTERN},
    "llama.cpp": {"smollm": SMOLLM_SPLIT_PATTERN},
}


@functools.cache
def _byte_level_alphabet() -> tuple[frozenset[str], dict[int, int]]:
    """GPT-2's bytes_to_unicode, inverted: the 256 characters that stand for bytes, and a
    str.translate table turning each into the character whose code is its byte (then latin-1
    encoding gives the bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return frozenset(chars.values()), {ord(c): b for b, c in chars.items()}


def _tokenizer_arguments(
    gguf: GGUFFile, pre_split: Literal["transformers", "llama.cpp"]
) -> dict[str, Any]:
    """BPETokenizer's constructor arguments from the tokenizer in a parsed GGUF file.

    Any problem with the file's vocabulary is a ValueError naming the file. pre_split is
    already checked (`BPETokenizer.from_gguf` checks it before reading the file).
    """
    path, meta = gguf.path, gguf.metadata

    def fail(problem: str) -> ValueError:
        return ValueError(f"{path}: {problem}")

    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise fail(
            f"tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported"
        )
    pre = meta.get("tokenizer.ggml.pre", "default")
    splits = _GGUF_PRE_SPLITS[pre_split]
    pattern = splits.get(pre) if isinstance(pre, str) else None
    if pattern is None:
        raise fail(
            f"pre-tokenizer {pre!r} is not supported with pre_split={pre_split!r}; "
            f"supported: {sorted(splits)}"
        )
    tokens = meta.get("tokenizer.ggml.tokens")
    merges = meta.get("tokenizer.ggml.merges")
    if not (isinstance(tokens, list) and isinstance(merges, list)
            and all(isinstance(t, str) for t in tokens)
            and all(isinstance(m, str) for m in merges)):
        raise fail("no tokenizer.ggml.tokens and tokenizer.ggml.merges string arrays")
    types = meta.get("tokenizer.ggml.token_type", [_GGUF_NORMAL] * len(tokens))
    if not isinstance(types, list) or len(types) != len(tokens):
        raise fail("tokenizer.ggml.token_type must give one type per token")
    if len(tokens) > MAX_VOCAB_SIZE:
        raise fail(f"{len(tokens)} tokens, more than the {MAX_VOCAB_SIZE} supported")

    # Byte-level vocabularies spell each byte as a printable character (GPT-2's
    # bytes_to_unicode); a token with any other character is taken as its UTF-8 bytes,
    # the rule transformers applies.
    alphabet, table = _byte_level_alphabet()
    ranks: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for i, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        spelled = alphabet.issuperset(token)
        if kind == _GGUF_USER_DEFINED:
            raise fail(f"token {i} {token!r} is user-defined, which is not supported")
        if kind == _GGUF_CONTROL and spelled:
            specials[token] = i
            continue
        data = token.translate(table).encode("latin-1") if spelled else token.encode()
        if not data or data in ranks:
            raise fail(f"token {i} {token!r} is empty or has the bytes of another token")
        ranks[data] = i
    # Merges name tokens as the vocabulary spells them.
    ids = {token: i for i, token in enumerate(tokens)}
    merge_ids = []
    for k, merge in enumerate(merges):
        left, sep, right = merge.partition(" ")
        a, b = ids.get(left), ids.get(right)
        if not sep or a is None or b is None:
            raise fail(f"merge {k} {merge!r} is not two tokens of the vocabulary")
        merge_ids.append((a, b))
    return {"ranks": ranks, "special_tokens": specials, "pattern": pattern, "merges": merge_ids,
            "merge_rule": "merges"}
