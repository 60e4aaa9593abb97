"""Checks for arguments a learner passes in: one place that turns bad input into a clear error.

Every public function of course_lib validates what it is given with these helpers, so a wrong
argument gets a ValueError or TypeError naming the parameter and what is allowed, before
anything deep inside torch can fail with a message about strides or dtypes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np
import torch

_INT_TYPES = (int, numbers.Integral)


def _is_int_like(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.dtype.is_floating_point and value.dtype != torch.bool
    return isinstance(value, _INT_TYPES)


def check_int(
    name: str, value, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """value as a Python int, if it is an integer (int, numpy, 0-d torch) in [minimum, maximum]."""
    if not _is_int_like(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.60}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_range_text(minimum, maximum)}, got {value}")
    return value


def check_float(
    name: str,
    value,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """value as a finite Python float in the given range (ints and numpy/torch scalars accepted)."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real)
        or (isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool)
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r:.60}")
    try:
        value = float(value)
    except OverflowError as e:
        raise ValueError(f"{name} is too large to be a float: {value!r:.60}") from e
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    too_low = minimum is not None and (value < minimum or (not min_inclusive and value == minimum))
    too_high = maximum is not None and (value > maximum or (not max_inclusive and value == maximum))
    if too_low or too_high:
        rng = _range_text(minimum, maximum, min_inclusive, max_inclusive)
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def check_choice(name: str, value, choices: Iterable):
    """value itself, if it is one of choices."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable or uncomparable
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {choices}, got {value!r:.60}")
    return value


def check_str(name: str, value, *, allow_empty: bool = False) -> str:
    """value, if it is a str (and not empty, unless allowed)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{name} is empty: give at least one character")
    return value


def check_seed(name: str, value) -> int | None:
    """None, or an int that torch.Generator.manual_seed accepts ([0, 2**64))."""
    if value is None:
        return None
    return check_int(name, value, minimum=0, maximum=2**64 - 1)


def check_token_ids(name: str, ids, vocab_size: int | None = None) -> torch.Tensor:
    """Token ids as a (batch, time) int64 tensor: from a tensor, numpy array, list or nested list.

    Floats, booleans, ragged lists, empty input and ids outside [0, vocab_size) get a clear
    error; a 1-D input becomes a batch of one.
    """
    if isinstance(ids, torch.Tensor):
        tensor = ids
    else:
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"{name} must be token ids (ints), got {type(ids).__name__}: "
                            "encode text with the tokenizer first")
        try:
            tensor = torch.as_tensor(ids)
        except (ValueError, TypeError, RuntimeError, OverflowError) as e:
            raise TypeError(
                f"{name} must be a list of ints, a nested list of equal-length rows, a numpy "
                f"array or a tensor of token ids; could not read it as one ({e})"
            ) from None
    if tensor.numel() == 0 and tensor.dim() <= 2:  # torch reads [] as float: say empty instead
        raise ValueError(f"{name} is empty: give at least one token id (an empty prompt?)")
    if tensor.dtype == torch.bool or tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(f"{name} must hold integer token ids, got dtype {tensor.dtype}")
    if tensor.dim() == 1:
        tensor = tensor[None, :]
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (time,) or (batch, time), "
                         f"got {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty: give at least one token id (an empty prompt?)")
    tensor = tensor.long()
    if vocab_size is not None:
        lo, hi = int(tensor.min()), int(tensor.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} in {name} is outside the vocabulary "
                             f"[0, {vocab_size})")
    return tensor


def available_devices() -> list[str]:
    """The device names this machine can run on: 'cpu', then 'cuda:N' for each GPU, 'mps'."""
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())
                       if torch.cuda.is_available()]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(name: str, device) -> torch.device:
    """A torch.device that exists on this machine (a clear error for 'cuda' without a GPU)."""
    here = f"this machine has {', '.join(repr(d) for d in available_devices())}"
    if isinstance(device, str):
        device = device.strip().lower()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{name} {device!r:.60} is not a device name: {here}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} is {str(dev)!r} but this machine has no CUDA GPU "
                             f"(or torch was built without CUDA): {here}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} is {str(dev)!r} but {here}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name} is {str(dev)!r} but Apple's MPS is not available: {here}")
    elif dev.type != "cpu":
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'mps', got {str(dev)!r}: {here}")
    return dev


def _range_text(minimum, maximum, min_inclusive: bool = True, max_inclusive: bool = True) -> str:
    if minimum is not None and maximum is not None:
        lo = "[" if min_inclusive else "("
        hi = "]" if max_inclusive else ")"
        return f"in {lo}{minimum}, {maximum}{hi}"
    if minimum is not None:
        return f">= {minimum}" if min_inclusive else f"> {minimum}"
    return f"<= {maximum}" if max_inclusive else f"< {maximum}"


def check_bool(name: str, value, *, allow_none: bool = False) -> bool | None:
    """value as a Python bool, if it is one (or a numpy bool); None too when allow_none."""
    if value is None and allow_none:
        return None
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if isinstance(value, bool) or numpy_bool:
        return bool(value)
    allowed = "True, False or None" if allow_none else "True or False"
    raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r:.60}")


def check_module(name: str, value) -> torch.nn.Module:
    """value, if it is a torch nn.Module (a model or a layer)."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name} must be a torch nn.Module (a model), got "
                        f"{type(value).__name__} {value!r:.60}")
    return value


def check_model(name: str, value) -> torch.nn.Module:
    """value, if it is a course_lib GPT (an nn.Module whose config has a vocab_size)."""
    if not isinstance(value, torch.nn.Module) or not hasattr(getattr(value, "config", None),
                                                             "vocab_size"):
        raise TypeError(f"{name} must be a course_lib GPT (load_pretrained()[0], GPT(config) or "
                        f"GPT.load(path)), got {type(value).__name__} {value!r:.60}")
    return value


def check_one_sequence(name: str, ids, model: torch.nn.Module, min_tokens: int = 1
                       ) -> torch.Tensor:
    """ids as one (1, T) int64 row of the model's token ids, where it was (check_token_ids).
    A batch of several rows is refused: code that reads one text would run them together."""
    model = check_model("model", model)
    idx = check_token_ids(name, ids, model.config.vocab_size)
    if idx.shape[0] != 1:
        raise ValueError(f"{name} must be one sequence of token ids, got a batch of "
                         f"{idx.shape[0]}")
    if idx.shape[1] < min_tokens:
        raise ValueError(f"{name} must hold at least {min_tokens} tokens, got {idx.shape[1]}")
    return idx


def check_tensor(name: str, value, *, floating: bool = False, min_dims: int | None = None,
                 max_dims: int | None = None) -> torch.Tensor:
    """value, if it is a torch tensor (of a floating-point dtype if asked) with a number of
    dimensions in [min_dims, max_dims]."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(value).__name__} "
                        f"{value!r:.60}; wrap numbers with torch.tensor(...)")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {value.dtype}")
    if (min_dims is not None and value.dim() < min_dims) or (
            max_dims is not None and value.dim() > max_dims):
        raise ValueError(f"{name} must have {_range_text(min_dims, max_dims)} dimensions, got "
                         f"shape {tuple(value.shape)}")
    return value


def check_qkv(q, k, v, mask=None) -> None:
    """Queries (..., T, d), keys (..., T_k, d) and values (..., T_k, d_v) that attention can
    take: float tensors of one dtype, batch dimensions that broadcast, at least one key; a mask
    (bool) that broadcasts to the scores (..., T, T_k)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, floating=True, min_dims=2)
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    want = "want (..., T, d), (..., T_k, d), (..., T_k, d_v)"
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share their last dim (d), got {shapes}; {want}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length (T_k), got {shapes}; {want}")
    if k.shape[-2] == 0:
        raise ValueError(f"k and v hold no keys (T_k = 0): every query would attend to nothing, "
                         f"got {shapes}")
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of q, k and v (all but the last two) must be "
                         f"equal or broadcast, got {shapes}") from None
    if mask is not None:
        check_tensor("mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = attend), got {mask.dtype}")
        scores = (*batch, q.shape[-2], k.shape[-2])
        try:
            if torch.broadcast_shapes(mask.shape, scores) != scores:
                raise RuntimeError
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit the scores "
                             f"{scores} (..., queries, keys)") from None


def check_bytes(name: str, raw) -> np.ndarray:
    """raw as a uint8 array, if it holds integers in [0, 255] (bytes, a list, any int array)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(raw), dtype=np.uint8)
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().cpu().numpy()
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} must be bytes or an array of byte values, could not read it "
                        f"({e})") from None
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold byte values (integers in [0, 255]), got dtype "
                        f"{arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        bad = arr.min() if arr.min() < 0 else arr.max()
        raise ValueError(f"{name} must hold byte values in [0, 255], got {bad}")
    return arr.astype(np.uint8)


def check_list(name: str, value, item_type: type | tuple[type, ...] | None = None, *,
               item: str = "item", hint: str = "") -> list:
    """value as a list, if it is a non-empty list or tuple (of item_type, when given). item
    names one element in the messages ("Instruction"); hint follows it ("(see make_...)")."""
    hint = f" {hint}" if hint else ""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of {item}s{hint}, got {type(value).__name__} "
                        f"{value!r:.60}")
    if not value:
        raise ValueError(f"{name} is empty: give at least one {item}")
    if item_type is not None:
        for i, v in enumerate(value):
            if not isinstance(v, item_type):
                raise TypeError(f"{name}[{i}] must be one {item}{hint}, got {type(v).__name__} "
                                f"{v!r:.60}")
    return list(value)
