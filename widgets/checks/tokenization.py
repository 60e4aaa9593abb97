"""Checks for lesson 1's exercises: digit groups, the first BPE merge, the leading space,
encode with merges (code)."""

from __future__ import annotations

import functools
import random
import warnings
from collections import Counter
from itertools import pairwise

import regex

from course_lib.tokenization import (
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    get_encoding,
    naive_train_bpe,
)
from course_lib.tokenization.bpe_train import _merge_pair
from widgets.checks import shipped
from widgets.feedback import (
    A_WHOLE_NUMBER,
    Feedback,
    a_function,
    a_text,
    as_int,
    as_ints,
    as_list,
    as_text,
    call_learner,
    exercise,
    right,
    shown,
    wrong,
)

__all__ = [
    "NUMBER",
    "TINY_CORPUS",
    "check_encode",
    "check_first_merge",
    "check_number_tokens",
    "check_space_word",
]

# Exercise 1: how many cl100k_base tokens is this number?
NUMBER = "31415926535"
# Exercise 2: the corpus whose first merge the learner finds. The obvious guess ("l", "o")
# is not the answer, which is the point.
TINY_CORPUS = "low lower lowest newer newest"
MAX_WORD_CHARS = 100  # a word, not a text: no token is longer


@exercise("Replace None with your prediction, a whole number such as 5.", **A_WHOLE_NUMBER)
def check_number_tokens(answer: int) -> Feedback:
    """Exercise 1: the number of cl100k_base tokens in NUMBER."""
    enc = get_encoding("cl100k_base")
    ids = enc.encode(NUMBER)
    if answer == len(ids):
        pieces = [enc.decode([i]) for i in ids]
        return right(
            f"{NUMBER} is {len(ids)} tokens: {pieces}. The pre-split regex cuts runs of digits "
            "into groups of at most 3 (\\p{N}{1,3}), and each group is a single token."
        )
    if answer == len(NUMBER):
        return wrong(
            "That is one token per digit. Look at the pre-split pattern: how long can a run of "
            "digits (\\p{N}) be before it is cut?"
        )
    if answer == 1:
        return wrong(
            "A number this long is not one token: the pre-split regex cuts it before BPE ever "
            "sees it. How long may a group of digits be in GPT4_SPLIT_PATTERN?"
        )
    return wrong(
        f"Not {answer}. The pattern cuts the {len(NUMBER)} digits into groups of at most 3, "
        "and cl100k_base has a token for every group of 1 to 3 digits. How many groups, "
        "counting from the left?"
    )


def _pair_counts(text: str) -> Counter[tuple[bytes, bytes]]:
    counts: Counter[tuple[bytes, bytes]] = Counter()
    for chunk in regex.findall(GPT4_SPLIT_PATTERN, text):
        data = chunk.encode("utf-8")
        for a, b in pairwise(data):
            counts[bytes([a]), bytes([b])] += 1
    return counts


def _as_byte_pair(answer: object) -> tuple[bytes, bytes] | None:
    items = as_list(answer)
    if items is None or len(items) != 2:
        return None
    out = []
    for part in items:
        if isinstance(part, str):
            part = (as_text(part, 4) or "").encode("utf-8")
        elif as_int(part) is not None and 0 <= as_int(part) < 256:
            part = bytes([as_int(part)])
        if not isinstance(part, bytes) or len(part) != 1:
            return None
        out.append(part)
    return out[0], out[1]


@exercise('Replace None with a pair of two characters, like ("l", "o").')
def check_first_merge(answer: tuple[str, str] | None) -> Feedback:
    """Exercise 2: the first pair BPE merges when trained on TINY_CORPUS, e.g. ("l", "o")."""
    pair = _as_byte_pair(answer)
    if pair is None:
        return wrong(
            'Give the pair as a tuple of two single characters, like ("l", "o") '
            "(byte values such as (108, 111) work too)."
        )
    first = naive_train_bpe(TINY_CORPUS, 258)[0]
    best = (bytes([first[0]]), bytes([first[1]]))
    counts = _pair_counts(TINY_CORPUS)
    shown = (pair[0].decode("latin-1"), pair[1].decode("latin-1"))
    best_shown = (best[0].decode(), best[1].decode())
    if pair == best:
        return right(
            f"{best_shown} occurs {counts[best]} times, more than any other pair: in lower, "
            "lowest, newer and newest. Counting beats intuition: 'lo' is only in 3 words."
        )
    if counts[pair] == 0:
        return wrong(
            f"{shown} never occurs in {TINY_CORPUS!r} (the regex splits the text into words "
            "first, each with its leading space, so no pair spans two words)."
        )
    return wrong(
        f"{shown} occurs {counts[pair]} times, but another pair occurs {counts[best]} times. "
        "Count every adjacent pair in every word."
    )


@exercise("Replace None with a word (a str), without a leading space.",
          **a_text("a word", MAX_WORD_CHARS))
def check_space_word(word: str) -> Feedback:
    """Exercise 3: a word that is one token with a leading space but several tokens without."""
    if not word.strip():
        return wrong("The word is empty: type some letters.")
    if word != word.strip():
        return wrong(f"Give the word without spaces around it ({word.strip()!r}); the check adds "
                     "the leading space itself.")
    tok = shipped()[1]
    with_space = tok.pieces(" " + word)
    without = tok.pieces(word)
    shown_with = [t for _, t in with_space]
    shown_without = [t for _, t in without]
    if len(with_space) == 1 and len(without) > 1:
        return right(
            f"' {word}' is one token (id {with_space[0][0]}) but {word!r} is "
            f"{len(without)}: {shown_without}. Mid-sentence words come after a space, so BPE "
            "learned the spaced form as a whole; the bare form is rarer."
        )
    if len(with_space) > 1:
        return wrong(
            f"' {word}' is {len(with_space)} tokens ({shown_with}), not one. Try a common "
            "word from the plays."
        )
    return wrong(
        f"{word!r} is also a single token ({shown_without}), so the space does not matter "
        "for it. Try another word."
    )


# ----- Exercise 4 (code): encode a text with a list of merges --------------------------------

# Repeated letters make merges; é and 日 are several bytes; the regex cuts runs of digits into
# threes, so a merge of two 1s would also fit across a chunk boundary.
_ENCODE_ALPHABET = "aabbbcdeé 日111"


@functools.cache
def _encode_trials() -> list[tuple[str, list[tuple[int, int]], list[int]]]:
    """(text, merges, the library's ids): merges learned by BPETokenizer.train on small random
    texts, and fresh random texts to encode with them."""
    rng = random.Random(1)
    trials = []
    for n_merges, length in ((0, 12), (5, 30), (20, 60), (40, 120)):
        corpus = "".join(rng.choice(_ENCODE_ALPHABET) for _ in range(600)) + " 1111" * 40
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a tiny corpus may run out of repeated pairs
            tok = BPETokenizer.train(corpus, 257 + n_merges)
        text = "".join(rng.choice(_ENCODE_ALPHABET) for _ in range(length)) + " 1111111"
        trials.append((text, list(tok.merges), tok.encode_ordinary(text)))
    return trials


def _encode_no_split(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """The slip to recognise: merges applied across the whole text, without the pre-split."""
    ids, rank = list(text.encode("utf-8")), {pair: i for i, pair in enumerate(merges)}
    while len(ids) > 1:
        pair = min(pairwise(ids), key=lambda p: rank.get(p, len(merges)))
        if pair not in rank:
            break
        ids = _merge_pair(ids, *pair, 256 + rank[pair])
    return ids


@exercise(**a_function("encode(text, merges)"))
def check_encode(fn: object) -> Feedback:
    """Exercise 4: fn(text, merges) -> token ids, as BPETokenizer gives them.

    Exercise text to paste (the lesson's `merge(ids, pair, new_id)` and GPT4_SPLIT_PATTERN are
    defined above it):

    Write `encode(text, merges)`. `merges` is a list of pairs of token ids in the order they
    were learned: `merges[i]` makes token `256 + i`. Split the text with GPT4_SPLIT_PATTERN,
    turn each chunk into its UTF-8 bytes, and in each chunk merge, again and again, the
    adjacent pair that was learned earliest, until no pair of the chunk is in `merges`. The
    check trains small tokenizers on random texts and compares your ids with theirs.

        def encode(text, merges):
            ...  # return a list of token ids

        check_encode(encode)

    Solution:

        def encode(text, merges):
            rank = {pair: i for i, pair in enumerate(merges)}
            ids = []
            for chunk in regex.findall(GPT4_SPLIT_PATTERN, text):
                chunk_ids = list(chunk.encode("utf-8"))
                while len(chunk_ids) > 1:
                    pair = min(pairwise(chunk_ids), key=lambda p: rank.get(p, float("inf")))
                    if pair not in rank:
                        break  # no pair left that was ever merged
                    chunk_ids = merge(chunk_ids, pair, 256 + rank[pair])
                ids.extend(chunk_ids)
            return ids

        check_encode(encode)
    """
    for text, merges, expected in _encode_trials():
        where = f"on the text {text[:30]!r}{'...' if len(text) > 30 else ''} with " \
                f"{len(merges)} merges"
        out, failed = call_learner(
            fn, text, [tuple(m) for m in merges], on=where,
            if_none="Your encode returns None: return the list of token ids.")
        if failed is not None:
            return failed
        ids = as_ints(out)
        if ids is None:
            return wrong(f"encode should return a list of token ids (ints), got {shown(out)}.")
        if ids == expected:
            continue
        if ids == list(text.encode("utf-8")):
            return wrong(f"Those are the text's bytes, unmerged ({where}): apply the merges, "
                         "the earliest learned first.")
        if ids == _encode_no_split(text, merges):
            return wrong(f"Those ids merge across chunk boundaries ({where}): split the text "
                         "with regex.findall(GPT4_SPLIT_PATTERN, text) first and merge inside "
                         "each chunk, as training did.")
        pairs = enumerate(zip(ids, expected, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(ids), len(expected)))
        return wrong(f"O{where[1:]}, your ids differ from BPETokenizer's at position "
                     f"{first}: yours {shown(ids[first:first + 5])}, the library's "
                     f"{shown(expected[first:first + 5])} ({len(ids)} ids against "
                     f"{len(expected)}). At each step merge the pair learned earliest "
                     "(lowest index in merges), wherever it is in the chunk.")
    return right("Your ids equal BPETokenizer's on every text tried: split into chunks, then in "
                 "each chunk keep merging the earliest-learned pair. Training and encoding "
                 "apply the same merges in the same order.")
