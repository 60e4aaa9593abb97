"""Logits processors: penalties, temperature, top-k, top-p and min-p, as transformers applies them.

Each public function checks its arguments and calls a private twin that does the arithmetic;
the decoding loop calls process_logits with a SamplingParams checked once, so it checks nothing
per token.
"""

from __future__ import annotations

import torch

from course_lib.sampling.params import SamplingParams, make_params
from course_lib.validation import check_float, check_int


def process_logits(logits: torch.Tensor, params: SamplingParams,
                   context: torch.Tensor | None = None) -> torch.Tensor:
    """Penalties, then temperature, top-k, top-p, min-p: the order transformers applies them in.

    logits (batch, V) or (V,); context: the token ids so far, (batch, T) long on logits'
    device, needed only when a penalty is on. The filters mask with -inf.
    """
    if params.penalized:
        if context is None:
            raise ValueError("the penalties need context: the token ids generated so far")
        logits = _penalties(logits, context, params)
    logits = _temperature(logits, params.temperature)
    if params.top_k is not None:
        logits = _top_k(logits, params.top_k)
    if params.top_p is not None:
        logits = _top_p(logits, params.top_p)
    if params.min_p is not None:
        logits = _min_p(logits, params.min_p)
    return logits


def filter_logits(logits: torch.Tensor, params: SamplingParams | None = None, *,
                  context=None, **settings) -> torch.Tensor:
    """process_logits for any params or settings (temperature=..., top_k=...), context checked.

    context: the token ids so far, (batch, T) or (T,), needed by the penalties.
    """
    params = make_params(params, settings)
    if params.penalized and context is not None:
        context = _as_context(context, logits)
    return process_logits(logits, params, context)


# ----- each processor: the public, checked form and the private arithmetic -----------------


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature; temperature 0 keeps only the most likely token (greedy)."""
    return _temperature(logits, check_float("temperature (0 means greedy)", temperature,
                                            minimum=0.0))


def _temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0:
        greedy = torch.full_like(logits, float("-inf"))
        return greedy.scatter(-1, logits.argmax(dim=-1, keepdim=True), 0.0)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest to -inf (ties with the k-th are kept)."""
    return _top_k(logits, check_int("top_k (or None for no limit)", k, minimum=1))


def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose probability reaches p.

    The most likely token is always kept. Same rule as transformers' TopPLogitsWarper.
    """
    return _top_p(logits, check_float("top_p", p, minimum=0.0, maximum=1.0, min_inclusive=False))


def _top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Ascending order: drop the low tail whose total mass is at most 1 - p.
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop (-inf) every token less likely than min_p times the most likely token's probability.

    = transformers' MinPLogitsWarper. The cut scales with the model's confidence: a sharp
    distribution keeps few tokens, a flat one many. The top token is always kept.
    """
    return _min_p(logits, check_float("min_p", min_p, minimum=0.0, maximum=1.0))


def _min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove = remove.scatter(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, float("-inf"))


def repetition_penalty(logits: torch.Tensor, idx, penalty: float) -> torch.Tensor:
    """Make every token that occurs in idx less likely: divide its logit by penalty when it is
    positive, multiply when negative (CTRL's rule; transformers' RepetitionPenaltyLogitsProcessor).

    logits: (batch, V) or (V,); idx: the tokens so far, (batch, T), prompt included. penalty 1
    changes nothing; above 1 discourages repeats, below 1 encourages them. A token counts once,
    however often it occurred.
    """
    penalty = check_float("penalty (repetition_penalty)", penalty, minimum=0.0,
                          min_inclusive=False)
    return _repetition(logits, _as_context(idx, logits), penalty)


def _repetition(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    rows = logits[None] if logits.dim() == 1 else logits
    seen = rows.gather(-1, context)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    out = rows.scatter(-1, context, seen)
    return out[0] if logits.dim() == 1 else out


def presence_frequency_penalty(
    logits: torch.Tensor, idx, presence: float = 0.0, frequency: float = 0.0
) -> torch.Tensor:
    """OpenAI's penalties: logit[j] -= presence * (count[j] > 0) + frequency * count[j].

    count[j] is how often token j occurs in idx (the tokens so far). Unlike the repetition
    penalty, this subtracts (a fixed amount whatever the logit's sign), and frequency grows with
    every repeat. OpenAI counts only the tokens generated so far; generate counts the whole
    sequence, prompt included, as it does for the repetition penalty (TGI does the same).
    Negative values encourage repeats.
    """
    presence = check_float("presence (presence_penalty)", presence)
    frequency = check_float("frequency (frequency_penalty)", frequency)
    return _presence_frequency(logits, _as_context(idx, logits), presence, frequency)


def _presence_frequency(logits: torch.Tensor, context: torch.Tensor, presence: float,
                        frequency: float) -> torch.Tensor:
    rows = logits[None] if logits.dim() == 1 else logits
    counts = torch.zeros_like(rows).scatter_add_(
        -1, context, torch.ones_like(context, dtype=rows.dtype))
    out = rows - presence * (counts > 0).to(rows.dtype) - frequency * counts
    return out[0] if logits.dim() == 1 else out


def apply_penalties(
    logits: torch.Tensor,
    idx,
    repetition_penalty: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
) -> torch.Tensor:
    """The repetition penalty, then the presence and frequency penalties, given the tokens idx."""
    params = SamplingParams(repetition_penalty=repetition_penalty,
                            presence_penalty=presence_penalty,
                            frequency_penalty=frequency_penalty)
    if not params.penalized:
        return logits
    return _penalties(logits, _as_context(idx, logits), params)


def _penalties(logits: torch.Tensor, context: torch.Tensor,
               params: SamplingParams) -> torch.Tensor:
    if params.repetition_penalty is not None:
        logits = _repetition(logits, context, params.repetition_penalty)
    if params.presence_penalty or params.frequency_penalty:
        logits = _presence_frequency(logits, context, params.presence_penalty,
                                     params.frequency_penalty)
    return logits


def _as_context(idx, logits: torch.Tensor) -> torch.Tensor:
    """The token ids a penalty looks at, as a (batch, T) long tensor beside logits (batch, V)."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"idx (the tokens so far) must hold integer token ids, got {idx.dtype}")
    if idx.dim() == 1:
        idx = idx[None]
    if logits.dim() == 1:
        if idx.shape[0] != 1:
            raise ValueError(f"one row of logits needs one row of idx, got {idx.shape[0]}")
    elif idx.dim() != 2 or idx.shape[0] != logits.shape[0]:
        raise ValueError(f"idx must be (batch, T) with logits' batch {logits.shape[0]}, "
                         f"got {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= logits.shape[-1]):
        raise ValueError(f"idx holds token ids outside the vocabulary [0, {logits.shape[-1]})")
    return idx.long().to(logits.device)


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of distributions along the last dim (0 log 0 counts as 0)."""
    logp = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logp).sum(dim=-1)


def describe_filtering(logits: torch.Tensor, params: SamplingParams | None = None, *,
                       n: int = 20, context=None, **settings) -> dict:
    """What the settings do to one next-token distribution (logits of shape (V,)).

    The penalties (given context, the token ids so far) act before temperature, and min-p
    after top-p, so "scaled" is then the penalised distribution after temperature, and the
    tokens are ranked by their penalised logits (the order top-p cuts in; a penalised token
    moves down while "before" keeps its unpenalised probability).

    Returns, for the n most likely tokens (in order of their probability at temperature 1):
    ids, before (probabilities at temperature 1, no filter), scaled (after temperature only),
    cumulative (running sum of the distribution top-p cuts, i.e. after temperature and top-k),
    after (the distribution sampled from); and over the whole vocabulary: kept (tokens with
    non-zero probability after filtering), entropy_before and entropy_after in bits.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1:
        raise ValueError("logits must be a 1-D tensor: one score per vocabulary entry")
    n = check_int("n", n, minimum=1)
    params = make_params(params, settings)
    logits = logits.float()
    before = torch.softmax(logits, -1)
    if params.penalized:
        if context is None:
            raise ValueError("the penalties need context: the token ids generated so far")
        context = _as_context(context, logits)
        penalized = _penalties(logits, context, params)
    else:
        penalized = logits
    scaled_logits = _temperature(penalized, params.temperature)
    scaled = torch.softmax(scaled_logits, -1)
    pre_p = _top_k(scaled_logits, params.top_k) if params.top_k is not None else scaled_logits
    after = torch.softmax(process_logits(logits, params, context), -1)
    n = min(n, logits.numel())
    # Stable sort so that ties keep a fixed order, the same order the bars are drawn in.
    order = torch.sort(penalized, descending=True, stable=True).indices[:n]
    cumulative = torch.softmax(pre_p, -1)[order].cumsum(0)
    return {
        "ids": order.tolist(),
        "before": before[order].tolist(),
        "scaled": scaled[order].tolist(),
        "cumulative": cumulative.tolist(),
        "after": after[order].tolist(),
        "kept": int((after > 0).sum()),
        "entropy_before": float(entropy_bits(before)),
        "entropy_after": float(entropy_bits(after)),
    }
