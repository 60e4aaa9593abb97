"""Writing files all at once, so that a crash, a kill or a full disk never leaves half a file."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, so stale temporaries are not collected there
    fcntl = None


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a unique temporary file beside path, fsync it, rename it over path.

    A failure leaves path as it was and removes the temporary file. A kill (SIGKILL, a power
    cut) cannot run any cleanup, so each temporary file is locked (flock) while it is being
    written: the next replace_atomically of the same path removes the temporaries of path
    whose writer is gone (their lock is free), and leaves those still being written alone.
    write must write into tmp itself (not replace it by another file). The new file gets the
    mode a plainly created file would have, not mkstemp's private 0600.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    fd, tmp = _locked_temporary(path)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # releases the lock
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8) to path all at once (replace_atomically)."""
    replace_atomically(path, lambda tmp: tmp.write_text(text, "utf-8"))


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str]) -> None:
    """Write tensors as one safetensors file, all at once (replace_atomically).

    Serialised in memory and written into replace_atomically's own locked temporary: safetensors'
    save_file writes through a temporary file of its own (.tmpXXXXXX), which a kill leaves behind
    where no later save looks for it.
    """
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def temporary_pattern(path: str | os.PathLike) -> str:
    """The glob (relative to path's folder) that replace_atomically's temporaries of path match."""
    return f".{glob.escape(Path(path).name)}.*.tmp"


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of path left beside it; return them.

    A temporary whose lock another process (or another open file) holds is being written
    and is left alone. Where flock does not exist (Windows), nothing is removed.
    """
    if fcntl is None:
        return []
    path = Path(path)
    removed = []
    try:
        candidates = sorted(path.parent.glob(temporary_pattern(path)))
    except OSError:
        return []
    for tmp in candidates:
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:  # gone already, or not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: a live writer is still at it
            os.close(fd)
            continue
        try:
            if _same_file(fd, tmp):  # not replaced by a new writer's file meanwhile
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _locked_temporary(path: Path) -> tuple[int, Path]:
    """A new temporary file beside path, and an open descriptor holding its lock."""
    while True:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        if fcntl is None:
            return fd, Path(name)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Between mkstemp and flock another process's cleanup may have taken the unlocked file
        # for stale and removed it: then this name is gone, and a new one is made.
        if _same_file(fd, Path(name)):
            return fd, Path(name)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _umask() -> int:
    # Read without changing it where possible: os.umask() sets it, racing other threads.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
