"""A GPT-2-style decoder-only transformer: config, blocks, KV cache, safetensors save and load."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from course_lib.attention import KVCache, MultiHeadAttention

POSITION_KINDS = ("learned", "rope")


@dataclass
class GPTConfig:
    vocab_size: int = 2048
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True
    position: str = "learned"  # "learned" (GPT-2) or "rope"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.position not in POSITION_KINDS:
            raise ValueError(
                f"GPTConfig.position must be one of {POSITION_KINDS}, got {self.position!r}"
            )

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
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
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2 uses the tanh approximation of GELU; matching it lets from_hf_gpt2 be exact.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = MultiHeadAttention(
            config.n_embd, config.n_head, config.bias, config.dropout, config.position == "rope"
        )
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, need_weights=False, kv_cache=None, layer=0, head_mask=None):
        a, weights = self.attn(
            self.ln_1(x), True, need_weights, kv_cache, layer, head_mask
        )
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    """GPT(idx, targets) -> (logits, loss); return_attention=True adds every layer's weights."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd)
                if config.position == "learned"
                else None,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
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
        return self.transformer.wte.weight.device

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer, self.config.block_size)

    def _check_idx(self, idx: torch.Tensor, offset: int) -> None:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        if idx.shape[1] == 0:
            raise ValueError("idx is empty: give at least one token (an empty prompt?)")
        if offset + idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"sequence length {offset + idx.shape[1]} exceeds block_size "
                f"{self.config.block_size}; crop the context to the last block_size tokens"
            )
        if torch.compiler.is_compiling():
            return  # reading values out of the tensor would break the compiled graph
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"token id {bad} in idx is outside the vocabulary [0, {self.config.vocab_size})"
            )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
        kv_cache: KVCache | None = None,
        head_mask: torch.Tensor | None = None,
    ):
        """Logits for every position, and the mean cross-entropy if targets are given.

        targets equal to -1 are ignored. head_mask (n_layer, n_head) of 0/1 switches heads off.
        """
        offset = kv_cache.length if kv_cache is not None else 0
        self._check_idx(idx, offset)
        T = idx.shape[1]
        x = self.transformer.wte(idx)
        if self.transformer.wpe is not None:
            pos = torch.arange(offset, offset + T, device=idx.device)
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        attentions = []
        for i, block in enumerate(self.transformer.h):
            x, w = block(
                x,
                need_weights=return_attention,
                kv_cache=kv_cache,
                layer=i,
                head_mask=None if head_mask is None else head_mask[i],
            )
            attentions.append(w)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        if return_attention:
            return logits, loss, attentions
        return logits, loss

    # ----- interop and persistence -------------------------------------------------------

    @classmethod
    def from_hf_gpt2(cls, hf_model) -> GPT:
        """A GPT with the weights of a transformers GPT2LMHeadModel, giving the same logits."""
        hf_cfg = hf_model.config
        if getattr(hf_cfg, "model_type", None) != "gpt2":
            raise ValueError(f"expected a GPT-2 model, got model_type={hf_cfg.model_type!r}")
        if hf_cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(
                f"only GPT-2's tanh GELU is supported, got {hf_cfg.activation_function!r}"
            )
        config = GPTConfig(
            vocab_size=hf_cfg.vocab_size,
            block_size=hf_cfg.n_positions,
            n_layer=hf_cfg.n_layer,
            n_head=hf_cfg.n_head,
            n_embd=hf_cfg.n_embd,
            bias=True,
        )
        model = cls(config)
        sd_hf = hf_model.state_dict()
        # HF's Conv1D stores weights as (in, out); nn.Linear wants (out, in).
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                      "mlp.c_proj.weight")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name == "lm_head.weight":
                    continue
                src = sd_hf[name]
                p.copy_(src.t() if name.endswith(transposed) else src)
        for block in model.transformer.h:
            block.ln_1.eps = block.ln_2.eps = hf_cfg.layer_norm_epsilon
        model.transformer.ln_f.eps = hf_cfg.layer_norm_epsilon
        return model

    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        """Write weights to `path` (.safetensors) and the config to the .json beside it.

        Writes go to a temporary file first, so a failure leaves any existing file untouched.
        """
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {
            k: v.detach().to("cpu", dtype).contiguous()
            for k, v in self.state_dict().items()
            if k != "lm_head.weight"  # tied to wte; stored once
        }
        meta = {"format": "course_lib.GPT", "config": json.dumps(asdict(self.config))}
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
            tmp_path = Path(tmp.name)
        try:
            save_file(tensors, str(tmp_path), metadata=meta)
            umask = os.umask(0)
            os.umask(umask)
            tmp_path.chmod(0o666 & ~umask)  # NamedTemporaryFile is private (0600); undo that
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)
        config_path = path.with_suffix(".json")
        config_path.write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GPT:
        """Load a model written by save(); a corrupt or mismatched file gets a ValueError."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        config_path = path.with_suffix(".json")
        try:
            tensors = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a valid safetensors checkpoint: {e}") from e
        try:
            config_dict = json.loads(config_path.read_text())
            config = GPTConfig.from_dict(config_dict)
        except FileNotFoundError as e:
            raise ValueError(f"config file {config_path} is missing beside {path}") from e
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"config file {config_path} is corrupt: {e}") from e
        model = cls(config)
        expected = {k: v.shape for k, v in model.state_dict().items() if k != "lm_head.weight"}
        got = {k: v.shape for k, v in tensors.items()}
        if expected != got:
            missing = sorted(set(expected) - set(got))[:3]
            extra = sorted(set(got) - set(expected))[:3]
            wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:3]
            raise ValueError(
                f"checkpoint {path} does not match its config: missing {missing}, "
                f"unexpected {extra}, wrong shape {wrong}"
            )
        state = {k: v.float() for k, v in tensors.items()}
        state["lm_head.weight"] = state["transformer.wte.weight"]
        model.load_state_dict(state)
        return model.to(map_location)
