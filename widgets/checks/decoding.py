"""Checks for lesson 8 (decoding): temperature 0, the size of a top-p set, why caching is exact."""

from __future__ import annotations

import torch

from course_lib.sampling import next_token_logits, top_p_filter
from widgets.checks import shipped
from widgets.feedback import (
    A_WHOLE_NUMBER,
    Feedback,
    a_text,
    exercise,
    right,
    wrong,
)

GREEDY_PROMPT = "KING RICHARD III:\nNow is the winter of our"

# Exercise 2: a next-token distribution (most likely first) and the p to apply to it.
TOP_P_PROBS: list[float] = [0.42, 0.21, 0.14, 0.09, 0.06, 0.04, 0.02, 0.01, 0.01]
TOP_P = 0.9

CACHE_CHOICES = {
    "a": "The cache stores the tokens already chosen, so the model cannot change its mind.",
    "b": "With the causal mask, the keys and values of earlier positions never depend on later "
         "tokens, so computing them once and reusing them gives the very numbers that "
         "recomputing them would.",
    "c": "The cache fixes the random seed, which makes generation deterministic.",
    "d": "The cache stores every step's logits and samples from them again.",
}
CACHE_ANSWER = "b"


@exercise("Replace None with a string: the text of the token that comes next.",
          **a_text("the token's text", 100))
def check_greedy_token(my_answer: str, model=None, tokenizer=None) -> Feedback:
    """my_answer: the text of the token temperature 0 picks after GREEDY_PROMPT."""
    model, tokenizer = shipped(model, tokenizer)
    logits = next_token_logits(model, tokenizer.encode(GREEDY_PROMPT))
    probs = torch.softmax(logits, -1)
    top = int(probs.argmax())
    want = tokenizer.decode([top])
    if my_answer == want:
        return right(f"{want!r}, with p = {probs[top]:.3f}. Temperature 0 divides the gaps "
                     "between logits by ~0, so all probability goes to the largest: sampling "
                     "becomes argmax, the same token every time.")
    if my_answer.strip() and my_answer.strip() == want.strip():
        return wrong(f"Almost: mind the whitespace. The token is {want!r} (tokens usually "
                     "carry the space before a word).")
    answer_ids = tokenizer.encode(my_answer) if my_answer else []
    if len(answer_ids) == 1:
        p = float(probs[answer_ids[0]])
        return wrong(f"The model gives {my_answer!r} probability {p:.3f}, so sampling can pick "
                     "it; temperature 0 always takes the single most likely token instead.")
    return wrong("Look at the model's distribution after the prompt (next_token_probs) and take "
                 "the most likely token: that is all temperature 0 does.")


@exercise("Replace None with a whole number: how many tokens survive.", **A_WHOLE_NUMBER)
def check_top_p_count(my_answer: int) -> Feedback:
    """my_answer: how many tokens of TOP_P_PROBS top-p with p = TOP_P keeps."""
    probs = torch.tensor(TOP_P_PROBS)
    want = int(torch.isfinite(top_p_filter(probs.log(), TOP_P)).sum())
    running = [round(float(c), 2) for c in probs.cumsum(0)]
    if my_answer == want:
        return right(f"{want}: the running totals are {running[:want]}; the first {want - 1} "
                     f"only reach {running[want - 2]}, short of {TOP_P}, and token {want} "
                     f"takes the total to {running[want - 1]}. Top-p keeps the smallest set that "
                     "reaches p.")
    if my_answer == want - 1:
        return wrong(f"One short: the first {want - 1} tokens add up to {running[want - 2]}, "
                     f"which has not reached {TOP_P} yet.")
    if my_answer > want:
        return wrong(f"Too many: the first {want} tokens already reach {running[want - 1]} "
                     f">= {TOP_P}. Top-p keeps the smallest such set.")
    return wrong("Add the probabilities from the most likely down, and stop at the first "
                 f"token where the total reaches {TOP_P}.")


@exercise("Replace None with a letter: 'a', 'b', 'c' or 'd'.")
def check_cache_reason(my_answer) -> Feedback:
    """my_answer: the letter of the reason cached generation gives identical tokens."""
    letter = my_answer.strip().lower().strip("()") if isinstance(my_answer, str) else None
    if letter not in CACHE_CHOICES:
        return wrong(f"Choose one of {sorted(CACHE_CHOICES)}.")
    if letter == CACHE_ANSWER:
        return right("The cache is not an approximation: causal attention means position i "
                     "depends only on tokens 0..i, so its keys and values are the same at every "
                     "later step. Reusing them skips work and changes no number.")
    reasons = {
        "a": "Without a cache the earlier tokens are kept too (they are the prompt of the next "
             "step). The cache stores keys and values, not a decision.",
        "c": "The seed is a separate matter: the cache holds keys and values, and even greedy "
             "decoding, which uses no randomness, gives the same tokens both ways.",
        "d": "The cache holds keys and values of earlier positions; every step still computes "
             "new logits for the newest token.",
    }
    return wrong(reasons[letter])
