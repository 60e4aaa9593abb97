"""Read a GGUF file (llama.cpp's model format): its metadata, tensor table and tensors.

The format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) is a header, a list of
typed key/value pairs (architecture, sizes, the tokenizer's vocabulary and merges, the chat
template), a table of tensors (name, shape, type, offset), then the tensor data. This reader
parses the header and table in pure Python with bounds checks, so a truncated or corrupt file
gets a ValueError naming it, and it is fast: gguf.GGUFReader takes seconds on SmolLM2's
100,000-entry vocabulary arrays. Tensors are dequantized by the `gguf` package (llama.cpp's
own reference code).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"GGUF"
_SCALARS = {  # GGUF value type -> struct format
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
          10: "<u8", 11: "<i8", 12: "<f8"}
MAX_DIMS = 4


@dataclass
class GGUFTensor:
    """One entry of the tensor table: shape is numpy's order (the slowest dimension first)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # from the start of the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        from gguf import GGMLQuantizationType

        try:
            return GGMLQuantizationType(self.type_id).name
        except ValueError:
            return f"unknown type {self.type_id}"


@dataclass
class GGUFFile:
    """A parsed GGUF file: metadata {key: value} and tensors {name: GGUFTensor}."""

    path: Path
    version: int
    metadata: dict = field(default_factory=dict)
    tensors: dict[str, GGUFTensor] = field(default_factory=dict)

    def field(self, key: str, kind: type | tuple[type, ...] | None = None):
        """metadata[key], or a ValueError naming the file if it is missing or of another kind."""
        if key not in self.metadata:
            raise ValueError(f"{self.path}: the GGUF metadata has no {key!r}")
        value = self.metadata[key]
        if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                 and kind is not bool):
            raise ValueError(f"{self.path}: GGUF metadata {key!r} should be {kind}, "
                             f"got {type(value).__name__}")
        return value

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as float32 numpy, dequantized if stored quantized."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        if name not in self.tensors:
            raise ValueError(f"{self.path}: no tensor {name!r} in the file")
        t = self.tensors[name]
        if t.type_id not in SUPPORTED_TYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has type {t.type_name}, which "
                             f"course_lib does not read (supported: {supported_type_names()})")
        rows = self.raw(name)
        qtype = GGMLQuantizationType(t.type_id)
        if qtype == GGMLQuantizationType.F32:
            return rows.view(np.float32).reshape(t.shape)
        return np.asarray(dequantize(rows, qtype), dtype=np.float32).reshape(t.shape)

    def raw(self, name: str) -> np.ndarray:
        """The bytes of tensor `name` exactly as stored, uint8 with one row of the matrix per
        row (its blocks, for a quantized type), nothing decoded."""
        if name not in self.tensors:
            raise ValueError(f"{self.path}: no tensor {name!r} in the file")
        t = self.tensors[name]
        if self.path.stat().st_size < t.offset + t.n_bytes:
            raise ValueError(f"{self.path} is truncated: tensor {name!r} needs {t.n_bytes} bytes "
                             f"at offset {t.offset}")
        # Mapped, not read: the pages are the file's, gone from memory with the array (a read
        # into the heap would leave a 30 MB hole for every large tensor loaded).
        raw = np.memmap(self.path, dtype=np.uint8, mode="c", offset=t.offset, shape=(t.n_bytes,))
        return raw.reshape(*t.shape[:-1], -1)


def _supported() -> dict[int, str]:
    from gguf import GGMLQuantizationType as Q

    names = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K",
             "Q4_K", "Q5_K", "Q6_K", "Q8_K")
    return {Q[n].value: n for n in names if n in Q.__members__}


SUPPORTED_TYPES: dict[int, str] = _supported()


def supported_type_names() -> str:
    return ", ".join(SUPPORTED_TYPES.values())


class _Cursor:
    """Reads little-endian values from a bytes buffer, with a clear error past its end."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"{self.path} is truncated or corrupt: needed {n} bytes at offset "
                             f"{self.pos} of {len(self.data)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.scalar("<Q")))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path} is corrupt: a string is not UTF-8 ({e})") from None

    def value(self, type_id: int, depth: int = 0):
        if type_id in _SCALARS:
            return self.scalar(_SCALARS[type_id])
        if type_id == _STRING:
            return self.string()
        if type_id == _ARRAY:
            if depth > 2:
                raise ValueError(f"{self.path} is corrupt: arrays nested too deep")
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if item_type in _NUMPY:  # numbers: one numpy read, not a Python loop
                size = np.dtype(_NUMPY[item_type]).itemsize
                arr = np.frombuffer(self.take(count * size), dtype=_NUMPY[item_type])
                return arr.astype(bool).tolist() if item_type == 7 else arr.tolist()
            if count > len(self.data) - self.pos:  # every item takes at least one byte
                raise ValueError(f"{self.path} is corrupt: an array of {count} items does not fit")
            return [self.value(item_type, depth + 1) for _ in range(count)]
        raise ValueError(f"{self.path} is corrupt: unknown metadata value type {type_id}")


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse the header, metadata and tensor table of a GGUF file (the data is read on demand)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        # The header, metadata and table sit at the front; 64 MB covers them many times over.
        head = f.read(min(size, 64 * 2**20))
    cur = _Cursor(memoryview(head), path)
    if head[:4] != MAGIC:
        raise ValueError(f"{path} is not a GGUF file (it does not start with {MAGIC!r})")
    cur.take(4)
    version = cur.scalar("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3 are)")
    n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
    if n_tensors > size or n_kv > size:
        raise ValueError(f"{path} is corrupt: it claims {n_tensors} tensors, {n_kv} keys")
    out = GGUFFile(path, version)
    for _ in range(n_kv):
        key = cur.string()
        out.metadata[key] = cur.value(cur.scalar("<I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.scalar("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"{path} is corrupt: tensor {name!r} has {n_dims} dimensions")
        dims = [cur.scalar("<Q") for _ in range(n_dims)]
        infos.append((name, tuple(reversed(dims)), cur.scalar("<I"), cur.scalar("<Q")))
    alignment = out.metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1:
        raise ValueError(f"{path} is corrupt: general.alignment is {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment
    for name, shape, type_id, offset in infos:
        out.tensors[name] = GGUFTensor(name, shape, type_id, data_start + offset,
                                       _n_bytes(path, name, shape, type_id, size))
        end = data_start + offset + out.tensors[name].n_bytes
        if end > size:
            raise ValueError(f"{path} is truncated: tensor {name!r} ends at byte {end} but the "
                             f"file has {size}")
    return out


def _n_bytes(path: Path, name: str, shape: tuple[int, ...], type_id: int, file_size: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        raise ValueError(f"{path}: tensor {name!r} has unknown type {type_id}") from None
    n = math.prod(shape)  # Python integers: a numpy uint64 product wraps round to 0 past 2**64
    if shape[-1] % block:
        raise ValueError(f"{path} is corrupt: tensor {name!r} rows of {shape[-1]} do not split "
                         f"into blocks of {block}")
    n_bytes = n // block * type_size
    if n_bytes > file_size:
        raise ValueError(f"{path} is corrupt: tensor {name!r} has dimensions {shape} "
                         f"({n:,} values, {n_bytes:,} bytes), more than the whole file "
                         f"({file_size:,} bytes)")
    return n_bytes
