"""Checks for lesson 9 (decoding): temperature 0, the size of a top-p set, why caching is exact,
top-p filtering (code)."""

from __future__ import annotations

import torch

from course_lib.sampling import next_token_logits, top_p_filter
from widgets.checks import shipped
from widgets.feedback import (
    A_WHOLE_NUMBER,
    Feedback,
    a_function,
    a_text,
    exercise,
    learner_tensor,
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


# ----- Exercise 4 (code): top-p filtering -----------------------------------------------------


def _top_p_trials() -> list[tuple[str, torch.Tensor, float]]:
    """(what, logits, p): random logits, p = 1, a p so small only the top token survives, and
    ties (kept or dropped together, so that the right set is not a matter of sort order)."""
    g = torch.Generator().manual_seed(8)
    random10 = torch.randn(10, generator=g) * 2
    random50 = torch.randn(50, generator=g) * 3
    ties = torch.tensor([3.0, 1.0, 1.0, 0.5, 0.5, 0.5, -1.0, -1.0])
    return [
        ("10 random logits, p = 0.9", random10, 0.9),
        ("50 random logits, p = 0.5", random50, 0.5),
        ("10 random logits, p = 1 (nothing is dropped)", random10, 1.0),
        ("50 random logits, p = 0.001 (only the top token survives)", random50, 0.001),
        ("logits with ties, p = 0.8", ties, 0.8),
        ("logits with ties, p = 0.95", ties, 0.95),
    ]


@exercise(**a_function("top_p(logits, p)"))
def check_top_p(fn: object) -> Feedback:
    """Exercise 4: fn(logits, p) -> logits with every token outside the top-p set at -inf.

    Exercise text to paste:

    Write `top_p(logits, p)` for a 1-D tensor of logits: keep the smallest set of most likely
    tokens whose probabilities add up to at least p (always at least the top token), and set
    every other logit to -inf; the kept logits stay as they were, in their places. The check
    compares it with `course_lib.sampling.top_p_filter` on random logits, p = 1, a tiny p, and
    logits with ties.

        def top_p(logits, p):
            ...  # return filtered logits, same shape

        check_top_p(top_p)

    Solution:

        def top_p(logits, p):
            probs = torch.softmax(logits, dim=-1)
            sorted_probs, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass above each token
            keep_sorted = before < p           # the top token has 0 above it: always kept
            keep = torch.zeros_like(keep_sorted)
            keep[order] = keep_sorted          # back to the tokens' own places
            return logits.masked_fill(~keep, float("-inf"))

        check_top_p(top_p)
    """
    for what, logits, p in _top_p_trials():
        out, failed = learner_tensor(
            fn, logits.clone(), p, on=f"on {what}", what="the logits",
            if_none="Your function returns None: return the filtered logits.")
        if failed is not None:
            return failed
        if out.shape != logits.shape:
            return wrong(f"Return the logits' shape {tuple(logits.shape)}, one per token, with "
                         f"the dropped ones at -inf; got {tuple(out.shape)} (on {what}).")
        out = out.detach().float()
        expected = top_p_filter(logits, p)
        keep = torch.isfinite(expected)
        kept = torch.isfinite(out)
        if torch.equal(kept, keep) and torch.allclose(out[keep], logits[keep]) and bool(
                (out[~keep] == float("-inf")).all()):
            continue
        if torch.equal(out.sort().values, expected.sort().values):
            return wrong(f"The right logits survive, but not in their places (on {what}): put "
                         "each back at its token's index (keep[order] = keep_sorted), or a "
                         "sampled index would name the wrong token.")
        if bool((out >= 0).all()) and abs(float(out.sum()) - 1) < 1e-3:
            return wrong(f"Return logits, not probabilities (on {what}): the kept entries are "
                         "the original logits, the others -inf.")
        if torch.equal(kept | (out == 0), keep | (out == 0)) and bool((out[~keep] == 0).all()):
            return wrong(f"Set the dropped logits to -inf, not 0 (on {what}): a logit of 0 "
                         "still gets probability after the softmax.")
        n_keep, n_kept = int(keep.sum()), int(kept.sum())
        probs = torch.softmax(logits, -1).sort(descending=True).values
        running = probs.cumsum(0)
        hint = ""
        if n_kept == n_keep - 1 or (n_kept == 0 and n_keep == 1):
            hint = (" Keep the token that takes the total to p or beyond: a token stays when "
                    "the mass of the tokens above it is still below p.")
        elif n_kept == n_keep + 1:
            hint = " Stop at the first token where the running total reaches p."
        elif n_kept == 0:
            hint = " The most likely token always stays."
        totals = ", ".join(f"{float(t):.3f}" for t in running[:n_keep + 1])
        return wrong(f"On {what}, top_p_filter keeps {n_keep} token(s), yours keeps {n_kept}. "
                     f"The running totals from the top are {totals}, ...{hint}")
    return right("Your top-p equals course_lib's top_p_filter on every case: it keeps the "
                 "smallest set of top tokens that reaches p, everything with p = 1, the top "
                 "token alone when p is tiny, and tied tokens together.")
