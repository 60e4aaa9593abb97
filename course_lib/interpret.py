"""Looking inside a trained GPT: attention maps, hidden states, heads switched off."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from course_lib.data import repeated_random_sequences, repeated_random_stream
from course_lib.model import GPT, eval_mode
from course_lib.tokenization import token_pieces, visible_piece  # noqa: F401  (re-exported)
from course_lib.validation import (
    check_int,
    check_model,
    check_module,
    check_one_sequence,
    check_str,
    check_token_ids,
)


def _one_sequence(model: GPT, ids) -> torch.Tensor:
    """ids as a (1, T) batch on the model's device, cropped to the last block_size tokens."""
    idx = check_one_sequence("ids", ids, model)
    return idx[:, -model.config.block_size :].to(model.device)


def _check_head_mask(model: GPT, head_mask) -> torch.Tensor | None:
    """head_mask as a float (n_layer, n_head) tensor of finite numbers on the model's device."""
    if head_mask is None:
        return None
    expected = (model.config.n_layer, model.config.n_head)
    try:
        mask = torch.as_tensor(head_mask)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"head_mask must be a tensor of shape {expected}, got "
                        f"{type(head_mask).__name__} ({e})") from None
    if mask.is_complex():
        raise TypeError(f"head_mask must hold real numbers, got dtype {mask.dtype}")
    if tuple(mask.shape) != expected:
        raise ValueError(f"head_mask must have shape (n_layer, n_head) = {expected}, "
                         f"got {tuple(mask.shape)}")
    mask = mask.float()
    if not torch.isfinite(mask).all():
        raise ValueError("head_mask holds NaN or infinity: 1 keeps a head, 0 switches it off")
    return mask.to(model.device)


def _forward(model: GPT, ids, head_mask=None, attention: bool = False):
    """(logits (T, vocab) as float on the CPU, attention maps (n_layer, n_head, T, T) or None)."""
    idx = _one_sequence(model, ids)
    mask = _check_head_mask(model, head_mask)
    with eval_mode(model):
        out = model(idx, return_attention=True, head_mask=mask) if attention else model(
            idx, head_mask=mask)
    maps = torch.stack([w[0] for w in out[2]]).cpu() if attention else None
    return out[0][0].float().cpu(), maps


def attention_maps(model: GPT, ids) -> torch.Tensor:
    """Every head's attention weights for one sequence: (n_layer, n_head, T, T), rows sum to 1."""
    return _forward(model, ids, attention=True)[1]


def hidden_states(model: GPT, ids) -> list[torch.Tensor]:
    """The residual stream after the embeddings and after each block: n_layer + 1 tensors (T, C)."""
    idx = _one_sequence(model, ids)
    with eval_mode(model):
        stream = _run_with_stream(model, idx)[2]
    return list(stream.cpu())


def next_token_probs_with_heads(
    model: GPT, ids, head_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token probabilities (vocab,) with the heads where head_mask is 0 switched off."""
    return torch.softmax(_forward(model, ids, head_mask)[0][-1], dim=-1)


def top_tokens(probs: torch.Tensor, tokenizer, k: int = 10) -> list[tuple[str, float]]:
    """The k most likely tokens as (text piece, probability), most likely first."""
    k = check_int("k", k, minimum=1)
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


def token_labels(tokenizer, ids) -> list[str]:
    """Each token's text made visible for plot axes (see tokenization.visible_piece)."""
    return [visible_piece(p) for p in token_pieces(tokenizer, ids)]


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
    check_str("text", text)
    length = check_int("length", length, minimum=2)
    n = check_int("n", n, minimum=1)
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
    model = check_model("model", model)
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


def head_ablation_losses(model: GPT, windows: list[list[int]]) -> tuple[float, torch.Tensor]:
    """The mean next-token loss of the whole model, and (n_layer, n_head) with each head off.

    windows are equal-length lists of at most block_size + 1 token ids; one batched forward
    pass per head.
    """
    model = check_model("model", model)
    if isinstance(windows, (list, tuple)) and (
        not windows or len({len(w) if hasattr(w, "__len__") else -1 for w in windows}) != 1
    ):
        raise ValueError("windows must be a non-empty list of equally long token-id lists")
    ids = check_token_ids("windows", windows, model.config.vocab_size)
    if not 2 <= ids.shape[1] <= model.config.block_size + 1:
        raise ValueError(
            f"each window must hold 2 to block_size + 1 = {model.config.block_size + 1} ids, "
            f"got {ids.shape[1]}"
        )
    ids = ids.to(model.device)
    x, y = ids[:, :-1], ids[:, 1:]
    n_layer, n_head = model.config.n_layer, model.config.n_head
    losses = torch.zeros(n_layer, n_head)
    with eval_mode(model):
        full = model(x, y)[1].item()
        for layer in range(n_layer):
            for head in range(n_head):
                mask = torch.ones(n_layer, n_head, device=model.device)
                mask[layer, head] = 0
                losses[layer, head] = model(x, y, head_mask=mask)[1].item()
    return full, losses


def attention_and_probs(
    model: GPT, ids, head_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: every head's maps (n_layer, n_head, T, T) and next-token probabilities."""
    logits, maps = _forward(model, ids, head_mask, attention=True)
    return maps, torch.softmax(logits[-1], dim=-1)


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
    k = check_int("k", k, minimum=1)
    top = torch.topk(torch.maximum(before, after), min(k, before.numel())).indices.tolist()
    return [(tokenizer.decode([i]), before[i].item(), after[i].item()) for i in top]


def tile_heads(maps: torch.Tensor, gap: int = 1) -> torch.Tensor:
    """(n_layer, n_head, T, T) maps laid out as one 2-D grid, layers down and heads across.

    Cells between the maps are NaN, which plots leave blank.
    """
    if maps.dim() != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be (n_layer, n_head, T, T), got {tuple(maps.shape)}")
    gap = check_int("gap", gap, minimum=0)
    L, H, T, _ = maps.shape
    step = T + gap
    grid = torch.full((L * step - gap, H * step - gap), float("nan"))
    for layer in range(L):
        for head in range(H):
            grid[layer * step : layer * step + T, head * step : head * step + T] = maps[layer, head]
    return grid


# ===== The whole model at once: every stage of one forward pass, and the logit lens =============
# Lesson 6 and widgets/model_explorer.py use this section; it depends only on the public names
# above (top_tokens, token_labels, visible_piece) and on course_lib.model and validation.


MODEL_STAGES: tuple[str, ...] = (
    "tokens", "embeddings", "blocks", "final norm", "logits", "next token",
)


def _unembed(model: GPT, residual: torch.Tensor) -> torch.Tensor:
    """Logits of residual-stream vectors (..., C), read out as the model reads its last layer."""
    return model.lm_head(model.transformer.ln_f(residual)).float()


def _run_with_stream(model: GPT, idx: torch.Tensor):
    """One forward pass with attention weights, recording the residual stream and its writes.

    Returns (logits (1, T, V), weights (list of (1, H, T, T)), stream (n_layer + 1, T, C),
    attention outputs (n_layer, T, C), MLP outputs (n_layer, T, C)).
    """
    residual, attn_out, mlp_out = [], [], []

    def first(output):
        return output[0] if isinstance(output, tuple) else output

    blocks = model.transformer.h
    hooks = [blocks[0].register_forward_pre_hook(lambda m, args: residual.append(args[0][0]))]
    for block in blocks:
        hooks += [
            block.register_forward_hook(lambda m, i, o: residual.append(first(o)[0])),
            block.attn.register_forward_hook(lambda m, i, o: attn_out.append(first(o)[0])),
        ]
        if block.mlp is not None:  # attention-only blocks (mlp="none") have no MLP to hook
            hooks.append(
                block.mlp.register_forward_hook(lambda m, i, o: mlp_out.append(first(o)[0]))
            )
    try:
        logits, _, weights = model(idx, return_attention=True)
    finally:
        for h in hooks:
            h.remove()
    attn = torch.stack(attn_out)
    mlp = torch.stack(mlp_out) if mlp_out else torch.zeros_like(attn)  # no MLP adds nothing
    return logits, weights, torch.stack(residual), attn, mlp


def logit_lens(model: GPT, ids, position: int = -1) -> torch.Tensor:
    """Next-token probabilities (n_layer + 1, vocab) read off the residual stream at `position`.

    Row 0 decodes the embeddings, row i the stream after block i, each through the final norm
    and the head: the last row is the model's own prediction.
    """
    idx = _one_sequence(model, ids)
    T = idx.shape[1]
    position = check_int("position", position, minimum=-T, maximum=T - 1)
    with eval_mode(model):
        stream = _run_with_stream(model, idx)[2]
        return torch.softmax(_unembed(model, stream[:, position]), dim=-1).cpu()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """A GPT's parameters by component: embeddings, positions, attention, mlp, norms, head.

    A tied head is the embedding matrix itself, so it counts 0: each tensor is counted once.
    """
    model = check_module("model", model)
    counts = dict.fromkeys(("embeddings", "positions", "attention", "mlp", "norms", "head"), 0)
    for name, p in model.named_parameters():  # a tensor shared by two modules is listed once
        if name.endswith("wte.weight"):
            part = "embeddings"
        elif name.endswith("wpe.weight"):
            part = "positions"
        elif name.startswith("lm_head"):
            part = "head"
        elif ".attn." in name:
            part = "attention"
        elif ".mlp." in name:
            part = "mlp"
        elif "ln" in name or "norm" in name:
            part = "norms"
        else:
            raise ValueError(f"parameter {name!r} belongs to no known component")
        counts[part] += p.numel()
    return counts


@dataclass
class ModelTrace:
    """Everything one forward pass computes for a prompt, stage by stage (see model_trace)."""

    ids: list[int]
    labels: list[str]  # each token made visible (visible_piece)
    token_embeddings: torch.Tensor  # (T, C): rows of the embedding matrix
    position_embeddings: torch.Tensor | None  # (T, C); None when positions are rotary
    residual: torch.Tensor  # (n_layer + 1, T, C): the embeddings, then after each block
    attn_out: torch.Tensor  # (n_layer, T, C): what each block's attention adds to the stream
    mlp_out: torch.Tensor  # (n_layer, T, C): what each block's MLP adds to the stream
    attention: torch.Tensor  # (n_layer, n_head, T, T): every head's weights
    final_norm: torch.Tensor  # (T, C): the last stream after the final norm
    logits: torch.Tensor  # (T, vocab)
    probs: torch.Tensor  # (vocab,): the next token, after the last position
    lens: torch.Tensor  # (n_layer + 1, vocab): the logit lens at the last position
    shapes: dict[str, tuple[int, ...]]  # stage (MODEL_STAGES) -> its tensor's shape
    top: list[tuple[str, float]]  # the k likeliest next tokens, made visible
    lens_top: list[list[tuple[str, float]]]  # the same for each row of lens


def model_trace(model: GPT, tokenizer, ids, k: int = 5) -> ModelTrace:
    """Every stage of `model` on one sequence `ids`: what the model explorer draws.

    Costs one forward pass with attention weights, and the final norm and head applied to
    n_layer + 1 more vectors for the logit lens.
    """
    model = check_model("model", model)
    k = check_int("k", k, minimum=1)
    idx = _one_sequence(model, ids)
    T = idx.shape[1]
    with eval_mode(model):
        logits, weights, stream, attn_out, mlp_out = _run_with_stream(model, idx)
        wte = model.transformer.wte(idx)[0]
        wpe = getattr(model.transformer, "wpe", None)
        pos = None if wpe is None else wpe(torch.arange(T, device=idx.device))
        final_norm = model.transformer.ln_f(stream[-1])
        lens = torch.softmax(_unembed(model, stream[:, -1]), dim=-1).cpu()
    logits = logits[0].float().cpu()
    probs = torch.softmax(logits[-1], dim=-1)
    C, V = stream.shape[-1], logits.shape[-1]

    def top_of(p: torch.Tensor) -> list[tuple[str, float]]:
        return [(visible_piece(text), prob) for text, prob in top_tokens(p, tokenizer, k)]

    ids_list = idx[0].tolist()
    return ModelTrace(
        ids=ids_list,
        labels=token_labels(tokenizer, ids_list),
        token_embeddings=wte.float().cpu(),
        position_embeddings=None if pos is None else pos.float().cpu(),
        residual=stream.float().cpu(),
        attn_out=attn_out.float().cpu(),
        mlp_out=mlp_out.float().cpu(),
        attention=torch.stack([w[0] for w in weights]).float().cpu(),
        final_norm=final_norm.float().cpu(),
        logits=logits,
        probs=probs,
        lens=lens,
        shapes={"tokens": (T,), "embeddings": (T, C), "blocks": (T, C),
                "final norm": (T, C), "logits": (T, V), "next token": (V,)},
        top=top_of(probs),
        lens_top=[top_of(row) for row in lens],
    )


# ----- induction heads ------------------------------------------------------------------------


def _repeated_test(model: GPT, n_tokens, n_sequences, seed, head_mask):
    """The repeated random sequences of induction_scores and repeat_loss, and the head mask."""
    model = check_model("model", model)
    n_tokens = check_int("n_tokens", n_tokens, minimum=2,
                         maximum=model.config.block_size // 2)
    n_sequences = check_int("n_sequences", n_sequences, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    mask = _check_head_mask(model, head_mask)
    return repeated_random_sequences(n_sequences, n_tokens, model.config.vocab_size, seed), mask


def induction_scores(
    model: GPT, n_tokens: int = 50, n_sequences: int = 4, seed: int = 0,
    head_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n_layer, n_head) induction score of every head, between 0 and 1.

    Each test sequence is n_tokens random token ids followed by the same ids again. An
    induction head, at a token of the second copy, attends to the token that followed that
    token's earlier occurrence (and so can copy it: "A B ... A -> B"). The score is the mean
    attention weight from each position i of the second copy to position i - n_tokens + 1,
    over n_sequences sequences; a head that spreads attention evenly scores about
    1 / position, one that always looks there scores 1. Random tokens mean the head cannot
    be using meaning or grammar, only the repetition (data.repeated_random_sequences).
    head_mask (n_layer, n_head) of 0/1 switches heads off while measuring.
    """
    idx, mask = _repeated_test(model, n_tokens, n_sequences, seed, head_mask)
    n_tokens = idx.shape[1] // 2
    with eval_mode(model):
        weights = model(idx.to(model.device), return_attention=True, head_mask=mask)[2]
    maps = torch.stack(weights, dim=1).float().cpu()  # (batch, layer, head, T, T)
    rows = torch.arange(n_tokens, 2 * n_tokens)
    stripe = maps[..., rows, rows - n_tokens + 1]  # (batch, layer, head, n_tokens)
    return stripe.mean(dim=(0, -1))


def repeat_loss(
    model: GPT, n_tokens: int = 50, n_sequences: int = 4, seed: int = 0,
    head_mask: torch.Tensor | None = None,
) -> float:
    """Mean next-token loss (nats) on the second copy of repeated random sequences.

    The same sequences as induction_scores. The first token of the second copy is left out:
    nothing says the copy starts there. Chance is ln(vocab_size); copying perfectly is 0.
    """
    idx, mask = _repeated_test(model, n_tokens, n_sequences, seed, head_mask)
    n_tokens = idx.shape[1] // 2
    targets = idx[:, 1:].clone()
    targets[:, :n_tokens] = -1  # the first copy, and the first token of the second
    with eval_mode(model):
        loss = model(idx[:, :-1].to(model.device), targets.to(model.device), head_mask=mask)[1]
    return loss.item()


def train_induction(
    model: GPT,
    steps: int,
    min_length: int,
    max_length: int,
    n_tokens: int | None = None,
    eval_every: int = 25,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list]:
    """Train model in place on repeated random runs and watch induction heads form.

    The training text is data.repeated_random_stream (runs of min_length to max_length ids,
    each repeated once), cut into windows of the model's block_size by course_lib.train.train.
    Every eval_every steps (and before the first) it records repeat_loss and induction_scores
    on held-out sequences of n_tokens ids repeated (default: max_length).
    Returns {"step": [...], "repeat_loss": [...], "induction": [(n_layer, n_head), ...],
    "train_loss": [every step's loss]}.
    """
    model = check_model("model", model)
    # Imported here: train brings torch.distributed and tqdm, which reading a model never needs.
    from course_lib.train import TrainConfig, train

    steps = check_int("steps", steps, minimum=1)
    eval_every = check_int("eval_every", eval_every, minimum=1)
    n_tokens = max_length if n_tokens is None else n_tokens
    n_tokens = check_int("n_tokens", n_tokens, minimum=2, maximum=model.config.block_size // 2)
    config = TrainConfig(max_steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                         min_lr=learning_rate / 10, warmup_steps=min(50, steps // 10),
                         weight_decay=0.0, eval_interval=0, seed=seed, device="cpu",
                         progress=progress)
    # Enough text that no window is seen twice in expectation: nothing to memorise.
    n_text = steps * batch_size * (model.config.block_size + 1)
    stream = repeated_random_stream(n_text, model.config.vocab_size, min_length, max_length,
                                    seed)
    held_out = 10**6 + seed  # evaluation sequences drawn apart from the training stream
    history: dict[str, list] = {"step": [], "repeat_loss": [], "induction": []}

    def record(step: int) -> None:
        history["step"].append(step)
        history["repeat_loss"].append(repeat_loss(model, n_tokens, 8, held_out))
        history["induction"].append(induction_scores(model, n_tokens, 8, held_out))

    record(0)

    def on_step(info: dict) -> None:
        if info["step"] % eval_every == 0 or info["step"] == steps:
            record(info["step"])

    torch.manual_seed(seed)
    with torch.enable_grad():  # a lesson may have switched gradients off to look inside models
        result = train(model, stream, None, config, callback=on_step)
    history["train_loss"] = result["train_loss"]
    return history
