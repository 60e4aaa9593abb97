"""What every view shares: messages to the learner, reading the learner's text, seed and numbers.

A view states only what is particular to it; how a problem is shown, how typed text becomes
token ids and how a callback is kept from raising live here, once.
"""

from __future__ import annotations

import contextlib
import functools
import html
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets

# Imported for its effect: torch uses only the cores the container's CPU quota allows.
import course_lib.device  # noqa: F401
from course_lib.validation import check_seed

# Long enough for any sensible text; beyond it encoding and drawing would only make a learner wait.
MAX_TEXT_CHARS = 20_000


def warn(text: str) -> str:
    """HTML for a problem the learner can fix (red); wraps at spaces, never mid-word."""
    return (f'<span style="color:#b3261e;white-space:normal;word-break:normal">'
            f"{html.escape(text)}</span>")


def note(text: str) -> str:
    """HTML for a remark that is not a problem (grey)."""
    return f'<span style="color:#555;white-space:normal">{html.escape(text)}</span>'


def pre(inner_html: str) -> str:
    """HTML that keeps the text's spaces and line breaks, wrapping long lines."""
    return f"<pre style='white-space:pre-wrap;font-size:13px'>{inner_html}</pre>"


def message_box() -> widgets.HTML:
    """The HTML widget a view shows its messages in; wide enough that they are not cut off."""
    return widgets.HTML(layout=widgets.Layout(width="auto", max_width="100%"))


@contextlib.contextmanager
def reported(message: widgets.HTML) -> Iterator[None]:
    """Runs a block whose failure is shown in `message` instead of raised.

    A learner's text, seed or number must never end in a traceback out of a callback; the view
    shows what went wrong and stays usable. ValueError and TypeError are ours (validation
    messages meant for the learner); anything else is shown with its type.
    """
    try:
        yield
    except (ValueError, TypeError) as e:
        message.value = warn(str(e))
    except Exception as e:  # a view stays usable whatever the library raises
        message.value = warn(f"{type(e).__name__}: {e}")


def guarded(method: Callable) -> Callable:
    """Decorates a view's callback so that a failure shows in `self.message`, not as a traceback."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        with reported(self.message):
            return method(self, *args, **kwargs)
        return None

    return wrapper


def encode_text(tokenizer: Any, text: str, *, max_tokens: int | None = None,
                what: str = "text") -> tuple[list[int], str]:
    """The learner's text as token ids, and a note to show ("" if none).

    Raises ValueError with a message for the learner when the text is empty, too long, or
    holds something the tokenizer cannot encode. With max_tokens, keeps the last max_tokens
    ids and says so in the note.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The {what} box is empty: type something first, the model needs "
                         "at least one token.")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"The {what} is {len(text):,} characters; keep it under "
                         f"{MAX_TEXT_CHARS:,}.")
    try:
        ids = [int(i) for i in tokenizer.encode(text)]
    except (ValueError, TypeError, KeyError, UnicodeError) as e:
        raise ValueError(f"This {what} cannot be tokenized: {e}") from None
    if not ids:
        raise ValueError(f"The {what} gives no tokens; type something else.")
    if max_tokens is not None and len(ids) > max_tokens:
        cut = f"That is {len(ids)} tokens; only the last {max_tokens} are shown."
        return ids[-max_tokens:], cut
    return ids, ""


def parse_seed(text: str) -> int | None:
    """A seed box's text as a seed: blank means None (random); otherwise a whole number that
    torch accepts, or a ValueError that says so."""
    text = text.strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"The seed must be a whole number or blank, got {text!r}.") from None
    try:
        return check_seed("seed", value)
    except ValueError:
        raise ValueError(f"The seed must be between 0 and 2**64 - 1, got {text}.") from None



def piece_text(data: bytes) -> str:
    """A token's bytes as text, keeping spaces and newlines; a token that holds part of a
    character shows its bytes as escapes ('\\xc3'), as course_lib.tokenization.visible_piece
    does, never as U+FFFD."""
    return data.decode("utf-8", errors="backslashreplace")
