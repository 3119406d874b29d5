"""Small helpers (only :mod:`detect.errors` below them): atomic file writes, device selection."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO

from detect.errors import UsageError


def _read_umask() -> int:
    """The process umask, read once at import: reading it means setting it, and a umask of 0
    for that moment would leak into files other threads create (the tune heartbeat's SQLite)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically: ``write(f)`` fills a temporary file beside ``path``, which is
    fsynced and renamed over ``path``. A crash leaves the old file intact, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600 files; give the usual umask-based mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def select_device(spec: str = "auto"):
    """'auto' -> cuda if available else cpu; 'cpu'; 'cuda' or 'cuda:i'. A clear error when CUDA
    is asked for but absent (a :class:`~detect.errors.UsageError`)."""
    import torch

    if spec in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r} requested but CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(spec)
    except RuntimeError as e:  # "cuda:x", "gpu"
        raise UsageError(f"device {spec!r}: {e}; use auto, cpu, cuda or cuda:I") from None
