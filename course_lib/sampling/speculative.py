"""Speculative decoding: a cheap draft proposes tokens, one pass of the target checks them all."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from course_lib.model import GPT, eval_mode
from course_lib.sampling.decode import (
    last_logits,
    next_token_distribution,
    one_prompt,
    sample_next,
    seeded_generator,
)
from course_lib.sampling.params import SamplingParams, make_params
from course_lib.validation import check_int


class PromptLookupDraft:
    """A draft that needs no model: find the context's last n-gram earlier in the context and
    propose the tokens that followed it there (prompt lookup decoding).

    It shines when the output repeats the input (copying, editing, quoting code). The longest
    n-gram from max_ngram down to min_ngram that occurred before wins; its latest occurrence
    is used.
    """

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        self.max_ngram = check_int("max_ngram", max_ngram, minimum=1)
        self.min_ngram = check_int("min_ngram", min_ngram, minimum=1, maximum=self.max_ngram)

    def propose(self, ids: list[int], k: int) -> list[int]:
        """Up to k tokens to try after ids (fewer, or none, if nothing matches)."""
        for n in range(min(self.max_ngram, len(ids) - 1), self.min_ngram - 1, -1):
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):  # latest earlier occurrence first
                if ids[start : start + n] == tail:
                    return ids[start + n : start + n + k]
        return []

    def __repr__(self) -> str:
        return f"PromptLookupDraft(max_ngram={self.max_ngram}, min_ngram={self.min_ngram})"


@dataclass
class SpeculativeRound:
    """One round: the draft's proposal, how many of it the target accepted, and the token the
    target added itself (the correction at the first rejection, or a bonus after all)."""

    proposed: list[int]
    accepted: int
    token: int


def _truncate_cache(cache, length: int) -> None:
    """Forget every cached position from length on (rejected draft tokens)."""
    if hasattr(cache, "truncate"):
        cache.truncate(length)
    else:  # KVCache keeps a filled length per layer; the stale entries are overwritten later
        cache._lengths = [min(n, length) for n in cache._lengths]


def _logits_for(model: GPT, cache, ids: list[int]) -> torch.Tensor:
    """Logits (positions, vocab) of the tokens of ids that the cache has not seen yet."""
    new = torch.tensor([ids[cache.length :]], dtype=torch.long, device=model.device)
    logits, _ = model(new, kv_cache=cache)
    return logits[0].float()


def accept_or_resample(
    p: torch.Tensor, q: torch.Tensor, token: int, generator: torch.Generator | None = None
) -> tuple[bool, int]:
    """The rejection rule of speculative sampling for one drafted token.

    p: the target's distribution, q: the draft's (both (vocab,)), token: drawn from q.
    Keep it with probability min(1, p[token] / q[token]); otherwise draw a replacement from
    max(p - q, 0), renormalised. Whatever q is, the token that comes out is distributed as p.
    Returns (accepted, the token to append).
    """
    u = torch.rand((), generator=generator, device=p.device)
    if u * q[token] <= p[token]:  # u < p/q without dividing by a zero q
        return True, token
    residual = (p - q).clamp(min=0)
    if residual.sum() <= 0:  # p == q: cannot happen after a rejection, but never divide by 0
        residual = p
    return False, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


def _check_draft(target: GPT, draft) -> None:
    if isinstance(draft, PromptLookupDraft):
        return
    if not isinstance(draft, GPT):
        raise TypeError("draft must be a GPT (a smaller model with the same tokenizer) or a "
                        f"PromptLookupDraft, got {type(draft).__name__}")
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(f"draft and target must share a vocabulary: draft has "
                         f"{draft.config.vocab_size} tokens, target {target.config.vocab_size}")


@torch.no_grad()
def speculative_rounds(target: GPT, draft, idx, max_new_tokens: int | None = None,
                       num_draft_tokens: int = 4, *, params: SamplingParams | None = None,
                       **settings) -> Iterator[SpeculativeRound]:
    """Speculative decoding round by round (see speculative_generate); yields each round."""
    params = _speculative_params(params, max_new_tokens, settings)
    _check_draft(target, draft)
    k_max = check_int("num_draft_tokens", num_draft_tokens, minimum=1)
    prompt = one_prompt(target, idx)
    ids = prompt[0].tolist()
    generator = seeded_generator(params.seed, target.device)
    stops = set(params.stop_ids)
    greedy = params.greedy
    model_draft = isinstance(draft, GPT)
    block = target.config.block_size
    if model_draft:
        block = min(block, draft.config.block_size)

    def target_token(logits: torch.Tensor) -> int:
        """The target's own token after logits (vocab,)."""
        return int(sample_next(logits[None], params, generator=generator)[0])

    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(target))
        t_cache = target.new_cache()
        if model_draft:
            stack.enter_context(eval_mode(draft))
            d_cache = draft.new_cache()
        produced = 0
        while produced < params.max_new_tokens:
            k = min(k_max, params.max_new_tokens - produced - 1)
            if len(ids) + k > block:  # past the context window: plain decoding, as generate
                window = torch.tensor([ids], device=target.device)  # last_logits crops it
                token = target_token(last_logits(target, window)[0])
                ids.append(token)
                produced += 1
                yield SpeculativeRound([], 0, token)
                if token in stops:
                    return
                continue
            proposed, q_rows = [], []
            if model_draft:
                ctx = list(ids)
                for _ in range(k):
                    logits = _logits_for(draft, d_cache, ctx)[-1]
                    if greedy:
                        token = int(sample_next(logits[None], params)[0])
                    else:
                        q = next_token_distribution(logits, params)
                        token = int(torch.multinomial(q, 1, generator=generator))
                        q_rows.append(q)
                    proposed.append(token)
                    ctx.append(token)
            else:
                proposed = draft.propose(ids, k) if k else []
            # One target pass scores every proposed token and the position after them.
            p_logits = _logits_for(target, t_cache, ids + proposed)[-(len(proposed) + 1):]
            accepted, token = 0, None
            for i, d in enumerate(proposed):
                if greedy:
                    best = int(sample_next(p_logits[i][None], params)[0])
                    ok, token = best == d, best
                else:
                    p = next_token_distribution(p_logits[i], params)
                    q = q_rows[i] if model_draft else torch.nn.functional.one_hot(
                        torch.tensor(d), p.numel()).to(p)
                    ok, token = accept_or_resample(p, q, d, generator)
                if not ok:
                    break
                accepted += 1
            if accepted == len(proposed):  # all kept: the target's own next token is free
                token = target_token(p_logits[len(proposed)])
            new = proposed[:accepted] + [token]
            stop_at = next((i for i, t in enumerate(new) if t in stops), None)
            if stop_at is not None:  # the text ends at its first stop token
                new = new[: stop_at + 1]
                accepted, token = stop_at, new[-1]
            ids.extend(new)
            produced += len(new)
            _truncate_cache(t_cache, len(ids) - 1)
            if model_draft:
                _truncate_cache(d_cache, min(d_cache.length, len(ids) - 1))
            yield SpeculativeRound(proposed, accepted, token)
            if stop_at is not None:
                return


def _speculative_params(params: SamplingParams | None, max_new_tokens: int | None,
                        settings: dict) -> SamplingParams:
    """The settings speculative decoding takes: greedy unless told, no penalties."""
    if max_new_tokens is not None:
        settings["max_new_tokens"] = max_new_tokens
    params = make_params(params, settings, temperature=0.0)
    if params.penalized or params.stop:
        raise ValueError("speculative decoding takes no penalties and no stop strings (the "
                         "rejection rule needs a distribution that the draft's tokens do not "
                         "change); use generate for those")
    return params


def speculative_generate(target: GPT, draft, idx, max_new_tokens: int | None = None,
                         num_draft_tokens: int = 4, *, params: SamplingParams | None = None,
                         return_stats: bool = False, **settings):
    """The prompt followed by max_new_tokens tokens, drafted cheaply and checked by target.

    Each round the draft (a smaller GPT with the same vocabulary, or a PromptLookupDraft)
    proposes num_draft_tokens tokens; one forward pass of target scores them all and keeps
    the longest acceptable prefix, plus one token of its own. Temperature 0 (the default here)
    gives exactly target's greedy tokens, stop_ids included; with sampling, the rejection rule
    (accept_or_resample) keeps target's distribution. return_stats adds a dict: proposed,
    accepted, acceptance_rate, rounds (= target forward passes), tokens_per_round.
    """
    params = _speculative_params(params, max_new_tokens, settings)
    rounds = list(speculative_rounds(target, draft, idx, num_draft_tokens=num_draft_tokens,
                                     params=params))
    prompt = one_prompt(target, idx)
    new = [t for r in rounds for t in r.proposed[: r.accepted] + [r.token]]
    new = new[: params.max_new_tokens]
    out = torch.cat([prompt, torch.tensor([new], dtype=torch.long, device=prompt.device)], 1)
    if not return_stats:
        return out
    proposed = sum(len(r.proposed) for r in rounds)
    accepted = sum(r.accepted for r in rounds)
    return out, {
        "proposed": proposed,
        "accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else 0.0,
        "rounds": len(rounds),
        "tokens_per_round": len(new) / len(rounds) if rounds else 0.0,
    }
