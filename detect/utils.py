"""Small helpers (only :mod:`detect.errors` below them): atomic file writes, output-path checks,
regular-file-only reads, device selection."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, IO, Iterable, Iterator, Optional

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
    import tempfile  # here, not at the top: xml2pkl's re-run imports this module and writes nothing (~8 ms)

    path = Path(path)
    check_output_path(path)  # the last line of defence: never replace a device, a FIFO or a folder
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


class OutputPathError(UsageError):
    """An output path that must not be written (a folder, a device, a FIFO, one of the inputs);
    ``input`` is the input it would replace, else None. A usage error: ``detect`` exits 2 with it."""

    def __init__(self, message: str, input: Optional[str] = None) -> None:
        super().__init__(message)
        self.input = input


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, for messages: "a regular file", "a FIFO (named pipe)"..."""
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def check_output_path(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *, what: str = "output") -> Path:
    """The absolute ``path`` if a command may write it: a new path or an existing regular file
    that is none of ``inputs``. :func:`atomic_write` replaces whatever the name points at, so a
    device node (``/dev/null`` when run as root), a FIFO (reading the old output would block) or
    an input (``xml2pkl ANN -o ANN/a.xml``) must be refused before anything is read or written.

    A symlink is judged by its target (a link to ``/dev/null`` is refused like it). An input is
    the same file when it stats the same (another spelling, a symlinked folder, a
    case-insensitive file system); only inputs with the output's name, case aside, are stat'ed,
    so passing every file of a large dataset is cheap.

    Raises:
        OutputPathError: naming the path and what it is, or which input it would replace.
    """
    p = Path(os.path.abspath(path))
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):  # a new path (or a dangling link): nothing to replace
        return p
    except OSError as e:
        raise OutputPathError(f"{what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{what} {path} is a folder; give a file name inside it")
    if not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{what} {path} is {file_kind(st.st_mode)}, not a regular file; give a new file name "
                              "(only a regular file is ever replaced)")
    name = p.name.lower()
    n = len(name)
    if name.isascii():  # one C-level search over all the names first: a Python loop over 20,000 inputs took 6 ms
        inputs = list(inputs)
        try:
            joined = "\0".join(inputs)
        except TypeError:  # Path objects among them
            joined = "\0".join(map(os.fspath, inputs))
        joined = "\0" + joined.lower() + "\0"  # lower() is context-free for anything that lowers to ASCII
        if not any(f"{sep}{name}\0" in joined for sep in {"\0", "/", os.sep}):
            return p
    for inp in inputs:
        inp_s = os.fspath(inp)
        if inp_s[-n:].lower() != name or os.path.basename(inp_s).lower() != name:  # the slice: cheap for 20,000 inputs
            continue
        try:
            same = os.path.samestat(st, os.stat(inp))
        except OSError:
            continue
        if same:
            raise OutputPathError(f"{what} {path} is one of the inputs ({os.fspath(inp)}); writing it would replace "
                                  "that input: choose another file name", os.fspath(inp))
    return p


OUTPUT_RULE = ("an output is a new path or a regular file that is none of the command's inputs; never a folder, a "
               "device or a FIFO; written to a temporary file beside it and renamed")


def check_output_folder(path: str | os.PathLike, names: Iterable[str] = (), inputs: Iterable[str | os.PathLike] = (),
                        *, what: str = "output folder") -> Path:
    """The absolute ``path`` if a command may write the files ``names`` into it: a new path or
    an existing folder (not a file, a device or a FIFO: ``train --out FILE`` ended in a
    traceback), and each ``path/name`` passes :func:`check_output_path` against ``inputs``
    (``train --data RUN/config.yaml --out RUN`` replaced the dataset YAML with the run's
    config). The same rule as for files (:data:`OUTPUT_RULE`); raises :class:`OutputPathError`."""
    p = Path(os.path.abspath(path))
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as e:
        raise OutputPathError(f"{what} {path}: {e.strerror or e}") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{what} {path} is {file_kind(st.st_mode)}, not a folder; give a folder name")
    if st is None:  # a parent that is a file: "a/file/run"
        parent = p.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise OutputPathError(f"{what} {path}: {parent} is not a folder")
    inputs = [os.fspath(i) for i in inputs]
    for name in names:
        check_output_path(p / name, inputs, what=what.replace("folder", "file") if "folder" in what else what)
    return p


def next_run_dir(path: str | Path) -> Path:
    """``path`` when it is free (missing or an empty folder), else the first free ``path2``,
    ``path3``, ... (the ultralytics convention for runs/train and runs/predict)."""
    path = Path(path)

    def free(p: Path) -> bool:
        return not p.exists() or (p.is_dir() and not any(p.iterdir()))

    n = 2
    candidate = path
    while not free(candidate):
        candidate = path.with_name(f"{path.name}{n}")
        n += 1
    return candidate


class NotRegularFileError(OSError):
    """A path that names a FIFO, device, socket or folder where a regular file was expected;
    ``kind`` says which ("a FIFO (named pipe)")."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path, self.kind = path, kind


def open_regular(path: str | os.PathLike) -> int:
    """A read-only descriptor of ``path`` if it is a regular file (symlinks followed), else
    :class:`NotRegularFileError`, raised before a device is opened (opening one can have
    effects) and without blocking on a FIFO (``O_NONBLOCK``; the type is checked again on the
    open descriptor)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(os.fspath(path), file_kind(mode))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped since the stat
        os.close(fd)
        raise NotRegularFileError(os.fspath(path), file_kind(mode))
    return fd


def is_within(path: str, root: str) -> bool:
    """Whether the real path of ``path`` is ``root`` or lies under it (``root``: a real path)."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


_CAPTURE_LOCK = threading.Lock()
_CAPTURE_FILE: dict[int, IO[bytes]] = {}  # per process: a forked child must not share the parent's offset


@contextmanager
def stderr_fd_captured() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 while the block runs: libjpeg and
    libpng print their warnings there ("Corrupt JPEG data: ...") naming no file, so the caller
    can say which file they are about. The list yielded holds the text once the block is over.
    Process-wide (a descriptor is): another thread's stderr output in that moment is caught
    too, so callers print what they caught rather than drop it."""
    caught: list[str] = []
    with _CAPTURE_LOCK:
        tmp = _CAPTURE_FILE.get(os.getpid())
        if tmp is None:
            import tempfile

            tmp = _CAPTURE_FILE[os.getpid()] = tempfile.TemporaryFile()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if os.fstat(tmp.fileno()).st_size:
                tmp.seek(0)
                caught.append(tmp.read().decode("utf-8", "replace"))
                tmp.seek(0)
                tmp.truncate()


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the process ``parent`` (the pid that made the
    pool) dies, so a ``kill -9`` of a command leaves no busy orphans behind.

    On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` kills the worker when its parent exits (with
    a forkserver the parent is the server, which exits when the pool's owner is gone). As a
    fallback (other systems; the signal follows the thread that forked us), a daemon thread
    checks every second that the parent is unchanged and ``parent`` is alive."""
    first_parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if not _alive(parent) or os.getppid() != first_parent:  # died before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != first_parent or not _alive(parent):
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        pass
    return True


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
