"""A decoder-only transformer for GPT-2 and Llama-family models: config, blocks, forward pass."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import KVCache, MultiHeadAttention
from course_lib.positional import rope_rotation
from course_lib.validation import check_choice, check_float

POSITION_KINDS = ("learned", "rope")
NORM_KINDS = ("layernorm", "rmsnorm")
MLP_KINDS = ("gelu", "gelu_exact", "relu", "swiglu", "none")


@dataclass
class GPTConfig:
    """The shape of a model. The defaults are GPT-2's design; a Llama-family model (SmolLM2)
    differs in a handful of fields: position="rope", norm="rmsnorm", mlp="swiglu",
    n_kv_head < n_head (grouped-query attention), bias=False, and its own rope_base."""

    vocab_size: int = 2048
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True  # biases in the linear layers and LayerNorms (GPT-2), or none (Llama)
    position: str = "learned"  # "learned" (GPT-2) or "rope" (rotary, Llama)
    n_kv_head: int | None = None  # key/value heads; None = n_head (multi-head attention)
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # "gelu" (GPT-2, tanh form), "gelu_exact" (erf form), "swiglu" (Llama),
    # "relu" (the 2017 Transformer), or "none": blocks of attention alone, the toy models of
    # interpretability papers
    mlp_hidden: int | None = None  # None = 4 * n_embd
    rope_base: float = 10000.0
    tie_embeddings: bool = True  # lm_head shares the token embedding's weights

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        for name in ("n_kv_head", "mlp_hidden"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f"GPTConfig.{name} must be a positive int or None, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.n_head % self.kv_heads:
            raise ValueError(
                f"GPTConfig.n_head ({self.n_head}) must be divisible by n_kv_head "
                f"({self.n_kv_head})"
            )
        check_float("GPTConfig.dropout", self.dropout, minimum=0.0, maximum=1.0,
                    max_inclusive=False)
        check_float("GPTConfig.norm_eps", self.norm_eps, minimum=0.0, maximum=1.0,
                    min_inclusive=False)
        check_float("GPTConfig.rope_base", self.rope_base, minimum=1.0, min_inclusive=False)
        for name in ("bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"GPTConfig.{name} must be True or False, got {getattr(self, name)!r}"
                )
        check_choice("GPTConfig.position", self.position, POSITION_KINDS)
        check_choice("GPTConfig.norm", self.norm, NORM_KINDS)
        check_choice("GPTConfig.mlp", self.mlp, MLP_KINDS)
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"GPTConfig.position='rope' needs an even head size "
                             f"(n_embd / n_head), got {self.n_embd // self.n_head}")

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads (n_kv_head, or n_head when that is None)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden(self) -> int:
        """Width of the MLP's hidden layer (mlp_hidden, or 4 * n_embd when that is None)."""
        return 4 * self.n_embd if self.mlp_hidden is None else self.mlp_hidden

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a GPTConfig must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)


@contextlib.contextmanager
def eval_mode(model: nn.Module, no_grad: bool = True) -> Iterator[nn.Module]:
    """Run model in eval mode (and without gradients), then restore the caller's mode.

    Every helper that reads a model without training it uses this, so a model in training mode
    is never left in eval mode (dropout silently off) by a call that only looked at it.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        model.train(was_training)


class _CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the targets that are not -1, with the textbook gradient.

    d loss / d logits = (softmax(logits) - one_hot(target)) / n. Same value and gradient as
    F.cross_entropy(ignore_index=-1), but the backward pass turns the saved log-probabilities
    into that gradient in place, instead of building a one-hot matrix and a separate
    log-softmax gradient: on a CPU that halves the time of the loss, a few percent of a step.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        keep = targets != -1
        safe_targets = targets.clamp(min=0)
        n = keep.sum()
        picked = logp.gather(1, safe_targets[:, None])[:, 0]
        ctx.save_for_backward(logp, safe_targets, keep, n)
        return -(picked * keep).sum() / n

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # A second backward through the same graph fails loudly: exp_ bumps logp's version.
        logp, targets, keep, n = ctx.saved_tensors
        g = logp.exp_()
        g.scatter_add_(1, targets[:, None], torch.full_like(g[:, :1], -1.0))
        g.mul_((grad / n) * keep[:, None])
        return g, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (N, V) against targets (N,); targets equal to -1 are skipped."""
    return _CrossEntropy.apply(logits, targets)


class MLP(nn.Module):
    """Position-wise feed-forward layer: GELU (GPT-2), SwiGLU (Llama) or ReLU (the 2017 paper)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        # SwiGLU: c_fc holds two matrices, [W_gate; W_up], so one matrix product gives both.
        n_out = 2 * config.hidden if self.swiglu else config.hidden
        self.c_fc = nn.Linear(config.n_embd, n_out, bias=config.bias)
        # GPT-2 uses the tanh approximation of GELU; matching it lets from_hf_gpt2 be exact.
        # nanoGPT uses the exact (erf) form, GPTConfig(mlp="gelu_exact"), cheaper on a CPU.
        # "Attention Is All You Need" uses ReLU: max(0, x W_1 + b_1) W_2 + b_2. The attribute
        # keeps its name gelu either way, as scripts replace it by that name.
        self.gelu = (nn.ReLU() if config.mlp == "relu" else
                     nn.GELU(approximate="none" if config.mlp == "gelu_exact" else "tanh"))
        self.c_proj = nn.Linear(config.hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.swiglu:  # Llama: silu(x W_gate) * (x W_up)
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = self.gelu(h)
        return self.dropout(self.c_proj(h))


def make_norm(config: GPTConfig) -> nn.Module:
    """LayerNorm (GPT-2: subtract the mean, divide by the std, scale and shift) or RMSNorm
    (Llama: divide by the root mean square, scale; no mean, no shift)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) (no MLP for mlp="none")."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = MultiHeadAttention(
            config.n_embd, config.n_head, bias=config.bias, dropout=config.dropout,
            rope=config.position == "rope", n_kv_head=config.kv_heads, rope_base=config.rope_base,
        )
        # mlp="none": attention only, so neither the MLP nor the norm in front of it exists.
        self.ln_2 = make_norm(config) if config.mlp != "none" else None
        self.mlp = MLP(config) if config.mlp != "none" else None

    def forward(
        self,
        x: torch.Tensor,
        *,
        need_weights: bool = False,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        head_mask: torch.Tensor | None = None,
        rotation: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, n_embd) -> (x after the block, attention weights or None); see attention."""
        a, weights = self.attn(
            self.ln_1(x), causal=True, need_weights=need_weights, kv_cache=kv_cache,
            layer=layer, head_mask=head_mask, rotation=rotation,
        )
        x = x + a
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    """GPT(idx, targets) -> (logits, loss); return_attention=True adds every layer's weights."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd)
                if config.position == "learned"
                else None,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=make_norm(config),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # Residual projections scaled down so the residual stream's variance does not grow
        # with depth (GPT-2 paper, section 2.3).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.transformer.ln_f.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the activations, and so of a KV cache: the norms' (read there because
        a stored-quantized embedding, load_smollm2(quantized=True), rebuilds its .weight)."""
        return self.transformer.ln_f.weight.dtype

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache for this model; capacity: positions to make room for at first."""
        return KVCache(self.config.n_layer, self.config.block_size, capacity)

    def _check_idx(self, idx: torch.Tensor, offset: int) -> None:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        if idx.shape[1] == 0 or idx.shape[0] == 0:
            raise ValueError("idx is empty: give at least one token (an empty prompt?)")
        if offset + idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"sequence length {offset + idx.shape[1]} exceeds block_size "
                f"{self.config.block_size}; crop the context to the last block_size tokens"
            )
        if torch.compiler.is_compiling():
            return  # reading values out of the tensor would break the compiled graph
        if self.training and idx.device.type != "cpu":
            return  # reading values would wait for the GPU every step; train() checks its data once
        lo, hi = torch.aminmax(idx)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"token id {bad} in idx is outside the vocabulary [0, {self.config.vocab_size})"
            )

    def _check_extras(self, idx, targets, kv_cache, head_mask) -> None:
        """The optional arguments of forward: a clear error instead of a shape error in torch."""
        if kv_cache is not None:
            if not isinstance(kv_cache, KVCache):
                raise TypeError(f"kv_cache must be a KVCache (model.new_cache()), "
                                f"got {type(kv_cache).__name__}")
            if kv_cache.n_layer != self.config.n_layer:
                raise ValueError(f"kv_cache has {kv_cache.n_layer} layers but this model has "
                                 f"{self.config.n_layer}: make it with model.new_cache()")
            batch = kv_cache.batch_size
            if batch is not None and batch != idx.shape[0]:
                raise ValueError(f"kv_cache holds a batch of {batch} but idx has "
                                 f"{idx.shape[0]} rows")
        if head_mask is not None:
            shape = (self.config.n_layer, self.config.n_head)
            if not isinstance(head_mask, torch.Tensor) or tuple(head_mask.shape) != shape:
                got = tuple(head_mask.shape) if isinstance(head_mask, torch.Tensor) else head_mask
                raise ValueError(f"head_mask must be a tensor of shape (n_layer, n_head) = "
                                 f"{shape}, got {got!r:.60}")
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int64,
                                                                                torch.int32):
                raise TypeError("targets must be a tensor of integer token ids (-1 = ignore), "
                                f"got {getattr(targets, 'dtype', type(targets).__name__)}")
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}, "
                                 f"got {tuple(targets.shape)}")
            if not torch.compiler.is_compiling():
                bad = (targets < -1) | (targets >= self.config.vocab_size)
                if bool(bad.any()):
                    value = int(targets[bad][0])
                    raise ValueError(f"target {value} is outside the vocabulary "
                                     f"[0, {self.config.vocab_size}) (-1 means ignore)")

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
        kv_cache: KVCache | None = None,
        head_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ):
        """Logits for every position, and the mean cross-entropy if targets are given.

        targets equal to -1 are ignored. head_mask (n_layer, n_head) of 0/1 switches heads off.
        last_only: logits (B, 1, V) for the last position only, all that choosing the next
        token needs; the output layer is the largest matrix, so a prompt's other positions
        would cost the most for nothing (transformers' generate does the same).
        """
        if last_only and targets is not None:
            raise ValueError("last_only=True gives no loss: the loss needs every position's logits")
        offset = kv_cache.length if isinstance(kv_cache, KVCache) else 0
        self._check_idx(idx, offset)
        self._check_extras(idx, targets, kv_cache, head_mask)
        T = idx.shape[1]
        x = self.transformer.wte(idx)
        rotation = None
        if self.transformer.wpe is not None:  # GPT-2: add a learned vector per position
            pos = torch.arange(offset, offset + T, device=idx.device)
            x = x + self.transformer.wpe(pos)
        else:  # rotary: q and k are turned by their positions' angles, in every layer alike
            rotation = rope_rotation(offset, T, self.config.n_embd // self.config.n_head,
                                     self.config.rope_base, idx.device)
        x = self.transformer.drop(x)
        attentions = []
        for i, block in enumerate(self.transformer.h):
            x, w = block(
                x,
                need_weights=return_attention,
                kv_cache=kv_cache,
                layer=i,
                head_mask=None if head_mask is None else head_mask[i],
                rotation=rotation,
            )
            attentions.append(w)
        logits = self.lm_head(self.transformer.ln_f(x[:, -1:] if last_only else x))
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        if return_attention:
            return logits, loss, attentions
        return logits, loss

    # ----- interop and persistence: the code lives in course_lib.checkpoints ----------------
    # Imported inside each method because checkpoints imports this module.

    @classmethod
    def from_hf_gpt2(cls, hf_model) -> GPT:
        """A GPT with the weights of a transformers GPT2LMHeadModel, giving the same logits."""
        from course_lib import checkpoints

        return checkpoints.from_hf_gpt2(hf_model)

    @classmethod
    def from_hf_llama(cls, hf_model) -> GPT:
        """A GPT with the weights of a transformers LlamaForCausalLM, giving the same logits."""
        from course_lib import checkpoints

        return checkpoints.from_hf_llama(hf_model)

    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        """Write weights to `path` (.safetensors) and the config to the .json beside it."""
        from course_lib import checkpoints

        return checkpoints.save(self, path, dtype)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GPT:
        """Load a model written by save(); a corrupt or mismatched file gets a ValueError."""
        from course_lib import checkpoints

        return checkpoints.load(path, map_location)
