"""Lesson 1's exercise checks: a right answer, wrong answers and None for each."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest
import regex

from course_lib.pretrained import TOKENIZER_FILE
from course_lib.tokenization import GPT4_SPLIT_PATTERN, BPETokenizer, get_encoding
from widgets.checks.tokenization import (
    NUMBER,
    TINY_CORPUS,
    check_first_merge,
    check_number_tokens,
    check_space_word,
)
from widgets.feedback import Feedback


def test_number_tokens():
    right = len(get_encoding("cl100k_base").encode(NUMBER))
    assert check_number_tokens(right)
    assert "3" in check_number_tokens(right).message
    for bad in [None, len(NUMBER), 1, right + 1, "4", 4.0, True]:
        fb = check_number_tokens(bad)
        assert isinstance(fb, Feedback) and not fb, bad
    assert "None" in check_number_tokens(None).message
    assert "one token per digit" in check_number_tokens(len(NUMBER)).message


def test_first_merge_matches_the_lessons_counting():
    # The lesson's solution: count pairs of characters within each pre-split chunk.
    counts = Counter()
    for chunk in regex.findall(GPT4_SPLIT_PATTERN, TINY_CORPUS):
        for a, b in pairwise(chunk):
            counts[a, b] += 1
    best = min(counts, key=lambda p: (-counts[p], p))
    assert check_first_merge(best)
    assert check_first_merge(list(best))
    assert check_first_merge(tuple(ord(c) for c in best))  # byte values work too
    assert check_first_merge(tuple(c.encode() for c in best))


def test_first_merge_wrong_answers():
    assert not check_first_merge(None)
    fb = check_first_merge(("l", "o"))
    assert not fb and "occurs 3 times" in fb.message
    fb = check_first_merge(("e", "w"))
    assert not fb and "occurs" in fb.message
    fb = check_first_merge(("r", " "))
    assert not fb and "never occurs" in fb.message
    for bad in ["we", ("we",), ("w", "e", "r"), ("we", "r"), (1000, 2), 5]:
        fb = check_first_merge(bad)
        assert not fb and "tuple of two" in fb.message, bad


@pytest.fixture(scope="module")
def shipped():
    return BPETokenizer.load(TOKENIZER_FILE)


def test_space_word_with_the_lessons_solution(shipped):
    candidates = [
        t.decode().strip() for t in shipped.ranks if t.startswith(b" ") and t[1:].isalpha()
    ]
    found = [
        w for w in candidates
        if len(shipped.encode(" " + w)) == 1 and len(shipped.encode(w)) > 1
    ]
    assert found, "a 2048-token BPE trained on plays has many spaced words"
    fb = check_space_word(found[0])
    assert fb and "one token" in fb.message


def test_space_word_wrong_answers(shipped):
    both_single = next(
        t.decode() for t in shipped.ranks
        if t.isalpha() and len(t) > 2 and len(shipped.encode(" " + t.decode())) == 1
    )
    fb = check_space_word(both_single)
    assert not fb and "also a single token" in fb.message
    fb = check_space_word("Xqzvjkwp")
    assert not fb and "tokens" in fb.message
    for bad in [None, 3, "", "   ", " king", "king "]:
        assert not check_space_word(bad), bad
