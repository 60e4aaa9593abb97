"""Weight quantization: absmax int8/int4/int3, layers that run on it, and GGUF's Q4_1 blocks."""

from __future__ import annotations

import copy
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.validation import check_bytes, check_choice, check_int, check_module

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)
# name -> (bits, group_size); None bits means the float weights as they are.
FORMATS: dict[str, tuple[int | None, int | None]] = {
    "fp32": (None, None),
    "int8": (8, None),
    "int4": (4, 32),
    "int3": (3, 32),
}
Q4_1_BLOCK = 32  # weights per block of GGUF's Q4_1
Q4_1_BLOCK_BYTES = 20  # float16 d, float16 m, 16 bytes of 4-bit codes


def _check_format(bits, group_size, n_cols: int | None = None) -> tuple[int, int | None]:
    bits = check_choice("bits", bits, SUPPORTED_BITS)
    if group_size is not None:
        group_size = check_int("group_size", group_size, minimum=1)
        if n_cols is not None and n_cols % group_size:
            raise ValueError(
                f"group_size {group_size} must divide the row length {n_cols} of the matrix"
            )
    return bits, group_size


@dataclass
class QuantizedTensor:
    """A 2-D float matrix stored as small integers plus one float16 scale per group.

    w ~ codes * scale, codes in [-qmax, qmax] with qmax = 2**(bits-1) - 1 (symmetric absmax).
    Groups run along each row (group_size consecutive weights; None: the whole row). Codes of
    4 bits or fewer are packed two to a byte, so `nbytes` is what the matrix really occupies.
    """

    packed: torch.Tensor  # uint8 codes, offset by qmax so they are >= 0
    scale: torch.Tensor  # (rows, groups) float16
    bits: int
    group_size: int | None
    shape: tuple[int, int]

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scale.numel() * 2

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight of a tight packing: the codes plus each group's 16-bit scale."""
        return self.bits + 16 * self.scale.numel() / (self.shape[0] * self.shape[1])

    def _offset_codes(self) -> torch.Tensor:
        """The codes + qmax (uint8, >= 0), unpacked to the matrix's shape."""
        p = self.packed
        if self.bits <= 4:
            p = torch.stack([p & 0x0F, p >> 4], dim=-1).reshape(p.shape[0], -1)
            p = p[:, : self.shape[1]]
        return p

    def codes(self) -> torch.Tensor:
        """The signed integer codes, int8 of the matrix's shape."""
        return self._offset_codes().to(torch.int16).sub(self.qmax).to(torch.int8)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float matrix these codes stand for."""
        # In place on one float buffer: a 28M-weight embedding costs one float copy, not four.
        w = self._offset_codes().to(dtype).sub_(self.qmax)
        rows, cols = self.shape
        g = cols if self.group_size is None else self.group_size
        w.view(rows, cols // g, g).mul_(self.scale.to(dtype)[:, :, None])
        return w

    def dequantize_rows(self, rows: torch.Tensor, dtype: torch.dtype = torch.float32):
        """Only the chosen rows (an embedding lookup), without building the whole matrix."""
        sub = QuantizedTensor(self.packed[rows.reshape(-1)], self.scale[rows.reshape(-1)],
                              self.bits, self.group_size, (rows.numel(), self.shape[1]))
        return sub.dequantize(dtype).reshape(*rows.shape, self.shape[1])


FLOAT16_MAX = torch.finfo(torch.float16).max  # the largest scale a float16 can store


def _check_weight(name: str, w: torch.Tensor, bits: int) -> None:
    """A matrix the absmax format can store: it has columns, finite values, and a largest |w|
    whose scale (|w| / qmax) fits in a float16 (else the scale is inf and every weight NaN)."""
    if w.shape[1] == 0:
        raise ValueError(f"{name} has no columns (shape {tuple(w.shape)}): nothing to quantize")
    if w.numel() == 0:
        return
    low, high = (float(x) for x in torch.aminmax(w.detach()))  # no copy of w: it may be large
    if not (math.isfinite(low) and math.isfinite(high)):  # NaN and inf reach the min or max
        row, col = (~torch.isfinite(w.detach())).nonzero()[0].tolist()
        raise ValueError(f"{name} holds NaN or infinite values (first at [{row}, {col}]): "
                         "quantizing would spread them over its whole group")
    biggest = max(-low, high)
    qmax = 2 ** (bits - 1) - 1
    if biggest / qmax > FLOAT16_MAX:
        raise ValueError(f"{name} holds values up to {biggest:.3g} in size; with {bits}-bit codes "
                         f"the float16 scale stores at most {FLOAT16_MAX:.0f} * {qmax} = "
                         f"{FLOAT16_MAX * qmax:.3g}: scale the matrix down first")


def quantize(w: torch.Tensor, bits: int = 8, group_size: int | None = None) -> QuantizedTensor:
    """Absmax quantization of a 2-D matrix: each group's largest |w| maps to the largest code."""
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
        raise TypeError("w must be a 2-D float tensor (a weight matrix)")
    bits, group_size = _check_format(bits, group_size, w.shape[1])
    _check_weight("w", w, bits)
    rows, cols = w.shape
    g = cols if group_size is None else group_size
    qmax = 2 ** (bits - 1) - 1
    scale = torch.empty(rows, cols // g, dtype=torch.float16, device=w.device)
    packed = torch.empty(rows, cols, dtype=torch.uint8, device=w.device)
    chunk = max(1, 2**20 // cols)  # about a million weights at a time keeps temporaries small
    for r in range(0, rows, chunk):
        groups = w[r : r + chunk].detach().float().view(-1, cols // g, g)
        # Round the scale to float16 first, then quantize with the scale that will be stored.
        s = (groups.abs().amax(dim=-1) / qmax).half()
        safe = s.float().clamp_min(torch.finfo(torch.float16).tiny)[:, :, None]
        codes = (groups / safe).round_().clamp_(-qmax, qmax).add_(qmax)
        scale[r : r + chunk], packed[r : r + chunk] = s, codes.view(-1, cols).to(torch.uint8)
    if bits <= 4:
        if cols % 2:
            packed = F.pad(packed, (0, 1))
        packed = packed[:, 0::2] | (packed[:, 1::2] << 4)
    return QuantizedTensor(packed.contiguous(), scale, bits, group_size, (rows, cols))


def fake_quantize(w: torch.Tensor, bits: int = 8, group_size: int | None = None) -> torch.Tensor:
    """dequantize(quantize(w)): the float matrix a quantized model really computes with."""
    return quantize(w, bits, group_size).dequantize(w.dtype)


class QuantizedLinear(nn.Module):
    """nn.Linear whose weight is stored quantized and dequantized on the fly at every call."""

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.qweight = qweight
        self.out_features, self.in_features = qweight.shape
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 8, group_size: int | None = None):
        return cls(quantize(linear.weight, bits, group_size), linear.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (built on demand, for code that reads .weight)."""
        return self.qweight.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight.dequantize(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.qweight.bits}, group_size={self.qweight.group_size}")


class QuantizedEmbedding(nn.Module):
    """nn.Embedding stored quantized; a lookup dequantizes only the rows it reads."""

    def __init__(self, qweight: QuantizedTensor):
        super().__init__()
        self.qweight = qweight
        self.num_embeddings, self.embedding_dim = qweight.shape

    @property
    def weight(self) -> torch.Tensor:
        return self.qweight.dequantize()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.qweight.dequantize_rows(idx)


def quantize_model(model: nn.Module, bits: int = 8, group_size: int | None = None) -> nn.Module:
    """A copy of model whose matrices (every nn.Linear and nn.Embedding) are stored quantized.

    Norms and biases stay float. The copy shares those with model (nothing float is
    duplicated), so the original is untouched and the copy costs only the quantized storage.
    A tied output layer shares its quantized matrix with the embedding, as it shared weights.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    bits, group_size = _check_format(bits, group_size)
    for name, m in model.named_modules():  # every matrix checked before anything is copied
        if isinstance(m, (nn.Linear, nn.Embedding)):
            cols = m.in_features if isinstance(m, nn.Linear) else m.embedding_dim
            if group_size is not None and cols % group_size:
                raise ValueError(f"group_size {group_size} must divide the row length {cols} "
                                 f"of {name}")
            _check_weight(f"the weight of {name}", m.weight, bits)
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    qmodel = copy.deepcopy(model, memo)
    done: dict[int, QuantizedTensor] = {}  # id of a float weight -> its quantized form
    for parent in list(qmodel.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.Linear, nn.Embedding)):
                key = id(child.weight)
                if key not in done:
                    done[key] = quantize(child.weight, bits, group_size)
                new = (QuantizedLinear(done[key], child.bias) if isinstance(child, nn.Linear)
                       else QuantizedEmbedding(done[key]))
                setattr(parent, child_name, new)
    return qmodel.eval()


def model_nbytes(model: nn.Module) -> int:
    """Bytes the model's weights occupy: float tensors at their dtype, quantized ones packed.

    A tensor shared by two modules (tied weights) is counted once.
    """
    model = check_module("model", model)
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    for m in model.modules():
        q = getattr(m, "qweight", None)
        if isinstance(q, QuantizedTensor) and id(q) not in seen:
            seen.add(id(q))
            total += q.nbytes
    return total


# ----- GGUF's Q4_1: what SmolLM2's file stores ---------------------------------------------


def decode_q4_1_block(raw: bytes) -> np.ndarray:
    """The 32 float32 weights of one Q4_1 block, from its 20 raw bytes.

    Layout (ggml): float16 d (the step), float16 m (the minimum), then 16 bytes; byte j holds
    weight j in its low 4 bits and weight j + 16 in its high 4 bits; weight = d * code + m.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)) or len(raw) != Q4_1_BLOCK_BYTES:
        raise ValueError(f"raw must be {Q4_1_BLOCK_BYTES} bytes (one Q4_1 block)")
    d, m = struct.unpack("<ee", bytes(raw[:4]))
    qs = bytes(raw[4:])
    codes = [b & 0x0F for b in qs] + [b >> 4 for b in qs]
    return (np.float32(d) * np.array(codes, dtype=np.float32) + np.float32(m)).astype(np.float32)


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    """Every block of a Q4_1 tensor (uint8 rows of whole blocks), vectorised: float32 rows."""
    raw = check_bytes("raw", raw)
    if raw.ndim == 0 or raw.shape[-1] % Q4_1_BLOCK_BYTES:
        raise ValueError(f"each row must be whole {Q4_1_BLOCK_BYTES}-byte blocks")
    blocks = raw.reshape(-1, Q4_1_BLOCK_BYTES)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 4:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    out = d * codes + m
    return out.reshape(*raw.shape[:-1], raw.shape[-1] // Q4_1_BLOCK_BYTES * Q4_1_BLOCK)


def gguf_tensor(path, name: str) -> tuple[np.ndarray, str, tuple[int, ...]]:
    """(raw bytes as uint8 rows, quantization type name, shape) of one tensor of a GGUF file.

    The bytes are exactly as stored (one row of the matrix per row of bytes), read by offset
    from course_lib.gguf_file's tensor table, without decoding anything.
    """
    from course_lib.gguf_file import read_gguf

    gguf = read_gguf(path)
    if name not in gguf.tensors:
        raise ValueError(f"no tensor named {name!r} in {path}")
    t = gguf.tensors[name]
    return gguf.raw(name), t.type_name, tuple(t.shape)


def quantization_summary(
    model: nn.Module, tokenizer, text: str, bits: int | None, group_size: int | None,
    matrix: str,
) -> dict:
    """What one format does to a model: the error of one weight matrix, bits/char on text, size.

    bits None means the float model. matrix names a 2-D parameter of model (from
    named_parameters). Returns errors (the flattened dequantized-minus-float weights of that
    matrix), rms_error, max_abs_error, bits_per_char, nbytes (model_nbytes), bits_per_weight.
    """
    model = check_module("model", model)
    from course_lib.evaluation import bits_per_char

    weights = dict(model.named_parameters())
    if matrix not in weights or weights[matrix].dim() != 2:
        names = [n for n, p in weights.items() if p.dim() == 2]
        raise ValueError(f"matrix must name a 2-D weight of the model, one of {names}")
    w = weights[matrix].detach().float()
    if bits is None:
        qmodel, errors, bpw = model, torch.zeros_like(w).reshape(-1), 32.0
    else:
        qmodel = quantize_model(model, bits, group_size)
        q = quantize(w, bits, group_size)
        errors, bpw = (q.dequantize() - w).reshape(-1), q.bits_per_weight
    return {
        "errors": errors,
        "rms_error": float(errors.pow(2).mean().sqrt()),
        "max_abs_error": float(errors.abs().max()),
        "bits_per_char": bits_per_char(qmodel, tokenizer, text),
        "nbytes": model_nbytes(qmodel),
        "bits_per_weight": bpw,
    }
