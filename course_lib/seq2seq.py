"""The original Transformer (2017): an encoder reads the source, a decoder writes the target."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from course_lib.attention import CrossAttention, KVCache, MultiHeadAttention
from course_lib.files import write_safetensors, write_text
from course_lib.model import MLP, GPTConfig, cross_entropy, make_norm
from course_lib.positional import sinusoidal
from course_lib.validation import check_choice

ACTIVATIONS = ("relu", "gelu", "gelu_exact")  # GPTConfig.mlp names; the paper's is relu
SEQ2SEQ_POSITIONS = ("sinusoidal", "learned")


@dataclass
class Seq2SeqConfig:
    """The shape of an encoder-decoder model. The defaults are the paper's design, smaller."""

    vocab_size: int = 64  # the source's; the target's too when tgt_vocab_size is None
    tgt_vocab_size: int | None = None  # None: one vocabulary and one embedding table for both
    block_size: int = 64  # longest source
    tgt_block_size: int | None = None  # longest target; None: block_size
    n_encoder_layer: int = 2
    n_decoder_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    mlp_hidden: int | None = None  # None: 4 * n_embd (the paper: 2048 for 512)
    activation: str = "relu"  # "relu" (the paper), "gelu" (tanh form) or "gelu_exact" (erf)
    # False: post-norm as in the paper, x = norm(x + f(x)); True: pre-norm, x + f(norm(x)),
    # as GPT-2 and most models since (it trains without a long warm-up)
    norm_first: bool = False
    final_norm: bool = True  # a LayerNorm after each stack (torch.nn.Transformer's; not BERT's)
    norm_eps: float = 1e-5
    dropout: float = 0.0
    bias: bool = True
    position: str = "sinusoidal"  # "sinusoidal" (the paper) or "learned" (GPT-2, BERT)
    tie_embeddings: bool = True  # the output layer reuses the target embedding (paper, 3.4)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "int | None") and not (value is None and "None" in f.type):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"Seq2SeqConfig.{f.name} must be a positive int, "
                                     f"got {value!r}")
            if f.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"Seq2SeqConfig.{f.name} must be True or False, got {value!r}")
        check_choice("Seq2SeqConfig.activation", self.activation, ACTIVATIONS)
        check_choice("Seq2SeqConfig.position", self.position, SEQ2SEQ_POSITIONS)
        self.block_config()  # GPTConfig checks n_embd, n_head, dropout and norm_eps

    @property
    def target_vocab_size(self) -> int:
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size

    @property
    def target_block_size(self) -> int:
        return self.block_size if self.tgt_block_size is None else self.tgt_block_size

    def block_config(self) -> GPTConfig:
        """The GPTConfig that MLP and make_norm read: the blocks are built from GPT's parts."""
        return GPTConfig(n_layer=1, n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout,
                         bias=self.bias, norm_eps=self.norm_eps, mlp=self.activation,
                         mlp_hidden=self.mlp_hidden)

    @classmethod
    def from_dict(cls, d: dict) -> Seq2SeqConfig:
        unknown = set(d) - {f.name for f in fields(cls)} if isinstance(d, dict) else set()
        if not isinstance(d, dict) or unknown:
            raise ValueError(f"not a Seq2SeqConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


def _residual(x: torch.Tensor, f, norm: nn.Module, norm_first: bool) -> torch.Tensor:
    """A sublayer and its residual: pre-norm x + f(norm(x)), post-norm norm(x + f(x))."""
    return x + f(norm(x)) if norm_first else norm(x + f(x))


class EncoderBlock(nn.Module):
    """Self-attention over the whole source (no causal mask, padding masked out), then an MLP."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = config.block_config()
        self.norm_first = config.norm_first
        self.attn = MultiHeadAttention(c.n_embd, c.n_head, bias=c.bias, dropout=c.dropout)
        self.ln_1, self.mlp, self.ln_2 = make_norm(c), MLP(c), make_norm(c)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, S, n_embd); key_mask (B, S) True for real tokens, False for padding."""
        def attend(h: torch.Tensor) -> torch.Tensor:
            return self.attn(h, causal=False, key_mask=key_mask)[0]

        x = _residual(x, attend, self.ln_1, self.norm_first)
        return _residual(x, self.mlp, self.ln_2, self.norm_first)


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder's output, then an MLP."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = config.block_config()
        self.norm_first = config.norm_first
        self.attn = MultiHeadAttention(c.n_embd, c.n_head, bias=c.bias, dropout=c.dropout)
        self.cross_attn = CrossAttention(c.n_embd, c.n_head, bias=c.bias, dropout=c.dropout)
        self.ln_1, self.ln_2 = make_norm(c), make_norm(c)
        self.mlp, self.ln_3 = MLP(c), make_norm(c)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None,
                memory_mask: torch.Tensor | None = None, *, kv_cache: KVCache | None = None,
                layer: int = 0, memory_kv: tuple | None = None) -> torch.Tensor:
        """x (B, T, n_embd) reads memory (B, S, n_embd), or its cached keys and values."""
        def attend(h: torch.Tensor) -> torch.Tensor:
            return self.attn(h, causal=True, kv_cache=kv_cache, layer=layer)[0]

        def cross(h: torch.Tensor) -> torch.Tensor:
            return self.cross_attn(h, None if memory_kv else memory, memory_kv=memory_kv,
                                   memory_mask=memory_mask)[0]

        x = _residual(x, attend, self.ln_1, self.norm_first)
        x = _residual(x, cross, self.ln_2, self.norm_first)
        return _residual(x, self.mlp, self.ln_3, self.norm_first)


class Encoder(nn.Module):
    """A stack of EncoderBlocks, and the final norm if the config has one."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.h = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_encoder_layer))
        self.ln_f = make_norm(config.block_config()) if config.final_norm else None

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.h:
            x = block(x, key_mask)
        return x if self.ln_f is None else self.ln_f(x)


class DecoderCache:
    """What decoding a batch of sources reuses at each step: the self-attention KVCache, and
    every layer's cross-attention keys and values of the encoder output, computed once."""

    def __init__(self, kv: KVCache, cross: list[tuple], memory_mask: torch.Tensor | None):
        self.kv, self.cross, self.memory_mask = kv, cross, memory_mask

    def reorder(self, indices) -> None:
        """Keep the rows named by indices, in that order (beam search; see KVCache.reorder)."""
        indices = torch.as_tensor(indices)
        self.kv.reorder(indices)
        self.cross = [(k[indices], v[indices]) for k, v in self.cross]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask[indices]


class Decoder(nn.Module):
    """A stack of DecoderBlocks, and the final norm if the config has one."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.h = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_decoder_layer))
        self.ln_f = make_norm(config.block_config()) if config.final_norm else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None,
                memory_mask: torch.Tensor | None = None,
                cache: DecoderCache | None = None) -> torch.Tensor:
        for i, block in enumerate(self.h):
            if cache is None:
                x = block(x, memory, memory_mask, layer=i)
            else:
                x = block(x, None, cache.memory_mask, kv_cache=cache.kv, layer=i,
                          memory_kv=cache.cross[i])
        return x if self.ln_f is None else self.ln_f(x)


class Seq2Seq(nn.Module):
    """Seq2Seq(src, tgt, targets) -> (logits, loss): the encoder-decoder of "Attention Is All
    You Need". encode(src) runs once per source; decode(tgt, memory) gives next-token logits."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        self.src_embed = nn.Embedding(c.vocab_size, c.n_embd)
        # a shared vocabulary shares the table; None then, so the weights are saved once
        self.tgt_embed = None if c.tgt_vocab_size is None else nn.Embedding(c.tgt_vocab_size,
                                                                            c.n_embd)
        if c.position == "learned":
            self.src_pos = nn.Embedding(c.block_size, c.n_embd)
            self.tgt_pos = nn.Embedding(c.target_block_size, c.n_embd)
        else:  # a fixed table, not a weight: rebuilt, never saved
            n = max(c.block_size, c.target_block_size)
            self.register_buffer("pe", sinusoidal(n, c.n_embd), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.encoder, self.decoder = Encoder(c), Decoder(c)
        self.lm_head = nn.Linear(c.n_embd, c.target_vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if c.tie_embeddings:
            self.lm_head.weight = self.target_embedding.weight

    @property
    def target_embedding(self) -> nn.Embedding:
        return self.src_embed if self.tgt_embed is None else self.tgt_embed

    @property
    def device(self) -> torch.device:
        return self.src_embed.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, ids: torch.Tensor, table: nn.Embedding, pos_table: str, limit: int,
               offset: int = 0) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32) or ids.numel() == 0:
            raise ValueError(f"token ids must be a non-empty (batch, time) integer tensor, got "
                             f"shape {tuple(ids.shape)} of {ids.dtype}")
        if offset + ids.shape[1] > limit:
            raise ValueError(f"sequence length {offset + ids.shape[1]} exceeds the block size "
                             f"{limit}")
        if int(ids.min()) < 0 or int(ids.max()) >= table.num_embeddings:
            raise ValueError(f"token ids must be in [0, {table.num_embeddings})")
        pos = torch.arange(offset, offset + ids.shape[1], device=ids.device)
        if self.config.position == "learned":
            x = table(ids) + getattr(self, pos_table)(pos)
        else:  # the paper scales token vectors by sqrt(d) before adding the sinusoids (3.4)
            x = table(ids) * math.sqrt(self.config.n_embd) + self.pe[pos]
        return self.drop(x)

    def embed_source(self, src: torch.Tensor) -> torch.Tensor:
        """The vectors (B, S, n_embd) the encoder reads: token embeddings plus positions."""
        return self._embed(src, self.src_embed, "src_pos", self.config.block_size)

    def embed_target(self, tgt: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """The vectors (B, T, n_embd) the decoder reads, tgt starting at position offset."""
        return self._embed(tgt, self.target_embedding, "tgt_pos",
                           self.config.target_block_size, offset)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output (B, S, n_embd), the memory. src_mask: True for real tokens."""
        return self.encoder(self.embed_source(src), src_mask)

    def new_cache(self, memory: torch.Tensor,
                  memory_mask: torch.Tensor | None = None) -> DecoderCache:
        """A cache for decoding these sources: cross-attention keys and values, computed now."""
        cross = [block.cross_attn.memory_kv(memory) for block in self.decoder.h]
        kv = KVCache(self.config.n_decoder_layer, self.config.target_block_size)
        return DecoderCache(kv, cross, memory_mask)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor | None,
               memory_mask: torch.Tensor | None = None, *,
               cache: DecoderCache | None = None) -> torch.Tensor:
        """Logits (B, T, target vocab) of the token after each of tgt, reading memory.

        With a cache (new_cache), tgt holds only the new tokens and memory, memory_mask are
        taken from the cache (pass None): a step costs one position of self-attention.
        """
        x = self.embed_target(tgt, 0 if cache is None else cache.kv.length)
        return self.lm_head(self.decoder(x, memory, memory_mask, cache))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, targets: torch.Tensor | None = None,
                *, src_mask: torch.Tensor | None = None):
        """Logits for every target position, and the mean cross-entropy (targets -1 skipped)."""
        logits = self.decode(tgt, self.encode(src, src_mask), src_mask)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @classmethod
    def from_torch(cls, transformer: nn.Transformer, **config) -> Seq2Seq:
        """A Seq2Seq with the encoder and decoder weights of a torch.nn.Transformer.

        config: the Seq2SeqConfig fields torch's module has no counterpart for (vocab_size,
        block sizes, position); its embeddings start random, as nn.Transformer has none.
        """
        enc = transformer.encoder.layers[0]
        activation = enc.activation
        names = {torch.nn.functional.relu: "relu", torch.nn.functional.gelu: "gelu_exact"}
        if activation not in names:
            raise ValueError(f"only relu and gelu activations are supported, got {activation}")
        model = cls(Seq2SeqConfig(
            n_encoder_layer=len(transformer.encoder.layers),
            n_decoder_layer=len(transformer.decoder.layers),
            n_head=enc.self_attn.num_heads, n_embd=enc.self_attn.embed_dim,
            mlp_hidden=enc.linear1.out_features, activation=names[activation],
            norm_first=enc.norm_first, final_norm=True, norm_eps=enc.norm1.eps,
            bias=enc.linear1.bias is not None, **config))
        state = {_from_torch_name(k): v for k, v in transformer.state_dict().items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        left = [k for k in missing if k.startswith(("encoder.", "decoder."))]
        if left or unexpected:
            raise ValueError(f"weights without a place: missing {left}, unexpected {unexpected}")
        return model

    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        """Write the weights (.safetensors, config in its metadata) and the config .json beside."""
        path = Path(path)
        tensors = {k: v.detach().to("cpu", dtype).contiguous()
                   for k, v in self.state_dict().items()
                   if not (k == "lm_head.weight" and self.config.tie_embeddings)}
        config_json = json.dumps(asdict(self.config), indent=2)
        meta = {"format": "course_lib.Seq2Seq", "config": config_json}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(path, tensors, meta)
        write_text(path.with_suffix(".json"), config_json)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Seq2Seq:
        """A model written by save(), in float32 on the CPU."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "course_lib.Seq2Seq":
                raise ValueError(f"{path} is not a Seq2Seq checkpoint (no course_lib.Seq2Seq "
                                 "metadata)")
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        model = cls(Seq2SeqConfig.from_dict(json.loads(meta["config"])))
        if model.config.tie_embeddings:
            state["lm_head.weight"] = state[
                "src_embed.weight" if model.tgt_embed is None else "tgt_embed.weight"]
        model.load_state_dict(state)
        return model


# torch.nn.Transformer's parameter names -> ours (the layer index is kept).
_TORCH_NAMES = {
    "self_attn.in_proj_": "attn.c_attn.", "self_attn.out_proj.": "attn.c_proj.",
    "multihead_attn.in_proj_": "cross_attn.c_attn.", "multihead_attn.out_proj.":
    "cross_attn.c_proj.", "linear1.": "mlp.c_fc.", "linear2.": "mlp.c_proj.",
    "norm1.": "ln_1.", "norm2.": "ln_2.", "norm3.": "ln_3.",
}


def _from_torch_name(name: str) -> str:
    m = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)", name)
    if m is None:  # encoder.norm.weight -> encoder.ln_f.weight
        return name.replace(".norm.", ".ln_f.")
    stack, i, rest = m.groups()
    for theirs, ours in _TORCH_NAMES.items():
        if rest.startswith(theirs):
            rest = ours + rest[len(theirs):]
            break
    return f"{stack}.h.{i}.{rest}"


@torch.no_grad()
def cross_attention_weights(model: Seq2Seq, src: torch.Tensor, tgt: torch.Tensor,
                            src_mask: torch.Tensor | None = None) -> tuple:
    """(weights, logits): every decoder layer's cross-attention weights, stacked (n_decoder_layer,
    B, n_head, T, S), where row t is the target position writing token t+1 and column s a
    source token; and the logits decode() gives. The decoder blocks run step by step as
    DecoderBlock.forward does, the cross-attention asked for its weights."""
    memory = model.encode(src, src_mask)
    x = model.embed_target(tgt)
    maps = []
    for block in model.decoder.h:
        def attend(h: torch.Tensor, block=block) -> torch.Tensor:
            return block.attn(h, causal=True)[0]

        def cross(h: torch.Tensor, block=block) -> torch.Tensor:
            y, w = block.cross_attn(h, memory, memory_mask=src_mask, need_weights=True)
            maps.append(w)
            return y

        x = _residual(x, attend, block.ln_1, block.norm_first)
        x = _residual(x, cross, block.ln_2, block.norm_first)
        x = _residual(x, block.mlp, block.ln_3, block.norm_first)
    if model.decoder.ln_f is not None:
        x = model.decoder.ln_f(x)
    return torch.stack(maps), model.lm_head(x)
