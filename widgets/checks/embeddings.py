"""Checks for lesson 2's exercises: the embedding table's size, search by meaning, a query,
cosine similarity (code)."""

from __future__ import annotations

import functools
import re

import torch

from course_lib.embeddings import SemanticIndex, cosine_similarity, load_sentence_model
from widgets.checks import shipped
from widgets.feedback import (
    A_WHOLE_NUMBER,
    Feedback,
    a_function,
    a_text,
    as_int,
    exercise,
    learner_number,
    right,
    shown,
    wrong,
)

__all__ = [
    "LINES",
    "PIZZA",
    "QUERY",
    "WINES",
    "check_closest_line",
    "check_cosine_similarity",
    "check_pizza_query",
    "check_table_size",
]

# Exercise 2: which line is closest in meaning to QUERY? It shares no word with any line.
LINES = [
    "Now is the winter of our discontent",
    "If music be the food of love, play on",
    "All the world's a stage",
    "Parting is such sweet sorrow",
    "Double, double toil and trouble",
]
QUERY = "I am very sad"

# Exercise 3: the wine list of the lesson; a query must bring PIZZA to the top without its words.
WINES = [
    "A bold red that goes well with steak",
    "A sweet dessert pick for chocolate cake",
    "A sparkling bottle for birthday parties",
    "A crisp white that is good with fish",
    "A light red for pizza night",
]
PIZZA = WINES[4]
BANNED = ("light", "red", "pizza", "night")
# A banned word in any form counts as the word: "pizzas", "pizzeria", "Pizza's", "tonight",
# "midnight", "moonlight", "lighter", "reddish". Words that only share letters do not:
# "slight", "delight", "knight", "reduce", "bored".
_BANNED_FORM = re.compile(
    r"(?:to|mid|over|fort|week|moon|sun|twi|star|candle|day|fire|lamp)?(light|night)[a-z]*"
    r"|(pizz)[a-z]*|(red)(?:s|der|dest|dish)?"
)
MAX_QUERY_CHARS = 1000  # the model reads 256 tokens at most anyway


def _table_shape() -> tuple[int, int]:
    vocab_size, n_embd = shipped()[0].transformer.wte.weight.shape
    return vocab_size, n_embd


@functools.cache
def _index(texts: tuple[str, ...]) -> SemanticIndex:
    return SemanticIndex(list(texts), load_sentence_model())


@exercise("Replace None with a whole number: the count of numbers in the table.", **A_WHOLE_NUMBER)
def check_table_size(answer: int) -> Feedback:
    """Exercise 1: how many numbers the shipped model's token embedding table holds."""
    vocab_size, n_embd = _table_shape()
    expected = vocab_size * n_embd
    if answer == expected:
        return right(
            f"{vocab_size} rows (one per token) times {n_embd} numbers per row = {expected:,}. "
            "The same matrix is reused as the output layer (weight tying), so it is counted once."
        )
    if answer == 2 * expected:
        return wrong(
            "That counts the table twice. The output layer lm_head shares this very matrix "
            "(weight tying), so there is only one table."
        )
    if answer == vocab_size + n_embd:
        return wrong("The table is a matrix: multiply rows by columns rather than adding them.")
    if answer in (vocab_size, n_embd):
        return wrong("That is only one side of the table. How many rows, and how long is each?")
    return wrong(
        f"Not {answer:,}. The table has one row per token in the vocabulary, and each row is one "
        "token's vector: look at model.transformer.wte.weight.shape."
    )


@exercise("Replace None with the line you think is closest (the text, or its index).")
def check_closest_line(answer: str | int | None) -> Feedback:
    """Exercise 2: the line of LINES that all-MiniLM-L6-v2 puts closest to QUERY."""
    if not isinstance(answer, str) and as_int(answer) is not None:
        if not 0 <= as_int(answer) < len(LINES):
            return wrong(f"An index must be between 0 and {len(LINES) - 1}.")
        answer = LINES[as_int(answer)]
    if not isinstance(answer, str):
        return wrong(f"Give the line as a str (or its index), not {shown(answer)}.")
    if answer.strip() not in LINES:
        return wrong("That is not one of the lines: copy one of LINES exactly, or give its index.")
    (best, score), (_, second) = _index(tuple(LINES)).search(QUERY, 2)
    if answer.strip() == best:
        return right(
            f"{best!r} has cosine {score:.3f} with {QUERY!r}, against {second:.3f} for the "
            "runner-up, without sharing a single word with it: the match is by meaning."
        )
    return wrong(
        "The model puts another line closer. Which line is about the feeling, even though "
        "none of them says 'sad'? Check with SemanticIndex(LINES).search(QUERY)."
    )


def banned_words(query: str) -> dict[str, str]:
    """The words of query that are a form of a word in BANNED, each with the word it comes from."""
    found = {}
    for word in re.findall(r"[a-z]+", query.lower()):
        match = _BANNED_FORM.fullmatch(word)
        if match:
            stem = next(group for group in match.groups() if group)
            found[word] = next(banned for banned in BANNED if banned.startswith(stem))
    return found


@exercise("Replace None with your query, a str.", **a_text("your query", MAX_QUERY_CHARS))
def check_pizza_query(query: str) -> Feedback:
    """Exercise 3: a query that ranks PIZZA first among WINES without any of BANNED's words."""
    if not query.strip():
        return wrong("The query is empty: type some words.")
    used = banned_words(query)
    if used:
        forms = ", ".join(f"{word!r} ({root})" for word, root in used.items())
        return wrong(f"Your query uses {forms}: a form of a banned word is the word. Find "
                     "other words with the same meaning.")
    results = _index(tuple(WINES)).search(query, len(WINES))
    top, score = results[0]
    pizza_score = dict(results)[PIZZA]
    if top == PIZZA:
        return right(
            f"{PIZZA!r} ranks first with cosine {score:.3f}, and your query shares none of its "
            "words: that is search by meaning."
        )
    rank = [text for text, _ in results].index(PIZZA) + 1
    return wrong(
        f"Your query lands closest to {top!r} (cosine {score:.3f}); the pizza wine is number "
        f"{rank} ({pizza_score:.3f}). Describe the food or the occasion in other words."
    )


# ----- Exercise 4 (code): cosine similarity ---------------------------------------------------


def _cosine_trials() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(what, a, b): random pairs, a scaled copy, an opposite, an orthogonal pair."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(8, generator=g), torch.randn(8, generator=g)
    c = torch.randn(384, generator=g) * 3 + 1  # far from unit length, as raw embeddings are
    u = torch.randn(16, generator=g)
    w = torch.randn(16, generator=g)
    w = w - (w @ u) / (u @ u) * u  # the part of w at right angles to u
    return [
        ("two random vectors of 8 numbers", a, b),
        ("two random vectors of 384 numbers", c, torch.randn(384, generator=g) * 0.1),
        ("a vector and 5 times itself", a, 5 * a),
        ("a vector and minus 2 times itself", c, -2 * c),
        ("two vectors at right angles", u, w),
    ]


@exercise(**a_function("cosine(a, b)"))
def check_cosine_similarity(fn: object) -> Feedback:
    """Exercise 4: fn(a, b) -> the cosine similarity of two 1-D tensors, one number.

    Exercise text to paste:

    Write `cosine(a, b)` for two 1-D tensors of the same length: their dot product divided by
    the product of their lengths (norms). The check compares it with
    `course_lib.embeddings.cosine_similarity` on random vectors, a vector and a scaled copy,
    and two vectors at right angles.

        def cosine(a, b):
            ...  # return one number

        check_cosine_similarity(cosine)

    Solution:

        def cosine(a, b):
            return (a @ b) / (a.norm() * b.norm())

        check_cosine_similarity(cosine)
    """
    for what, a, b in _cosine_trials():
        value, failed = learner_number(
            fn, a.clone(), b.clone(), on=f"on {what}", what="the cosine of the two vectors",
            if_none="Your function returns None: return the cosine, one number.")
        if failed is not None:
            return failed
        expected = float(cosine_similarity(a, b))
        if abs(value - expected) < 1e-4:
            continue
        dot, na, nb = float(a @ b), float(a.norm()), float(b.norm())
        slips = {
            "That is the dot product alone: divide it by the two lengths, a.norm() * b.norm().":
                dot,
            "Divide by both lengths, a's and b's.": dot / na,
            "Divide by the lengths, not the squared lengths: a.norm() is sqrt(a @ a).":
                dot / (na * nb) ** 2,
            "That is the distance, not the angle: use the dot product over the lengths.":
                float((a - b).norm()),
        }
        why = next((w for w, v in slips.items() if abs(value - v) < 1e-4 * max(1, abs(v))),
                   "Compute (a @ b) / (a.norm() * b.norm()).")
        return wrong(f"On {what} the cosine is {expected:.4f}; yours gives {value:.4f}. {why}")
    return right("Your cosine equals the library's on every pair: 1 for a vector and any "
                 "positive multiple of it, -1 for a negative one, 0 at right angles. Length "
                 "does not count, only direction.")
