"""A restricted unpickler for the project's caches.

Unpickling runs code: a pickle names any importable callable (``os.system``,
``subprocess.Popen``, ``builtins.eval``...) and arguments to call it with, and ``pickle.load``
calls it. A cache file is data that travels (copied between machines, downloaded with a
dataset, left in a shared folder), so it is read with an unpickler that resolves only an
explicit allow-list of globals: the plain containers (dict, list, tuple, str, numbers, bytes,
None, bool) need no globals at all, and numpy arrays need the few reconstructors below.
Anything else is refused before it can be called.

A pickle also states sizes the C unpickler allocates before it reads: a bytes object of a
counted opcode's length, a memo table grown to a PUT's index, numpy's array placeholder. Read as
garbage (a damaged file, random bytes) or written to harm, each can ask for up to sys.maxsize
bytes. So the opcodes are walked first (:func:`check_pickle`: :mod:`pickletools` reads every
counted argument only from what is there) and the placeholders are checked when they are built.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from typing import IO, Any, Iterable, Union

# (module, name) pairs numpy arrays and dtypes need, for numpy 1.x ("numpy.core") and
# 2.x ("numpy._core") writers and pickle protocols 2-5. All build arrays from bytes; none
# calls user code.
NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    (mod, name)
    for core in ("numpy.core", "numpy._core")
    for mod, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # _codecs.encode: protocol-2 bytes


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing it names was called."""


# How bytes that are truncated or not a pickle fail inside the unpickler: besides UnpicklingError
# and EOFError, an opcode's argument read as garbage (IndexError, KeyError, ValueError, TypeError,
# AttributeError), and a length field read as garbage (MemoryError, or OverflowError when it
# exceeds sys.maxsize: a BINBYTES8 or FRAME opcode in random bytes).
PICKLE_DATA_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                      MemoryError, OverflowError, RecursionError)


_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


class _Bounded:
    """The reads :func:`pickletools.genops` makes of a seekable binary stream, each cut to the
    bytes left in it: a garbage length then comes back short (genops says so) instead of being
    allocated first, as a buffered file's ``read(n)`` would."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        start = f.tell()
        self.end = f.seek(0, io.SEEK_END)
        f.seek(start)

    def read(self, n: int) -> bytes:
        return self.f.read(max(0, min(n, self.end - self.f.tell())))

    def readline(self) -> bytes:  # the text opcodes' arguments
        return self.f.readline(max(0, self.end - self.f.tell()))

    def tell(self) -> int:
        return self.f.tell()


def check_pickle(source: Union[bytes, IO[bytes]]) -> None:
    """Walk the opcodes of one pickle (``source``: its bytes, or a seekable binary stream at its
    start, left there) without building anything, and raise ``pickle.UnpicklingError`` when a
    counted argument runs past the data, a memo index is larger than the opcodes read so far (a
    pickler numbers its memo from 0, one entry per PUT) or a FRAME is longer than the data left.
    What passes cannot make the unpickler allocate more than the data's size. A stream that
    cannot seek back is not walked."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    if not source.seekable():
        return
    start = source.tell()
    stream = _Bounded(source)
    try:
        for n, (op, arg, pos) in enumerate(pickletools.genops(stream)):
            if op.name in _PUTS and int(arg) > n:
                raise pickle.UnpicklingError(f"memo index {arg} at byte {pos}, after only {n} opcodes: not a pickle")
            if op.name == "FRAME" and int(arg) > stream.end - pos:
                raise pickle.UnpicklingError(f"a frame of {arg} bytes at byte {pos}, with {stream.end - pos} left: "
                                             "truncated or not a pickle")
    except ValueError as e:  # pickletools: an argument past the end, an unknown opcode, no STOP
        raise pickle.UnpicklingError(f"truncated or not a pickle: {e}") from None
    finally:
        source.seek(start)


PLACEHOLDER_BYTES = 1 << 16  # numpy pickles ``_reconstruct(ndarray, (0,), b'b')`` and then sets the real data


def _checked_reconstruct(reconstruct: Any) -> Any:
    """numpy's ``_reconstruct`` allocates the shape it is given before any data arrives; numpy
    itself always asks for an empty placeholder, so a large one (``(2**40,)``: a MemoryError,
    or a terabyte of address space) is refused before it is allocated."""

    def guarded(subtype: Any, shape: Any, dtype: Any) -> Any:
        try:
            import math

            import numpy as np

            size = math.prod(int(v) for v in (shape if isinstance(shape, tuple) else (shape,))) * np.dtype(dtype).itemsize
        except (TypeError, ValueError, OverflowError):
            size = 0  # let numpy reject what it cannot read
        if size > PLACEHOLDER_BYTES:
            raise pickle.UnpicklingError(f"refusing an array placeholder of shape {shape!r:.60} ({size:,} bytes)")
        return reconstruct(subtype, shape, dtype)

    return guarded


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only ``allowed`` (module, name)
    pairs, and which has no ``persistent_load`` (persistent ids are refused too)."""

    def __init__(self, file: IO[bytes], allowed: Iterable[tuple[str, str]], source: str = "<pickle>"):
        super().__init__(file)
        self._allowed = frozenset(allowed)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            found = super().find_class(module, name)
            return _checked_reconstruct(found) if name == "_reconstruct" else found
        raise UnsafePickleError(
            f"{self._source}: refusing to load {module}.{name}: this pickle wants to import a "
            "global that is not on the allow-list (pickle can run arbitrary code). If you did "
            "not write this file, delete it; if it is an old or foreign cache, rebuild it."
        )


def safe_load_pickle(
    source: Union[str, os.PathLike, bytes, IO[bytes]],
    allowed: Iterable[tuple[str, str]] = NUMPY_GLOBALS,
    check: bool = True,
) -> Any:
    """Load a pickle that may only contain plain Python containers and the globals in ``allowed``.

    Args:
        source: a path, the pickle's bytes, or a binary file object.
        allowed: (module, name) pairs that may be resolved; default: numpy arrays only. A cache
            with its own types passes ``NUMPY_GLOBALS | {("mymodule", "MyType")}``.
        check: walk the opcodes first (:func:`check_pickle`). Off only for bytes whose digest
            the caller has just matched (a cache's payload: damage cannot reach the unpickler,
            and the walk would double a 20,000-record cache's load time).

    Raises:
        UnsafePickleError: the pickle names anything else (nothing was executed).
        PICKLE_DATA_ERRORS (pickle.UnpicklingError, EOFError, OverflowError ...): the data is
            truncated or not a pickle.
        OSError: the file cannot be read.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return safe_load_pickle(f, allowed, check)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    if check:
        check_pickle(source)
    return RestrictedUnpickler(source, allowed, str(getattr(source, "name", "<pickle>"))).load()


def load_pickle_or_raise(path, allowed, error: type[Exception], hint: str = "") -> Any:
    """:func:`safe_load_pickle`, with every way a file can be unsafe, truncated or not a pickle
    turned into ``error`` (its message names the file; ``hint`` is appended)."""
    name = getattr(path, "name", path)
    try:
        return safe_load_pickle(path, allowed)
    except UnsafePickleError as e:
        raise error(str(e)) from None
    except PICKLE_DATA_ERRORS as e:
        raise error(f"{name}: truncated or not a pickle ({type(e).__name__}: {e}){hint}") from None


def load_versioned_pickle(
    path: Union[str, os.PathLike, IO[bytes]],
    fmt: str,
    schema: int,
    *,
    what: str,
    rebuild: str,
    error: type[Exception] = ValueError,
    allowed: Iterable[tuple[str, str]] = NUMPY_GLOBALS,
) -> dict:
    """Load a cache saved as a dict tagged ``{"format": fmt, "schema": schema, ...}``.

    Args:
        path: a path, or a binary file positioned at the pickle (left just past it).
        what: what the file is, for messages ("annotation cache").
        rebuild: the command that rebuilds it, for messages ("detect xml2pkl").
        error: the exception type raised for a truncated, foreign, unsafe or other-schema
            file (its message names the file and says to rebuild it; nothing half-read).

    Raises:
        error: as above. OSError: the file cannot be read.
    """
    name = getattr(path, "name", path)
    data = load_pickle_or_raise(path, allowed, error, f"; rebuild it with `{rebuild}`")
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"{name}: not a retail-detect {what} (foreign pickle); rebuild it with `{rebuild}`")
    if data.get("schema") != schema:
        raise error(f"{name}: {what} schema {data.get('schema')!r}, this version reads {schema}; rebuild it with `{rebuild}`")
    return data
