"""Turning a GPT into files and back (safetensors), and other libraries' models into GPTs.

GPT.save, GPT.load, GPT.from_hf_gpt2 and GPT.from_hf_llama call these. A training run's
resumable state (optimizer, step, random generators) is course_lib.training_state's job.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from course_lib.files import write_safetensors, write_text
from course_lib.model import GPT, GPTConfig
from course_lib.validation import check_device


def from_hf_gpt2(hf_model) -> GPT:
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
        norm_eps=float(hf_cfg.layer_norm_epsilon),
    )
    model = GPT(config)
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
    return model


def from_hf_llama(hf_model) -> GPT:
    """A GPT with the weights of a transformers LlamaForCausalLM, giving the same logits.

    transformers rotates dimension j of a head with j + D/2; our rotary rotates the pairs
    (2j, 2j + 1). Reordering the rows of each query and key head maps one onto the other,
    and the attention scores, being dot products within a head, are unchanged.
    """
    c = hf_model.config
    if getattr(c, "model_type", None) != "llama":
        raise ValueError(f"expected a Llama model, got model_type={c.model_type!r}")
    if getattr(c, "hidden_act", "silu") != "silu":
        raise ValueError(f"only Llama's SiLU (SwiGLU) MLP is supported, got {c.hidden_act!r}")
    rope = getattr(c, "rope_parameters", None) or {}
    rope_base = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"only plain rotary positions are supported, got {rope!r}")
    config = GPTConfig(
        vocab_size=c.vocab_size, block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers, n_head=c.num_attention_heads,
        n_kv_head=c.num_key_value_heads, n_embd=c.hidden_size, bias=False,
        position="rope", norm="rmsnorm", norm_eps=c.rms_norm_eps, mlp="swiglu",
        mlp_hidden=c.intermediate_size, rope_base=float(rope_base),
        tie_embeddings=bool(c.tie_word_embeddings),
    )
    with torch.device("meta"):
        model = GPT(config)
    D = c.hidden_size // c.num_attention_heads

    def pairs(w: torch.Tensor, heads: int) -> torch.Tensor:  # j, j + D/2 -> 2j, 2j + 1
        return w.view(heads, 2, D // 2, -1).transpose(1, 2).reshape(w.shape)

    sd = hf_model.state_dict()
    state = {"transformer.wte.weight": sd["model.embed_tokens.weight"],
             "transformer.ln_f.weight": sd["model.norm.weight"]}
    for i in range(c.num_hidden_layers):
        hf, us = f"model.layers.{i}.", f"transformer.h.{i}."
        state[us + "ln_1.weight"] = sd[hf + "input_layernorm.weight"]
        state[us + "ln_2.weight"] = sd[hf + "post_attention_layernorm.weight"]
        state[us + "attn.c_attn.weight"] = torch.cat([
            pairs(sd[hf + "self_attn.q_proj.weight"], c.num_attention_heads),
            pairs(sd[hf + "self_attn.k_proj.weight"], c.num_key_value_heads),
            sd[hf + "self_attn.v_proj.weight"]])
        state[us + "attn.c_proj.weight"] = sd[hf + "self_attn.o_proj.weight"]
        state[us + "mlp.c_fc.weight"] = torch.cat([sd[hf + "mlp.gate_proj.weight"],
                                                   sd[hf + "mlp.up_proj.weight"]])
        state[us + "mlp.c_proj.weight"] = sd[hf + "mlp.down_proj.weight"]
    state["lm_head.weight"] = (state["transformer.wte.weight"] if config.tie_embeddings
                               else sd["lm_head.weight"])
    model.load_state_dict({k: v.detach().float().clone() for k, v in state.items()},
                          assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    return model


def save(model: GPT, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Write model's weights to `path` (.safetensors) and its config to the .json beside it.

    The config is stored inside the safetensors file too (its metadata), and load() reads it
    from there, so weights and config are replaced together by one atomic rename: a crash at
    any moment leaves either the old checkpoint or the new one, never a mix. The .json is a
    readable copy, itself written atomically. dtype must be a floating-point dtype.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a course_lib GPT, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"path {path} ends in .json: the config is written to the .json "
                         "beside the weights, so it would overwrite them; use .safetensors")
    if path.is_dir():
        raise ValueError(f"path {path} is a directory; give a file name like model.safetensors")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype (torch.float32, bfloat16, "
                         f"float16), got {dtype!r}: an integer dtype would zero the weights")
    tensors = {
        k: v.detach().to("cpu", dtype).contiguous()
        for k, v in model.state_dict().items()
        if not (k == "lm_head.weight" and model.config.tie_embeddings)  # tied: stored once
    }
    config_json = json.dumps(asdict(model.config), indent=2) + "\n"
    meta = {"format": "course_lib.GPT", "config": json.dumps(asdict(model.config))}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, tensors, meta)
    write_text(path.with_suffix(".json"), config_json)
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GPT:
    """Load a model written by save(); a corrupt or mismatched file gets a ValueError.

    The config comes from the file's own metadata; the .json beside it is read only for
    files that carry none.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    map_location = check_device("map_location", map_location)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    config_path = path.with_suffix(".json")
    try:
        with safe_open(str(path), framework="pt") as f:
            embedded = (f.metadata() or {}).get("config")
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a valid safetensors checkpoint: {e}") from e
    try:
        if embedded is not None:
            source = f"the metadata of {path}"
            config = GPTConfig.from_dict(json.loads(embedded))
        else:
            source = f"config file {config_path}"
            config = GPTConfig.from_dict(json.loads(config_path.read_text()))
    except FileNotFoundError as e:
        raise ValueError(f"config file {config_path} is missing beside {path}") from e
    except (json.JSONDecodeError, TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"{source} holds a corrupt config: {e}") from e
    model = GPT(config)
    expected = {k: v.shape for k, v in model.state_dict().items()
                if not (k == "lm_head.weight" and config.tie_embeddings)}
    got = {k: v.shape for k, v in tensors.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:3]
        raise ValueError(
            f"checkpoint {path} does not match its config: missing {missing}, "
            f"unexpected {extra}, wrong shape {wrong}"
        )
    for k, v in tensors.items():
        if not v.is_floating_point():
            raise ValueError(f"checkpoint {path}: tensor {k} holds {v.dtype}, not floating-point "
                             "weights (save() writes float32, bfloat16 or float16)")
        if not torch.isfinite(v).all():
            raise ValueError(f"checkpoint {path}: tensor {k} holds NaN or infinite values (did "
                             "the training run that saved it diverge?)")
    state = {k: v.float() for k, v in tensors.items()}
    if config.tie_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model.to(map_location)
