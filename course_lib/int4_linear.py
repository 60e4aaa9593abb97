"""Linear layers that keep a GGUF file's 4-bit blocks and multiply with torch's int4 CPU kernel.

Decoding one token reads every weight once, so its speed is set by the bytes of weights read.
SmolLM2's GGUF file stores each matrix in Q4_1 blocks: 32 weights share a float16 step d and a
float16 minimum m, and weight = d * q + m with q in 0..15 (20 bytes per 32 weights). Torch's
weight-only int4 kernel (`aten._weight_int4pack_mm_for_cpu`, private, pinned with torch 2.13)
computes with weight = (q - 8) * scale + zero, a scale and zero per group of 32 inputs. The two
forms hold the same numbers: scale = d, zero = m + 8 d. So the file's codes go into the kernel
unchanged; only d and m + 8 d are rounded to bfloat16, the kernel's type for scales and for
activations (it is 20x slower with float32 ones on this CPU).

The token embedding is stored in Q8_0 (weight = d * q, q in -128..127, 32 weights per d); tied
to the output layer, it is the largest matrix. Q8_0 is two 4-bit planes: q = 16 h + l with
h in -8..7 and l in 0..15, so W = (h * 16 d) + (l * d), two int4 products whose outputs add up;
the planes hold q exactly, so the embedding lookup reads its rows from them (Int4Embedding).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from course_lib.gguf_file import GGUFFile

GROUP = 32  # weights per block (Q4_1 and Q8_0) and per scale group of the kernel
ROW_TILE = 64  # the kernel's packed layout interleaves output rows in tiles of 64
Q4_1_BYTES = 20  # float16 d, float16 m, 16 bytes of codes (weight j low nibble, j + 16 high)
Q8_0_BYTES = 34  # float16 d, 32 int8 codes
BLOCK_BYTES = {"Q4_1": Q4_1_BYTES, "Q8_0": Q8_0_BYTES}
# Looked up once: resolving torch.ops.aten.<name> costs microseconds, and a decoded token
# makes 121 of these products.
_INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu.default


def _blocks(raw: np.ndarray, kind: str) -> torch.Tensor:
    """Rows of bytes viewed as (rows, blocks, bytes per block) of the GGUF block type kind."""
    size = BLOCK_BYTES[kind]
    raw = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.uint8))
    if raw.dim() != 2 or raw.shape[1] % size:
        raise ValueError(f"raw must be rows of whole {size}-byte {kind} blocks")
    return raw.view(raw.shape[0], raw.shape[1] // size, size)


def q4_1_parts(raw: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 (N, K) in 0..15, d (N, K/32) float16, m float16) of Q4_1 rows of bytes.

    weight[n, k] = d[n, k // 32] * codes[n, k] + m[n, k // 32], as ggml dequantizes it.
    """
    b = _blocks(raw, "Q4_1")
    n, blocks = b.shape[:2]
    d = b[..., 0:2].contiguous().view(torch.float16)[..., 0]
    m = b[..., 2:4].contiguous().view(torch.float16)[..., 0]
    qs = b[..., 4:]
    codes = torch.cat([qs & 0x0F, qs >> 4], dim=-1).reshape(n, blocks * GROUP)
    return codes, d, m


def q8_0_parts(raw: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes int8 (N, K), d (N, K/32) float16) of Q8_0 rows of bytes: weight = d * code."""
    b = _blocks(raw, "Q8_0")
    n, blocks = b.shape[:2]
    d = b[..., 0:2].contiguous().view(torch.float16)[..., 0]
    codes = b[..., 2:].contiguous().view(torch.int8).reshape(n, blocks * GROUP)
    return codes, d


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Codes (N, K) in 0..15 in the layout of torch's _convert_weight_to_int4pack_for_cpu.

    Byte [64 t + k // 2, 32 (k % 2) + n % 32] of row tile t holds row n of that tile in its low
    nibble (n % 64 < 32) or high nibble; written here directly from uint8 codes (torch's op
    wants them as int32, four times the memory). tests/test_int4_linear.py checks it equals
    torch's op.
    """
    N, K = codes.shape
    if N % ROW_TILE or K % GROUP:
        raise ValueError(f"the int4 kernel needs rows in multiples of {ROW_TILE} and columns in "
                         f"multiples of {GROUP}, got a ({N}, {K}) matrix")
    c = codes.to(torch.uint8).view(N // ROW_TILE, 2, 32, K // 2, 2)  # tile, half, n%32, k//2, k%2
    c = c.permute(0, 3, 4, 2, 1)  # tile, k//2, k%2, n%32, half
    return (c[..., 0] | (c[..., 1] << 4)).reshape(N, K // 2).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The codes (N, K) uint8 that pack_int4 packed."""
    N, half_k = packed.shape
    t = packed.view(N // ROW_TILE, half_k, 2, 32)
    nibbles = torch.stack([t & 0x0F, t >> 4], dim=2)  # tile, k//2, half, k%2, n%32
    return nibbles.permute(0, 2, 4, 1, 3).reshape(N, 2 * half_k)


def scales_and_zeros(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The kernel's (K/32, N, 2) bfloat16 table from per-row, per-group scale and zero (N, K/32)."""
    return torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()


class Int4Linear(nn.Module):
    """y = x W^T with W kept as 4-bit codes, one or more planes whose products add up.

    Each plane is (packed codes, scales and zeros): its weight is (q - 8) * scale + zero per
    group of 32 inputs. Q4_1 needs one plane, Q8_0 two. x is rounded to bfloat16 for the kernel
    and the result returned in x's dtype. `weight` rebuilds the float matrix (for code that
    reads it: the model explorer, the logit lens); the forward pass never does.
    """

    def __init__(self, planes: list[tuple[torch.Tensor, torch.Tensor]], in_features: int,
                 out_features: int):
        super().__init__()
        if len(planes) not in (1, 2):
            raise ValueError("planes must hold one (Q4_1) or two (Q8_0) (packed, "
                             f"scales_and_zeros) pairs, got {len(planes)}")
        self.in_features, self.out_features, self.n_planes = in_features, out_features, len(planes)
        for i, (packed, sz) in enumerate(planes):
            if packed.shape != (out_features, in_features // 2) or sz.shape != (
                    in_features // GROUP, out_features, 2):
                raise ValueError(f"plane {i} has shapes {tuple(packed.shape)}, {tuple(sz.shape)}"
                                 f", not those of a ({out_features}, {in_features}) matrix")
            self.register_buffer(f"packed_{i}", packed)
            self.register_buffer(f"scales_and_zeros_{i}", sz)

    def planes(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(getattr(self, f"packed_{i}"), getattr(self, f"scales_and_zeros_{i}"))
                for i in range(self.n_planes)]

    @classmethod
    def from_blocks(cls, raw: np.ndarray, kind: str, rows_at_once: int = 4096) -> Int4Linear:
        """A layer from a matrix's raw Q4_1 or Q8_0 bytes (one row of blocks per output row).

        Q4_1 gives one plane: scale d, zero m + 8 d. Q8_0 gives two: q = 16 h + l, the high
        plane h + 8 with scale 16 d and zero 0, the low plane l with scale d and zero 8 d.
        Converted rows_at_once rows at a time, so the temporaries stay small.
        """
        if kind not in BLOCK_BYTES:
            raise ValueError(f"kind must be one of {sorted(BLOCK_BYTES)}, got {kind!r}")
        N, K = raw.shape[0], raw.shape[1] // BLOCK_BYTES[kind] * GROUP
        n_planes = 1 if kind == "Q4_1" else 2
        packed = [torch.empty(N, K // 2, dtype=torch.uint8) for _ in range(n_planes)]
        table = [torch.empty(K // GROUP, N, 2, dtype=torch.bfloat16) for _ in range(n_planes)]
        step = max(ROW_TILE, rows_at_once // ROW_TILE * ROW_TILE)
        for r in range(0, N, step):
            rows = slice(r, min(N, r + step))
            if kind == "Q4_1":
                codes, d, m = q4_1_parts(raw[rows])
                d = d.float()
                planes = [(codes, d, m.float().add_(d, alpha=8))]
            else:
                codes, d = q8_0_parts(raw[rows])
                d = d.float()
                q = codes.view(torch.uint8)  # two's complement: low nibble l, high nibble h + 16
                planes = [((q >> 4) ^ 8, 16 * d, torch.zeros_like(d)), (q & 0x0F, d, 8 * d)]
            for i, (c, scale, zero) in enumerate(planes):
                packed[i][rows] = pack_int4(c)
                table[i][:, rows] = scales_and_zeros(scale, zero)
        return cls(list(zip(packed, table, strict=True)), K, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cpu:
            raise ValueError("Int4Linear runs on the CPU only (torch's int4 CPU kernel)")
        # The buffers straight from _buffers: nn.Module's __getattr__ costs about a
        # microsecond a lookup, and a decoded token makes 121 of these products.
        b = self._buffers
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = _INT4_MM(flat, b["packed_0"], GROUP, b["scales_and_zeros_0"]).to(x.dtype)
        if self.n_planes == 2:
            y.add_(_INT4_MM(flat, b["packed_1"], GROUP, b["scales_and_zeros_1"]))
        return y.view(*x.shape[:-1], self.out_features)

    @property
    def weight(self) -> torch.Tensor:
        """The float32 matrix the kernel multiplies by (scales and zeros as bfloat16 hold them)."""
        w = torch.zeros(self.out_features, self.in_features)
        for packed, sz in self.planes():
            codes = unpack_int4(packed).float().sub_(8)
            scale, zero = sz.float().permute(2, 1, 0)  # each (N, K/32)
            g = codes.view(self.out_features, -1, GROUP)
            w.view_as(g).add_(g.mul_(scale[..., None]).add_(zero[..., None]))
        return w

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"4-bit planes={self.n_planes}, group={GROUP}")


class Int4Head(Int4Linear):
    """The output layer tied to a Q8_0 embedding: Int4Linear's two planes, each block's exact
    float16 step d, and every logit within `margin` of its position's largest recomputed in
    float32 from the stored rows.

    The kernel's outputs are bfloat16, which rounds a logit of 20 by up to 0.06, and its scales
    are bfloat16 too: SmolLM2's logits come out up to about 0.25 off, enough to swap two
    near-tied candidates, so greedy decoding would now and then pick another token than the
    float32 model. The few candidates that can win are recomputed exactly (a few rows of 576
    weights each), so the choice is the float32 model's; the other logits keep the kernel's.
    The planes hold the codes q = 16 h + l exactly, so `rows` rebuilds any row d * q as the
    file stores it: the embedding lookup reads them too (Int4Embedding), and no second copy of
    the matrix is kept.
    """

    def __init__(self, planes: list[tuple[torch.Tensor, torch.Tensor]], in_features: int,
                 out_features: int, step: torch.Tensor, margin: float = 1.0):
        super().__init__(planes, in_features, out_features)
        if len(planes) != 2 or step.shape != (out_features, in_features // GROUP):
            raise ValueError("Int4Head needs a Q8_0 matrix's two planes and its steps d "
                             f"({out_features}, {in_features // GROUP})")
        self.register_buffer("step", step.to(torch.float16))
        self.margin = margin

    @classmethod
    def from_q8_0(cls, raw: np.ndarray) -> Int4Head:
        layer = Int4Linear.from_blocks(raw, "Q8_0")
        step = torch.cat([q8_0_parts(raw[r : r + 4096])[1] for r in range(0, len(raw), 4096)])
        return cls(layer.planes(), layer.in_features, layer.out_features, step)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The float32 rows (len(index), in_features) of the matrix as the file stores them."""
        index = index.reshape(-1)
        tile, r = index // ROW_TILE, index % ROW_TILE
        codes = []
        for packed, _ in self.planes():
            t = packed.view(-1, self.in_features // 2, 2, 32)  # tile, k//2, k%2, n%32
            b = t[tile, :, :, r % 32].reshape(len(index), self.in_features)
            codes.append(torch.where((r < 32)[:, None], b & 0x0F, b >> 4).to(torch.int16))
        q = (codes[0] - 8) * 16 + codes[1]  # h * 16 + l, the file's int8 code
        d = self.step[index].float().repeat_interleave(GROUP, dim=1)
        return q.float().mul_(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        flat, logits = x.reshape(-1, self.in_features), y.view(-1, self.out_features)
        close = logits >= logits.amax(dim=-1, keepdim=True) - self.margin
        pos, tok = close.nonzero(as_tuple=True)
        logits[pos, tok] = torch.linalg.vecdot(self.rows(tok).to(flat.dtype), flat[pos])
        return y


class Int4Embedding(nn.Module):
    """The token embedding tied to an Int4Head: a lookup rebuilds the rows it reads, exactly."""

    def __init__(self, head: Int4Head):
        super().__init__()
        self.head = head
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features

    @property
    def weight(self) -> torch.Tensor:
        """The whole float32 matrix (113 MB for SmolLM2), built on demand."""
        return self.head.rows(torch.arange(self.num_embeddings))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head.rows(idx).view(*idx.shape, self.embedding_dim)


def _kernel_takes(gguf: GGUFFile, parts: list[str]) -> bool:
    """Whether the tensors `parts`, stacked by rows, are of one block type the kernel can hold
    as stored (Q4_1 or Q8_0) and of a shape it takes."""
    kinds = {gguf.tensors[p].type_name for p in parts}
    shapes = [gguf.tensors[p].shape for p in parts]
    return (len(kinds) == 1 and kinds.pop() in BLOCK_BYTES and len(shapes[0]) == 2
            and sum(s[0] for s in shapes) % ROW_TILE == 0 and shapes[0][-1] % GROUP == 0)


def _linear_from_file(gguf: GGUFFile, parts: list[str]) -> Int4Linear | None:
    """An Int4Linear of the GGUF tensors `parts` stacked by rows, or None where the kernel
    cannot hold them as stored (another block type, or a shape it does not take)."""
    if not _kernel_takes(gguf, parts):
        return None
    kind = gguf.tensors[parts[0]].type_name
    raw = [gguf.raw(p) for p in parts]
    return Int4Linear.from_blocks(raw[0] if len(raw) == 1 else np.concatenate(raw), kind)


def keep_quantized(model: nn.Module, gguf: GGUFFile,
                   names: dict[str, list[str]]) -> dict[str, list[str]]:
    """Put the file's 4-bit (and Q8_0) matrices into model as Int4Linear layers, and a tied Q8_0
    embedding as an Int4Head and its Int4Embedding; return the entries of names still to load
    as floats.

    names maps our parameter names ("transformer.h.0.attn.c_attn.weight") to the GGUF tensors
    stacked into each (course_lib.pretrained._gguf_names). A tied output layer is built from
    the embedding's tensor.
    """
    rest = dict(names)
    tied = "lm_head.weight" not in names
    wte = names["transformer.wte.weight"]
    if tied and gguf.tensors[wte[0]].type_name == "Q8_0" and _kernel_takes(gguf, wte):
        # Largest first, while the heap is empty: its temporaries leave no holes between the
        # small layers' buffers. One copy serves the output layer and the embedding lookup.
        head = Int4Head.from_q8_0(gguf.raw(wte[0]))
        model.lm_head, model.transformer.wte = head, Int4Embedding(head)
        del rest["transformer.wte.weight"]
    todo = {k: v for k, v in names.items() if k.endswith(".weight")
            and isinstance(model.get_submodule(k.removesuffix(".weight")), nn.Linear)}
    if tied and isinstance(model.lm_head, nn.Linear):
        todo["lm_head.weight"] = wte
    for ours, parts in todo.items():
        layer = _linear_from_file(gguf, parts)
        if layer is not None:
            _replace(model, ours.removesuffix(".weight"), layer)
            rest.pop(ours, None)
    if tied and isinstance(model.lm_head, nn.Linear):
        rest["lm_head.weight"] = wte  # the kernel could not hold it: a float copy
    return rest


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
