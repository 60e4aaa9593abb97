"""SamplingParams: every setting of how tokens are chosen, in one frozen dataclass checked once."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from course_lib.validation import check_float, check_int, check_seed, check_token_ids

MAX_NEW_TOKENS = 1_000_000  # beyond any use on a CPU; a bound keeps typos (1e12) from hanging


@dataclass(frozen=True)
class SamplingParams:
    """How to choose each next token, and when to stop (vLLM's SamplingParams, our names).

    Applied in transformers' order: the penalties (which look at every token so far, prompt
    included), then temperature, top-k, top-p and min-p. temperature 0 is greedy: the most
    likely token after the penalties. Generation ends after max_new_tokens tokens, at a token
    of stop_ids (kept), or once the new text contains a string of stop (kept; only the text
    functions read stop). Every field is checked when the object is built, so a generation
    loop never checks one again; a bad value raises an error that names its field.
    """

    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checked = {
            "max_new_tokens": check_int("max_new_tokens", self.max_new_tokens, minimum=0,
                                        maximum=MAX_NEW_TOKENS),
            "temperature": check_float("temperature (0 means greedy)", self.temperature,
                                       minimum=0.0),
            "top_k": None if self.top_k is None else check_int(
                "top_k (or None for no limit)", self.top_k, minimum=1),
            "top_p": None if self.top_p is None else check_float(
                "top_p", self.top_p, minimum=0.0, maximum=1.0, min_inclusive=False),
            "min_p": None if self.min_p is None else check_float(
                "min_p (or None for no cut)", self.min_p, minimum=0.0, maximum=1.0),
            "repetition_penalty": None if self.repetition_penalty is None else check_float(
                "repetition_penalty (or None for none)", self.repetition_penalty, minimum=0.0,
                min_inclusive=False),
            "presence_penalty": check_float("presence_penalty", self.presence_penalty),
            "frequency_penalty": check_float("frequency_penalty", self.frequency_penalty),
            "seed": check_seed("seed", self.seed),
            "stop_ids": _stop_ids(self.stop_ids),
            "stop": _stop_strings(self.stop),
        }
        for name, value in checked.items():  # frozen: the checked forms replace what was given
            object.__setattr__(self, name, value)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Whether a penalty is on (then the tokens so far are needed to choose the next)."""
        return (self.repetition_penalty is not None or self.presence_penalty != 0
                or self.frequency_penalty != 0)

    def stop_tensor(self, vocab_size: int, device) -> torch.Tensor | None:
        """stop_ids as a 1-D tensor on device, each checked against the vocabulary; or None."""
        if not self.stop_ids:
            return None
        return check_token_ids("stop_ids", list(self.stop_ids), vocab_size)[0].to(device)


FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))


def make_params(params: SamplingParams | None = None, settings: Mapping | None = None,
                **defaults) -> SamplingParams:
    """The SamplingParams a generation call asked for.

    params: a SamplingParams, or None for defaults (SamplingParams' own, then the caller's
    defaults, e.g. temperature 0 for chat). settings: SamplingParams fields given as keyword
    arguments (temperature=0.7, ...); they replace params' values, so a lesson can write
    generate(model, ids, 40, temperature=0) and a view can pass one object around. An unknown
    name is a TypeError that lists the known ones.
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise TypeError(f"unknown sampling setting{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(unknown)}; SamplingParams has {', '.join(FIELDS)}")
    if params is None:
        return SamplingParams(**{**defaults, **settings})
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
    return dataclasses.replace(params, **settings) if settings else params


def _stop_ids(stop_ids) -> tuple[int, ...]:
    """stop_ids as a tuple of token ids: from None, an int, or a collection of ints."""
    if stop_ids is None or stop_ids == ():  # () is the field's own "none"; [] is a mistake
        return ()
    if isinstance(stop_ids, (set, frozenset)):
        stop_ids = sorted(stop_ids)
    if isinstance(stop_ids, int) or isinstance(stop_ids, torch.Tensor) and stop_ids.dim() == 0:
        stop_ids = [stop_ids]
    ids = tuple(check_token_ids("stop_ids", stop_ids)[0].tolist())
    if min(ids) < 0:
        raise ValueError(f"stop_ids must be token ids (>= 0), got {min(ids)}")
    return ids


def _stop_strings(stop) -> tuple[str, ...]:
    """stop as a tuple of non-empty strings: from None, a string or strings."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, Iterable):
        raise TypeError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    stop = tuple(stop)
    for s in stop:
        if not isinstance(s, str):
            raise TypeError(f"stop must hold strings, got {type(s).__name__}")
        if not s:
            raise ValueError("stop holds an empty string, which would stop at once")
    return stop
