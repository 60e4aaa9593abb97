"""The answer a check_... function gives a learner (right or wrong, and why), and what every
check shares: reading an answer of any type, the "no answer yet" case, running a learner's code."""

from __future__ import annotations

import functools
import html
import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Feedback:
    """Truthy when the answer is right; shows a short verdict and the reason in a notebook."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"{'Right' if self.ok else 'Not yet'}: {self.message}"

    def _repr_html_(self) -> str:
        colour, mark = ("#1b7f3b", "&#10004; Right") if self.ok else ("#b3261e", "&#10008; Not yet")
        return (
            f'<div style="border-left:4px solid {colour};padding:4px 10px">'
            f'<b style="color:{colour}">{mark}</b>: {html.escape(self.message)}</div>'
        )


def right(message: str) -> Feedback:
    return Feedback(True, _safe(message))


def wrong(message: str) -> Feedback:
    return Feedback(False, _safe(message))


# ----- shared by every check: no answer yet, reading an answer, running a learner's code -------

NO_ANSWER = "Replace None with your answer, then run the cell again."

# Beyond these an answer is not a plausible count or list for any exercise, and reading it
# further (a 5,000-digit int, an endless generator, a megabyte of text) could hang a notebook.
MAX_INT = 2**63 - 1
MAX_ITEMS = 10_000


def _safe(message: str) -> str:
    # A lone surrogate from the learner's input would make the notebook fail to show the message.
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: object, limit: int = 60) -> str:
    """A short, printable description of any value, for a message (never raises)."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            text = f"an int of about {int(value.bit_length() * 0.30103) + 1} digits"
        elif isinstance(value, (str, bytes)) and len(value) > limit:
            text = ascii(value[:limit]) + f"... ({len(value):,} long)"
        elif isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 1:
            # a printed matrix spans lines; its shape and type are what tell the learner most
            kind = "tensor" if isinstance(value, torch.Tensor) else "numpy array"
            dtype = str(value.dtype).removeprefix("torch.")
            text = f"a {kind} of shape {tuple(value.shape)} ({dtype})"
        elif inspect.isfunction(value) or inspect.ismethod(value):
            text = f"the function {value.__name__}"  # its repr's memory address means nothing
        else:
            text = ascii(value)
    except Exception:  # a learner's object whose repr raises
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exercise(no_answer: str = NO_ANSWER, read: Callable | None = None, expect: str = ""):
    """Decorator for a check_...(answer, ...): None gets `no_answer`, and whatever else happens
    while checking, the learner gets a Feedback back, never a traceback.

    With `read` (as_number, as_int, ...), the check receives read(answer); an answer it cannot
    read gets "The answer should be {expect}".
    """

    def wrap(check):
        @functools.wraps(check)
        def checked(answer=None, *args, **kwargs) -> Feedback:
            if answer is None:
                return wrong(no_answer)
            try:
                value = answer if read is None else read(answer)
                if value is None:
                    return wrong(f"The answer should be {expect}; got {shown(answer)}.")
                return check(value, *args, **kwargs)
            except Exception as e:  # a last resort: each check reads its answer carefully first
                return wrong(f"This check could not read your answer {shown(answer)} "
                             f"({type(e).__name__}). Look at the form the exercise asks for.")

        return checked

    return wrap


def _scalar(answer: object) -> object:
    """A 1-element tensor or array as its Python number; anything else unchanged."""
    if isinstance(answer, (torch.Tensor, np.ndarray, np.generic)):
        size = answer.numel() if isinstance(answer, torch.Tensor) else answer.size
        if size == 1 and answer.dtype not in (torch.bool, np.bool_) and not (
            isinstance(answer, torch.Tensor) and answer.is_complex()
        ):
            return answer.item()
    return answer


def as_number(answer: object) -> float | None:
    """answer as a finite float (int, float, numpy or torch scalar, Fraction, Decimal, a complex
    with no imaginary part), else None; not a str or a bool."""
    answer = _scalar(answer)
    if isinstance(answer, bool) or not isinstance(answer, numbers.Number):
        return None
    if isinstance(answer, complex):
        if answer.imag != 0:
            return None
        answer = answer.real
    try:
        value = float(answer)
    except (OverflowError, ValueError, TypeError):
        return None
    return value if math.isfinite(value) else None


def as_int(answer: object) -> int | None:
    """answer as an int if it is a whole number of any numeric type and of sensible size, else None.

    A count is a count whatever type holds it: 4, 4.0, numpy.float32(4), torch.tensor(4.0),
    Fraction(8, 2) and Decimal("4") all read as 4, since each equals 4. 4.5, True, "4" and NaN do
    not. (Lists of token ids, read by as_ints, stay strict: an id is an index, not a count.)
    """
    answer = _scalar(answer)
    if isinstance(answer, bool) or not isinstance(answer, numbers.Number):
        return None
    if isinstance(answer, numbers.Integral):
        value = int(answer)
    else:
        if isinstance(answer, complex):
            if answer.imag != 0:
                return None
            answer = answer.real
        try:
            value = int(answer)  # NaN and infinities raise; 4.5 becomes 4, caught just below
        except (OverflowError, ValueError, TypeError, ArithmeticError):
            return None
        if value != answer:
            return None
    return value if abs(value) <= MAX_INT else None


def _exact_int(answer: object) -> int | None:
    """answer as an int only if its type is an integer type (Python, numpy or torch)."""
    answer = _scalar(answer)
    if isinstance(answer, bool) or not isinstance(answer, numbers.Integral):
        return None
    value = int(answer)
    return value if abs(value) <= MAX_INT else None


def as_list(answer: object) -> list | None:
    """The items of a list, tuple, set, tensor, array or other finite iterable; not of a str."""
    if isinstance(answer, (torch.Tensor, np.ndarray)):
        if answer.ndim == 0 or (answer.numel() if isinstance(answer, torch.Tensor)
                                else answer.size) > MAX_ITEMS:
            return None
        return answer.tolist()
    if isinstance(answer, (str, bytes, dict)) or not isinstance(answer, Iterable):
        return None
    try:
        items = list(itertools.islice(answer, MAX_ITEMS + 1))
    except Exception:  # an iterator that raises
        return None
    return items if len(items) <= MAX_ITEMS else None


def as_numbers(answer: object) -> list[float] | None:
    """A list of finite floats, else None."""
    items = as_list(answer)
    values = None if items is None else [as_number(x) for x in items]
    return None if values is None or None in values else values


def as_ints(answer: object) -> list[int] | None:
    """A list of ints (token ids, positions, a shape), else None: each item of an integer type."""
    items = as_list(answer)
    values = None if items is None else [_exact_int(x) for x in items]
    return None if values is None or None in values else values


def as_int_pairs(answer: object) -> set[tuple[int, int]] | None:
    """A set of (int, int) pairs, else None."""
    items = as_list(answer)
    if items is None:
        return None
    pairs = [as_ints(item) for item in items]
    if any(p is None or len(p) != 2 for p in pairs):
        return None
    return {(p[0], p[1]) for p in pairs}


def as_text(answer: object, max_chars: int = 10_000) -> str | None:
    """answer if it is a str that UTF-8 can encode (no lone surrogates) of at most max_chars."""
    if not isinstance(answer, str) or len(answer) > max_chars:
        return None
    try:
        answer.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return answer


def call_learner(
    function: Callable, *args, on: str = "", if_none: str = ""
) -> tuple[object, Feedback | None]:
    """Run a learner's function: (its result, None), or (None, a Feedback saying what it raised).

    on: where it ran, added to that Feedback ("on two vectors of 8 numbers"). if_none: the
    Feedback's message when the function returns None (without it, None is a result).
    """
    if not callable(function):
        return None, wrong(f"Give a function (def ...), not {shown(function)}.")
    try:
        out = function(*args)
    except Exception as e:  # the learner's code: report whatever it raised
        where = f" ({on})." if on else ""
        return None, wrong(f"Your function raised {type(e).__name__}: {_message_of(e)}{where}")
    if out is None and if_none:
        return None, wrong(if_none)
    return out, None


def learner_number(
    function: Callable, *args, on: str, if_none: str, what: str
) -> tuple[float | None, Feedback | None]:
    """Run a learner's function that returns one number (what it is: `what`): (the number as a
    finite float, None), or (None, a Feedback saying what it raised or returned instead)."""
    out, failed = call_learner(function, *args, on=on, if_none=if_none)
    if failed is not None:
        return None, failed
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        return None, wrong(f"Return one number, {what}; got a tensor of shape "
                           f"{tuple(out.shape)} ({on}).")
    value = as_number(out)
    if value is None:
        return None, wrong(f"Return one finite number, {what}; got {shown(out)} ({on}).")
    return value, None


def learner_tensor(
    function: Callable, *args, on: str, if_none: str, what: str
) -> tuple[torch.Tensor | None, Feedback | None]:
    """Run a learner's function that returns a float tensor (what it is: `what`; a float numpy
    array counts): (the tensor, None), or (None, a Feedback saying what went wrong)."""
    out, failed = call_learner(function, *args, on=on, if_none=if_none)
    if failed is not None:
        return None, failed
    if isinstance(out, np.ndarray) and out.dtype.kind == "f":
        out = torch.from_numpy(out)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return None, wrong(f"Return a float tensor ({what}), not {shown(out)}.")
    return out, None


def _message_of(error: BaseException) -> str:
    try:
        return str(error)[:300]
    except Exception:  # an exception whose __str__ itself raises
        return type(error).__name__


# The usual forms of an answer, for exercise(..., **A_NUMBER) and the like.
A_NUMBER = {"read": as_number, "expect": "a finite number"}
A_WHOLE_NUMBER = {"read": as_int, "expect": "a whole number"}


def a_function(signature: str) -> dict:
    """exercise(**a_function("cosine(a, b)")): the answer is the learner's function."""
    return {"no_answer": f"Replace None with your function {signature}.",
            "read": _callable, "expect": f"a function (def {signature}: ...)"}


def _callable(answer: object) -> object:
    return answer if callable(answer) else None


def a_text(what: str, max_chars: int) -> dict:
    """exercise(..., **a_text("a word", 100)): the answer is a str of at most max_chars."""
    return {"read": functools.partial(as_text, max_chars=max_chars),
            "expect": f"{what}, a str of at most {max_chars:,} characters"}
