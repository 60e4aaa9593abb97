"""Lesson 1's exercise checks: a right answer, wrong answers and None for each."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest
import regex
import torch

from course_lib.pretrained import TOKENIZER_FILE
from course_lib.tokenization import GPT4_SPLIT_PATTERN, BPETokenizer, get_encoding
from course_lib.tokenization.bpe_train import _merge_pair
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
    for bad in [None, len(NUMBER), 1, right + 1, "4", 4.5, True]:
        fb = check_number_tokens(bad)
        assert isinstance(fb, Feedback) and not fb, bad
    # The right count in any numeric type is right; a fraction is not a count.
    for same in [float(right), np.float64(right), torch.tensor(float(right)),
                 Fraction(2 * right, 2),
                 Decimal(right), complex(right, 0)]:
        assert check_number_tokens(same), same
    assert "whole number" in check_number_tokens(right + 0.5).message
    assert not check_number_tokens(float(right + 1))
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


def _merge(ids, pair, new_id):
    return _merge_pair(ids, *pair, new_id)


def _encode(text, merges, split=True, earliest=True):
    rank = {pair: i for i, pair in enumerate(merges)}
    ids = []
    for chunk in regex.findall(GPT4_SPLIT_PATTERN, text) if split else [text]:
        chunk_ids = list(chunk.encode("utf-8"))
        while len(chunk_ids) > 1:
            pairs = [p for p in pairwise(chunk_ids) if p in rank]
            if not pairs:
                break
            pair = min(pairs, key=rank.get) if earliest else pairs[0]
            chunk_ids = _merge(chunk_ids, pair, 256 + rank[pair])
        ids.extend(chunk_ids)
    return ids


def test_encode_right_and_the_usual_slips():
    from widgets.checks.tokenization import check_encode

    assert check_encode(_encode)
    assert "None" in check_encode(None).message
    assert "function" in check_encode(3).message
    no_split = check_encode(lambda t, m: _encode(t, m, split=False))
    assert not no_split and "GPT4_SPLIT_PATTERN" in no_split.message
    left_first = check_encode(lambda t, m: _encode(t, m, earliest=False))
    assert not left_first and "differ from BPETokenizer's at position" in left_first.message
    assert "learned earliest" in left_first.message
    unmerged = check_encode(lambda t, m: list(t.encode("utf-8")))
    assert not unmerged and "unmerged" in unmerged.message
    assert "returns None" in check_encode(lambda t, m: None).message
    assert "list of token ids" in check_encode(lambda t, m: "junk").message
    assert "raised" in check_encode(lambda t, m: 1 / 0).message
