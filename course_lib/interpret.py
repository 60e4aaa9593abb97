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
