"""The byte-level BPE tokenizer: ids from text and back, trained here, from tiktoken or a file."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Set
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import regex
import tiktoken

from course_lib.files import replace_atomically
from course_lib.tokenization.bpe_merge import _NO_MERGE, _merge_parts, _pair_rank
from course_lib.tokenization.bpe_train import (
    ENDOFTEXT,
    _check_vocab_size,
    _fast_train_merges,
    _train_chunks,
)
from course_lib.tokenization.file_format import _parse_tokenizer_file, _tokenizer_file_bytes
from course_lib.tokenization.ids import _as_id_list, _hashable_in
from course_lib.tokenization.offline import get_encoding
from course_lib.tokenization.patterns import GPT4_SPLIT_PATTERN
from course_lib.tokenization.vocab import _checked_merges, _checked_vocabulary
from course_lib.validation import check_choice, check_int

if TYPE_CHECKING:
    from course_lib.gguf_file import GGUFFile

# Encoded chunks are cached per tokenizer; past this many entries the cache is cleared so a
# stream of never-repeating chunks (random data, huge numbers) cannot grow memory without bound.
# Chunks longer than _CACHE_MAX_CHARS are not cached at all: they rarely repeat and are large.
_CHUNK_CACHE_LIMIT = 200_000
_CACHE_MAX_CHARS = 256

AllowedSpecial = Literal["all", "none", "none_raise"] | Set[str]


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
        special_tokens, self._decoder, missing = _checked_vocabulary(
            ranks, special_tokens, pattern, merges, merge_rule
        )
        self._vocab_size = max(self._decoder) + 1

        self.ranks: dict[bytes, int] = ranks
        self.special_tokens: dict[str, int] = special_tokens
        self.pattern: str = pattern
        self.merge_rule = merge_rule
        self._compiled = regex.compile(pattern)
        self._merges = (
            None if merges is None
            else _checked_merges(merges, self._decoder, ranks, special_tokens)
        )
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
        # Imported here, not at the top: only this method reads GGUF files, and gguf_vocab
        # imports this package's split patterns, so a top-level import would be circular.
        from course_lib.gguf_file import GGUFFile, read_gguf
        from course_lib.gguf_vocab import _tokenizer_arguments

        gguf = path if isinstance(path, GGUFFile) else read_gguf(path)
        arguments = _tokenizer_arguments(gguf, pre_split)
        try:
            return cls(**arguments)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{gguf.path}: not a usable tokenizer: {e}") from e

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
        return _merge_parts(parts, rank_of)

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
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
        path = Path(path)
        payload = _tokenizer_file_bytes(self)
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
