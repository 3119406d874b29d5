"""The annotation cache file at the level of its header: the format constants, reading and
checking the header and payload bytes, writing a cache, and the problems file beside it.

Standard library only: a re-run of ``detect xml2pkl`` on unchanged inputs compares the
header's fingerprint and checks the payload bytes without importing numpy (it never unpickles
the payload). The payload's layout and :class:`~detect.data.cache.cache_file.Cache` are in
:mod:`detect.data.cache.cache_file`, which re-exports everything here.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
from pathlib import Path
from typing import Any

from detect.data.cache.safe_pickle import load_versioned_pickle
from detect.utils import atomic_write

try:  # importing hashlib loads OpenSSL's bindings (~4 ms of xml2pkl's re-run); BLAKE2 is built in
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter without CPython's built-in module
    from hashlib import blake2b

FORMAT = "retail-detect/voc-cache"
SCHEMA = 1


class CacheError(ValueError):
    """A file that is not a usable cache: truncated, foreign, or of another schema version."""


def problems_path(cache_path: str | os.PathLike) -> Path:
    """The problems file written beside a cache: ``g.pkl`` -> ``g.problems.txt``."""
    p = Path(cache_path)
    return p.with_name(p.stem + ".problems.txt") if p.suffix else p.with_name(p.name + ".problems.txt")


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ESCAPE_TABLE = str.maketrans(_ESCAPES)
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}
_UNESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a byte of a file name that is not UTF-8 (os.fsdecode's surrogateescape)


def _bytes_escaped(text: str) -> str:
    r"""``text`` with each undecodable file-name byte written as ``\xNN`` (UTF-8 cannot hold them:
    a non-UTF-8 file name crashed the problems file's digest)."""
    return _SURROGATE.sub(_surrogate, text) if _SURROGATE.search(text) else text


def _surrogate(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"  # \u: a lone one from JSON text


def escape_field(text: str) -> str:
    r"""A problems-file field on one line: backslash, tab, newline and CR written as ``\\``,
    ``\t``, ``\n``, ``\r`` (a file name may hold any of them and split the row), a byte that is
    not UTF-8 as ``\xNN``."""
    return _bytes_escaped(text.translate(_ESCAPE_TABLE))


def _unescape(m: re.Match) -> str:
    code = m.group(1)
    if len(code) > 1:
        return chr(int(code[1:], 16) + (0xDC00 if code[0] == "x" else 0))
    return _UNESCAPES.get(code, m.group(0))


def unescape_field(text: str) -> str:
    """The inverse of :func:`escape_field`."""
    return _UNESCAPE.sub(_unescape, text) if "\\" in text else text


def problems_text(problems: list[tuple[str, str, str]]) -> str:
    r"""The problems file: a ``file<TAB>kind<TAB>message`` header, then one row per problem; the
    file name escaped (:func:`escape_field`), the message on one line (undecodable bytes as
    ``\xNN``)."""
    rows = [("file", "kind", "message"), *problems]
    return "".join(f"{escape_field(f)}\t{k}\t{_bytes_escaped(' '.join(str(m).split()))}\n" for f, k, m in rows)


def problems_digest(text: str) -> str:
    """The header's ``problems_blake2b``: what the problems file must hash to."""
    return blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """Header (validated) and payload bytes (length and digest checked)."""
    with open(path, "rb") as f:
        header = load_versioned_pickle(f, FORMAT, SCHEMA, what="annotation cache", rebuild="detect xml2pkl", error=CacheError)
        payload = f.read()
    try:
        size, digest = int(header["payload_bytes"]), str(header["payload_blake2b"])
    except (KeyError, TypeError, ValueError):
        raise CacheError(f"{path}: cache header lacks the payload size and digest; rebuild it with `detect xml2pkl`") from None
    if len(payload) != size:
        raise CacheError(f"{path}: truncated cache ({len(payload)} of {size} payload bytes); rebuild it with `detect xml2pkl`")
    if blake2b(payload, digest_size=16).hexdigest() != digest:
        raise CacheError(f"{path}: corrupt cache (payload digest differs); rebuild it with `detect xml2pkl`")
    return header, payload


def read_cache_parts(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """The header of a complete, intact cache and its payload bytes, checked but not unpickled
    (:func:`decode_payload` does that), in one read. Raises :class:`CacheError` (or OSError)
    like :func:`read_cache_data`."""
    return _read(path)


class CacheReader:
    """Reads and checks the cache at ``path`` (:func:`read_cache_parts`) in a background thread
    (``detect xml2pkl`` starts one before its walk): reading and hashing the payload (~20 ms for
    20,000 files) release the GIL, so a re-run overlaps them with the walk's ``stat`` calls.
    :meth:`parts` waits and returns the header and payload, or raises what the read raised."""

    def __init__(self, path: Path) -> None:
        self._result: Any = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="xml2pkl-cache-reader", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._result = read_cache_parts(path)
        except BaseException as e:  # handed to the caller by parts()
            self._result = e

    def parts(self) -> tuple[dict[str, Any], bytes]:
        self._thread.join()
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result


def _triples(a: Any, name: str, first: type, n_files: int = -1) -> None:
    """A problem list: (file, kind, message) tuples, file a str or an index below ``n_files``."""
    if not isinstance(a, list):
        raise ValueError(f"{name} must be a list")
    for p in a:
        if not (isinstance(p, tuple) and len(p) == 3 and isinstance(p[0], first) and isinstance(p[1], str) and isinstance(p[2], str)):
            raise ValueError(f"{name} must hold (file, kind, message) triples, got {p!r:.80}")
        if n_files >= 0 and not 0 <= p[0] < n_files:
            raise ValueError(f"{name} names file {p[0]} of {n_files}")


def valid_summary(summary: Any) -> bool:
    """Whether a header's ``summary`` has the shape :func:`detect.data.cache.build.summarize` prints."""
    try:
        _triples(summary["first"], "summary.first", str)
        return (all(isinstance(summary[k], int) for k in ("files", "records", "boxes", "classes", "problems"))
                and all(isinstance(k, str) and isinstance(v, int) for k, v in summary["kinds"].items()))
    except (TypeError, KeyError, AttributeError, ValueError):
        return False


def write_cache_data(path: str | os.PathLike, data: dict[str, Any], **header: Any) -> None:
    """Write a cache atomically (temporary file, fsync, rename): a header holding ``header``
    (``fingerprint``, ``summary``) and the payload's size and digest, then the payload."""
    payload = pickle.dumps(data, protocol=5)
    head = {"format": FORMAT, "schema": SCHEMA, **header, "payload_bytes": len(payload),
            "payload_blake2b": blake2b(payload, digest_size=16).hexdigest()}

    def write(f) -> None:
        pickle.dump(head, f, protocol=5)
        f.write(payload)

    atomic_write(path, write)
