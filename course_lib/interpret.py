"""Looking inside a trained GPT: attention maps, hidden states, heads switched off."""

from __future__ import annotations

import torch

from course_lib.model import GPT


def _as_batch(model: GPT, ids) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.shape[0] != 1:
        raise ValueError(f"ids must be one sequence, got a batch of {ids.shape[0]}")
    if ids.shape[1] == 0:
        raise ValueError("ids is empty: give at least one token")
    return ids[:, -model.config.block_size :].to(model.device)


@torch.no_grad()
def attention_maps(model: GPT, ids) -> torch.Tensor:
    """Every head's attention weights for one sequence: (n_layer, n_head, T, T), rows sum to 1."""
    _, _, weights = model.eval()(_as_batch(model, ids), return_attention=True)
    return torch.stack([w[0] for w in weights]).cpu()


@torch.no_grad()
def hidden_states(model: GPT, ids) -> list[torch.Tensor]:
    """The residual stream after the embeddings and after each block: n_layer + 1 tensors (T, C)."""
    idx = _as_batch(model, ids)
    model.eval()
    states = []
    hooks = [model.transformer.drop.register_forward_hook(lambda m, i, o: states.append(o[0]))]
    hooks += [
        block.register_forward_hook(lambda m, i, o: states.append(o[0][0]))
        for block in model.transformer.h
    ]
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return [s.cpu() for s in states]


@torch.no_grad()
def next_token_probs_with_heads(
    model: GPT, ids, head_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token probabilities (vocab,) with the heads where head_mask is 0 switched off."""
    if head_mask is not None:
        expected = (model.config.n_layer, model.config.n_head)
        if tuple(head_mask.shape) != expected:
            raise ValueError(f"head_mask must have shape {expected}, got {tuple(head_mask.shape)}")
        head_mask = head_mask.to(model.device)
    logits, _ = model.eval()(_as_batch(model, ids), head_mask=head_mask)
    return torch.softmax(logits[0, -1].float(), dim=-1).cpu()


def top_tokens(probs: torch.Tensor, tokenizer, k: int = 10) -> list[tuple[str, float]]:
    """The k most likely tokens as (text piece, probability), most likely first."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values, indices = torch.topk(probs, min(k, probs.numel()))
    return [(tokenizer.decode([i]), v) for i, v in zip(indices.tolist(), values.tolist(),
                                                          strict=True)]


# ----- heads: what each one looks at, and what switching it off costs --------------------------

HEAD_PATTERNS: tuple[str, ...] = (
    "previous token",
    "same token",
    "first token",
    "last newline",
    "speaker name",
)


def token_pieces(tokenizer, ids) -> list[bytes]:
    """The bytes of each token, so that joined they give back the text exactly."""
    ids = [int(i) for i in torch.as_tensor(ids).reshape(-1).tolist()]
    if hasattr(tokenizer, "decode_bytes"):
        return [tokenizer.decode_bytes([i]) for i in ids]
    return [tokenizer.decode([i]).encode("utf-8") for i in ids]


def visible_piece(piece: str) -> str:
    """A token's text made visible on a plot axis: a space as '·', a newline as '↵', empty '∅'."""
    return piece.replace(" ", "·").replace("\n", "↵") or "∅"


def token_labels(tokenizer, ids) -> list[str]:
    """Each token's text made visible for plot axes (see visible_piece)."""
    return [visible_piece(p.decode("utf-8", errors="replace"))
            for p in token_pieces(tokenizer, ids)]


def _speaker_lines(text: bytes) -> list[tuple[int, int]]:
    """Byte spans of the lines `NAME:` that open a speech (first line, or after a blank line)."""
    spans, start, prev_blank = [], 0, True
    for line in text.split(b"\n"):
        end = start + len(line)
        stripped = line.strip()
        if prev_blank and stripped.endswith(b":") and len(stripped) > 1:
            spans.append((start, end))
        prev_blank = not stripped
        start = end + 1
    return spans


def pattern_targets(pieces: list[bytes], pattern: str) -> torch.Tensor:
    """(T, T) bool: True where key j is what `pattern` says query i would look at.

    Query 0 never has a target: it can only look at itself, so it says nothing about a head.
    Patterns (HEAD_PATTERNS): the previous token; the same token; the first token; the most
    recent earlier token holding a newline; the tokens of the latest `NAME:` line before i.
    """
    if pattern not in HEAD_PATTERNS:
        raise ValueError(f"pattern must be one of {HEAD_PATTERNS}, got {pattern!r}")
    T = len(pieces)
    targets = torch.zeros(T, T, dtype=torch.bool)
    if T < 2:
        return targets
    rows = torch.arange(1, T)
    if pattern == "previous token":
        targets[rows, rows - 1] = True
    elif pattern == "same token":
        targets[rows, rows] = True
    elif pattern == "first token":
        targets[rows, 0] = True
    elif pattern == "last newline":
        last = -1
        for i, piece in enumerate(pieces):
            if last >= 0:
                targets[i, last] = True
            if b"\n" in piece:
                last = i
    else:  # speaker name
        starts = [0]
        for piece in pieces:
            starts.append(starts[-1] + len(piece))
        # A token belongs to the name if any of its non-newline bytes lies on the name line.
        token_of_span: list[list[int]] = []
        for lo, hi in _speaker_lines(b"".join(pieces)):
            token_of_span.append([
                j for j, piece in enumerate(pieces)
                if starts[j] < hi and starts[j + 1] > lo
                and any(lo <= starts[j] + k < hi for k, b in enumerate(piece) if b != 10)
            ])
        for i in range(1, T):
            done = [toks for toks in token_of_span if toks and toks[-1] < i]
            if done:
                targets[i, done[-1]] = True
    return targets


def attention_on(maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean attention each head puts on the target keys, over the queries that have a target.

    maps is (..., T, T) (e.g. attention_maps' (n_layer, n_head, T, T)); the result drops T, T.
    """
    if maps.shape[-2:] != targets.shape:
        raise ValueError(
            f"targets must be (T, T) = {tuple(maps.shape[-2:])}, got {tuple(targets.shape)}"
        )
    has = targets.any(-1)
    if not has.any():
        raise ValueError("no query has a target for this pattern in this text")
    per_query = (maps * targets.to(maps.dtype)).sum(-1)  # (..., T)
    return per_query[..., has].mean(-1)


def uniform_attention_on(targets: torch.Tensor) -> float:
    """What attention_on would give for a head that spreads attention evenly over the past."""
    has = targets.any(-1)
    if not has.any():
        raise ValueError("no query has a target for this pattern in this text")
    T = targets.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    share = (targets & causal).sum(-1).float() / causal.sum(-1).float()
    return share[has].mean().item()


def text_windows(tokenizer, text: str, length: int, n: int) -> list[list[int]]:
    """The first n non-overlapping windows of `length` token ids of text, each from a line start.

    Starting at a line start keeps the line and speaker structure the patterns look for.
    """
    if length < 2 or n < 1:
        raise ValueError(f"length must be >= 2 and n >= 1, got length={length}, n={n}")
    windows, start = [], 0
    while len(windows) < n and start < len(text):
        # A token is rarely longer than 16 characters, so this slice is always long enough.
        ids = tokenizer.encode(text[start : start + 16 * length])
        if len(ids) < length:
            break
        window = ids[:length]
        windows.append(window)
        consumed = len(tokenizer.decode(window))
        cut = text.find("\n\n", start + consumed)
        start = cut + 2 if cut >= 0 else len(text)
    if not windows:
        raise ValueError(f"text is shorter than one window of {length} tokens")
    return windows


def head_pattern_scores(
    model: GPT, tokenizer, windows: list[list[int]]
) -> dict[str, tuple[torch.Tensor, float]]:
    """For each pattern: (n_layer, n_head) mean attention on it, and the even-spread baseline.

    Averaged over the windows (lists of token ids); one forward pass per window.
    """
    sums = {p: [] for p in HEAD_PATTERNS}
    for ids in windows:
        maps = attention_maps(model, ids)
        pieces = token_pieces(tokenizer, ids[-model.config.block_size:])
        for p in HEAD_PATTERNS:
            targets = pattern_targets(pieces, p)
            if targets.any():
                sums[p].append((attention_on(maps, targets), uniform_attention_on(targets)))
    out = {}
    for p, rows in sums.items():
        if rows:
            out[p] = (
                torch.stack([r[0] for r in rows]).mean(0),
                sum(r[1] for r in rows) / len(rows),
            )
    return out


@torch.no_grad()
def head_ablation_losses(model: GPT, windows: list[list[int]]) -> tuple[float, torch.Tensor]:
    """The mean next-token loss of the whole model, and (n_layer, n_head) with each head off.

    windows are equal-length lists of at most block_size + 1 token ids; one batched forward
    pass per head.
    """
    if not windows or len({len(w) for w in windows}) != 1:
        raise ValueError("windows must be a non-empty list of equally long token-id lists")
    if not 2 <= len(windows[0]) <= model.config.block_size + 1:
        raise ValueError(
            f"each window must hold 2 to block_size + 1 = {model.config.block_size + 1} ids, "
            f"got {len(windows[0])}"
        )
    ids = torch.tensor(windows, dtype=torch.long, device=model.device)
    x, y = ids[:, :-1], ids[:, 1:]
    model.eval()
    n_layer, n_head = model.config.n_layer, model.config.n_head
    full = model(x, y)[1].item()
    losses = torch.zeros(n_layer, n_head)
    for layer in range(n_layer):
        for head in range(n_head):
            mask = torch.ones(n_layer, n_head, device=model.device)
            mask[layer, head] = 0
            losses[layer, head] = model(x, y, head_mask=mask)[1].item()
    return full, losses


@torch.no_grad()
def attention_and_probs(
    model: GPT, ids, head_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: every head's maps (n_layer, n_head, T, T) and next-token probabilities."""
    if head_mask is not None:
        expected = (model.config.n_layer, model.config.n_head)
        if tuple(head_mask.shape) != expected:
            raise ValueError(f"head_mask must have shape {expected}, got {tuple(head_mask.shape)}")
        head_mask = head_mask.to(model.device)
    logits, _, weights = model.eval()(
        _as_batch(model, ids), return_attention=True, head_mask=head_mask
    )
    maps = torch.stack([w[0] for w in weights]).cpu()
    return maps, torch.softmax(logits[0, -1].float(), dim=-1).cpu()


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) in nats between two probability vectors: how much q misses of p."""
    if p.shape != q.shape:
        raise ValueError(
            f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    p, q = p.double(), q.double()
    nz = p > 0
    return (p[nz] * (p[nz].log() - q[nz].clamp_min(1e-30).log())).sum().item()


def compare_top_tokens(
    before: torch.Tensor, after: torch.Tensor, tokenizer, k: int = 10
) -> list[tuple[str, float, float]]:
    """The k tokens most likely before or after, as (text, p_before, p_after), likeliest first.

    Ranking by the larger of the two probabilities shows both what was lost and what was gained.
    """
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape, got {tuple(before.shape)} "
                         f"and {tuple(after.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = torch.topk(torch.maximum(before, after), min(k, before.numel())).indices.tolist()
    return [(tokenizer.decode([i]), before[i].item(), after[i].item()) for i in top]


def tile_heads(maps: torch.Tensor, gap: int = 1) -> torch.Tensor:
    """(n_layer, n_head, T, T) maps laid out as one 2-D grid, layers down and heads across.

    Cells between the maps are NaN, which plots leave blank.
    """
    if maps.dim() != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be (n_layer, n_head, T, T), got {tuple(maps.shape)}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    L, H, T, _ = maps.shape
    step = T + gap
    grid = torch.full((L * step - gap, H * step - gap), float("nan"))
    for layer in range(L):
        for head in range(H):
            grid[layer * step : layer * step + T, head * step : head * step + T] = maps[layer, head]
    return grid
