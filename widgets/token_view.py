"""Type text, pick a tokenizer, and see the text as coloured tokens with their ids."""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from course_lib import tokenization
from course_lib.tokenization import BPETokenizer, get_encoding, visible_piece
from widgets.common import MAX_TEXT_CHARS, guarded, message_box

__all__ = ["CodePointTokenizer", "Piece", "TokenView", "default_tokenizers", "render_pieces",
           "token_pieces"]

DEFAULT_TEXT = "To be, or not to be: that is the question.\nTokenization isn't magic: 1234567!"

# Pastel backgrounds that keep black text readable; neighbours never share a colour.
PALETTE = ("#fde2a7", "#c9e4ff", "#d5f5c6", "#ffd1dc", "#e6d7ff", "#c8f1ee")


class CodePointTokenizer:
    """Characters as tokens: one token per Unicode character, its id the code point."""

    vocab_size = 0x110000  # every code point Unicode allows

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def __repr__(self) -> str:
        return "CodePointTokenizer()"


@dataclass(frozen=True)
class Piece:
    """One token: its id, its bytes, and its text (partial=True if the bytes are not UTF-8:
    then text is their escapes, as visible_piece shows them)."""

    id: int
    data: bytes
    text: str
    partial: bool


def _encode(tokenizer: Any, text: str) -> list[int]:
    if hasattr(tokenizer, "decode_single_token_bytes"):
        # tiktoken refuses special-token strings by default; show them as the special token,
        # as our BPETokenizer.encode does.
        return tokenizer.encode(text, allowed_special="all")
    return tokenizer.encode(text)


def token_pieces(text: str, tokenizer: Any) -> list[Piece]:
    """Tokenize text and return each token with its bytes and (if whole UTF-8) its text."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids = _encode(tokenizer, text)
    pieces = []
    for token_id, data in zip(ids, tokenization.token_pieces(tokenizer, ids), strict=True):
        try:
            pieces.append(Piece(token_id, data, data.decode("utf-8"), False))
        except UnicodeDecodeError:
            # Part of a multi-byte character: byte-level BPE may split one character in pieces.
            pieces.append(Piece(token_id, data, visible_piece(data), True))
    return pieces


def render_pieces(pieces: list[Piece], show_ids: bool = True) -> str:
    """HTML: one coloured box per token, whitespace made visible, the id underneath."""
    spans = []
    for n, p in enumerate(pieces):
        border = "1px dashed #b3261e" if p.partial else "1px solid transparent"
        title = f"id {p.id}, bytes {p.data!r}"
        label = f'<br><span style="font-size:9px;color:#555">{p.id}</span>' if show_ids else ""
        spans.append(
            f'<span title="{html.escape(title)}" style="display:inline-block;'
            f"background:{PALETTE[n % len(PALETTE)]};border:{border};border-radius:3px;"
            f'margin:1px;padding:0 3px;text-align:center;font-family:monospace;'
            f'white-space:pre;line-height:1.25">{html.escape(visible_piece(p.data))}{label}</span>'
        )
        # Keep the text's own line breaks, so a poem still looks like a poem.
        spans.append("<br>" * p.text.count("\n") if not p.partial else "")
    return '<div style="line-height:2.2">' + "".join(spans) + "</div>"


@functools.cache
def _shipped_tokenizer() -> BPETokenizer:
    from course_lib.pretrained import TOKENIZER_FILE

    return BPETokenizer.load(TOKENIZER_FILE)


def default_tokenizers() -> dict[str, Any]:
    """The three tokenizers of lesson 1: characters, our Shakespeare BPE, GPT-4's cl100k_base."""
    return {
        "characters": CodePointTokenizer(),
        "Shakespeare BPE (ours)": _shipped_tokenizer(),
        "cl100k_base (GPT-4)": get_encoding("cl100k_base"),
    }


class TokenView(widgets.VBox):
    """A text box and a tokenizer choice; shows the tokens as coloured boxes and counts them.

    Controls: `text`, `tokenizer` (its value is a key of `tokenizers`), `show_ids`.
    Shown data: `pieces` (the tokens of the chosen tokenizer), `counts` (tokens per tokenizer),
    `output` (the coloured tokens, HTML) and `message` (what is wrong, if anything).
    """

    def __init__(
        self,
        tokenizers: dict[str, Any] | None = None,
        text: str = DEFAULT_TEXT,
        max_shown: int = 1500,
    ) -> None:
        self.tokenizers = dict(tokenizers) if tokenizers is not None else default_tokenizers()
        if not self.tokenizers:
            raise ValueError("tokenizers must name at least one tokenizer")
        for name, tok in self.tokenizers.items():
            if not hasattr(tok, "encode"):
                raise TypeError(f"tokenizers[{name!r}] has no encode method")
        self.max_shown = max_shown

        self.text = widgets.Textarea(
            value=text,
            placeholder="Type any text: English, another language, code, emoji...",
            layout=widgets.Layout(width="100%", height="90px"),
        )
        self.tokenizer = widgets.ToggleButtons(
            options=list(self.tokenizers), description="Tokenizer:",
            style={"button_width": "auto"},  # labels whole, not cut off mid-word
        )
        self.show_ids = widgets.Checkbox(value=True, description="show ids", indent=False)
        self.summary = widgets.HTML()
        self.output = widgets.HTML()
        self.message = message_box()
        self.pieces: list[Piece] = []
        self.counts: dict[str, int] = {}

        for control in (self.text, self.tokenizer, self.show_ids):
            control.observe(self._update, names="value")
        super().__init__(
            [
                self.text,
                widgets.HBox([self.tokenizer, self.show_ids]),
                self.summary,
                self.message,
                self.output,
            ]
        )
        self._update()

    @property
    def ids(self) -> list[int]:
        return [p.id for p in self.pieces]

    @guarded
    def _update(self, _change: object = None) -> None:
        text = self.text.value
        self.message.value = ""
        if len(text) > MAX_TEXT_CHARS:
            self.pieces, self.counts, self.summary.value, self.output.value = [], {}, "", ""
            raise ValueError(f"That is {len(text):,} characters; keep it under "
                             f"{MAX_TEXT_CHARS:,} so the tokens can be drawn.")
        if not text:
            self.pieces, self.counts = [], {}
            self.summary.value = ""
            self.output.value = "<i>Type some text above to see its tokens.</i>"
            return
        counts = {}
        for name, tok in self.tokenizers.items():
            try:
                counts[name] = len(_encode(tok, text))
            except Exception as e:  # any tokenizer's complaint is shown in the view, not raised
                counts[name] = None
                if name == self.tokenizer.value:
                    self.message.value = (
                        f'<span style="color:#b3261e">{html.escape(name)} cannot encode this '
                        f"text: {html.escape(str(e))}</span>"
                    )
        self.counts = {k: v for k, v in counts.items() if v is not None}
        name = self.tokenizer.value
        if counts[name] is None:
            self.pieces = []
            self.output.value = ""
        else:
            self.pieces = token_pieces(text, self.tokenizers[name])
            shown = self.pieces[: self.max_shown]
            more = len(self.pieces) - len(shown)
            self.output.value = render_pieces(shown, self.show_ids.value) + (
                f"<i>... and {more} more tokens not drawn.</i>" if more > 0 else ""
            )
        n_chars, n_bytes = len(text), len(text.encode("utf-8", errors="replace"))
        parts = [f"<b>{n_chars}</b> characters, <b>{n_bytes}</b> UTF-8 bytes"]
        for tok_name, n in self.counts.items():
            item = f"{html.escape(tok_name)}: <b>{n}</b> tokens"
            parts.append(f"<u>{item}</u>" if tok_name == name else item)
        self.summary.value = " &nbsp;|&nbsp; ".join(parts)
