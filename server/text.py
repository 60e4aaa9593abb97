"""Token ids in, text out while generating: UTF-8-safe pieces, cut at the first stop string."""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from course_lib.tokenization import token_pieces


class TextStream:
    """The text of a request's new tokens, released as soon as it is certain.

    Bytes go through an incremental UTF-8 decoder, as course_lib.sampling.utf8_pieces does
    (that one reads a whole iterator; here tokens arrive one event at a time), so a character
    split over tokens is released whole. Text that might be the start of a stop string is held
    back until it is not, so a client never sees part of a stop string; once one appears, the
    text ends just before it and `stopped` is True. Tokens of stop_ids (the engine ends the
    request on them) add no text.
    """

    def __init__(self, tokenizer, stop_ids: Iterable[int] = (), stop: Iterable[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop_ids = set(stop_ids)
        self._stop = tuple(stop)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # everything decoded so far (cut at a stop string)
        self._released = 0  # how much of text has gone out
        self.stopped = False

    def add(self, token: int) -> str:
        """The new text that token makes certain (often "")."""
        if self.stopped or token in self._stop_ids:
            return ""
        self.text += self._decoder.decode(token_pieces(self._tokenizer, [token])[0])
        return self._release(final=False)

    def finish(self) -> str:
        """The text still held back, at the end of the request."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)  # an unfinished character: U+FFFD
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        # A stop string starts at or after _released: anything that could begin one was held.
        hits = [i for s in self._stop if (i := self.text.find(s, self._released)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = final = True
        end = len(self.text) if final else len(self.text) - self._held_back()
        out = self.text[self._released : end]
        self._released = max(self._released, end)
        return out

    def _held_back(self) -> int:
        """Length of the longest end of text that begins a stop string."""
        longest = max((len(s) for s in self._stop), default=1)
        for k in range(min(longest - 1, len(self.text) - self._released), 0, -1):
            if any(s.startswith(self.text[-k:]) for s in self._stop):
                return k
        return 0
