"""The character-level tokenizer: one token per character of a text."""

from __future__ import annotations

from collections.abc import Iterable

from course_lib.tokenization.ids import _as_id_list, _hashable_in
from course_lib.validation import check_str


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
