"""Files from strangers, read within limits: the one reader for every label, list, JSON and YAML
file a command reads (VOC XML too: :mod:`detect.data.formats.xml_file` reads its bytes here).

- :func:`read_limited`: the bytes of a **regular file** only (a FIFO blocked a read forever,
  ``/dev/zero`` read until MemoryError; a device is never opened, a FIFO only with
  ``O_NONBLOCK``), of at most ``max_bytes``, and, when ``root`` is given, a symlink only when it
  leads inside ``root`` (a YOLO label linked to ``/etc/passwd`` was echoed into problems.txt).
  A defect is a ``(kind, message)`` problem, so the rest of the dataset goes on;
  :func:`read_file` raises :class:`FileReadError` (a usage error) for files a command cannot do
  without (a ``data.yaml``, a dataset YAML, a ``--config``).
- :func:`parse_yaml`: ``yaml.safe_load`` (libyaml when present) after one pass over the event
  stream that refuses nesting deeper than :data:`MAX_DEPTH` (the composer recursed into a
  RecursionError, or a C stack overflow) and more than :data:`MAX_YAML_NODES` nodes once
  aliases are expanded (583 bytes of aliases in ``names`` were a billion strings).
  :func:`load_yaml` reads and parses a file once per content (``detect_layout`` and the reader
  asked for the same ``data.yaml`` three times).
- :func:`parse_json`: ``json.loads`` where deep nesting, 400-digit integers and ``NaN`` /
  ``Infinity`` give a :class:`ValueError` naming the problem or plain floats, never a
  RecursionError or OverflowError later.

Standard library plus PyYAML; the base layer (``detect.config`` reads ``--config`` here).
"""

from __future__ import annotations

import json
import math
import os
import stat
from typing import Any, Optional

from detect.errors import UsageError
from detect.utils import NotRegularFileError, is_within, open_regular

MAX_TEXT_BYTES = 16 << 20  # a label file, a split list, a class list (real ones: KB)
MAX_JSON_BYTES = 1 << 30  # a COCO JSON (COCO 2017 train: 450 MB)
MAX_YAML_BYTES = 4 << 20  # a data.yaml, dataset YAML or config (40,000 class names: ~0.6 MB)
MAX_DEPTH = 64  # nesting of YAML collections (real files: 3)
MAX_JSON_DEPTH = 200  # nesting of JSON values (COCO: 5; segmentation polygons: 6)
MAX_YAML_NODES = 2_000_000  # nodes after alias expansion
MAX_INT_DIGITS = 40  # longer JSON integers are read as floats (inf when huge), not as bignums


class FileReadError(UsageError):
    """A file a command needs that cannot be read within the limits (exit code 2)."""


_FAST_OPEN = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)


def _read_bytes(fd: int, limit: int, block: int = 1 << 16) -> bytes:
    """At most ``limit`` + 1 bytes of an open file (one more than allowed tells "too large");
    raw ``os.read`` is ~3x cheaper than ``open().read()`` per file."""
    data = os.read(fd, min(block, limit + 1))
    if len(data) < block:
        return data
    parts, n = [data], len(data)
    while n <= limit and (chunk := os.read(fd, min(block, limit + 1 - n))):
        parts.append(chunk)
        n += len(chunk)
    return b"".join(parts)


def read_limited(path: str, root: Optional[str], max_bytes: int, problems: list[tuple[str, str]],
                 stat_out: Optional[list[int]] = None, *, what: str = "file", hint: str = "",
                 missing_ok: bool = False, root_what: str = "dataset folder") -> Optional[bytes]:
    """The bytes of ``path``, or None with a ``(kind, message)`` problem: ``read_error``
    (missing, unreadable), ``special_file`` (a FIFO, device, socket or folder; never opened
    for reading in blocking mode), ``link_outside`` (a symlink leading out of ``root``, a real
    path; None: links anywhere), ``too_large`` (over ``max_bytes``; ``hint`` says how to raise it).
    ``missing_ok``: a missing file is ``b""`` (a YOLO image without a label file is a negative).

    The usual file (``lstat``: a regular file, not a link) costs ``lstat``, ``open``
    (``O_NOFOLLOW``: a link swapped in meanwhile is not followed), one ``fstat``, ``read`` and
    ``close``; anything else takes the careful path that says what is wrong. ``stat_out`` (a
    list ``[-1, -1]``) gets ``[size, mtime_ns]`` as ``os.stat`` gives them."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return _read_checked(path, root, max_bytes, problems, stat_out, what, hint, missing_ok, root_what)
        fd = os.open(path, _FAST_OPEN)
    except (OSError, ValueError):  # missing, unreadable, swapped for a link...: the careful path names it
        return _read_checked(path, root, max_bytes, problems, stat_out, what, hint, missing_ok, root_what)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since the lstat
            os.close(fd)
            fd = -1
            return _read_checked(path, root, max_bytes, problems, stat_out, what, hint, missing_ok, root_what)
        if stat_out is not None:
            stat_out[0], stat_out[1] = st.st_size, st.st_mtime_ns
        size = st.st_size
        data = _read_bytes(fd, max_bytes) if size <= max_bytes else b""
    except OSError as e:
        problems.append(("read_error", f"cannot read the {what} ({e.strerror or e})"))
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    return _check_size(size, data, max_bytes, problems, what, hint)


def _read_checked(path: str, root: Optional[str], max_bytes: int, problems: list[tuple[str, str]],
                  stat_out: Optional[list[int]], what: str, hint: str, missing_ok: bool, root_what: str) -> Optional[bytes]:
    """:func:`read_limited` for a symlink, a special file or a failing ``lstat``/``open``."""
    if stat_out is not None:
        try:
            st = os.stat(path)  # what the walk's stat gives: a link's target, a FIFO's own
            stat_out[0], stat_out[1] = st.st_size, st.st_mtime_ns
        except (OSError, ValueError):
            pass
    try:
        if root and os.path.islink(path) and not is_within(path, root):
            problems.append(("link_outside", f"symlink to {os.path.realpath(path)}, outside the {root_what} {root}; not read"))
            return None
        fd = open_regular(path)
    except NotRegularFileError as e:
        problems.append(("special_file", f"{e.kind}, not a regular file; not read"))
        return None
    except FileNotFoundError as e:
        if missing_ok and not os.path.islink(path):
            return b""
        problems.append(("read_error", f"cannot read the {what} ({e.strerror or e})"))
        return None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        problems.append(("read_error", f"cannot read the {what} ({getattr(e, 'strerror', None) or e})"))
        return None
    try:
        size = os.fstat(fd).st_size
        data = _read_bytes(fd, max_bytes) if size <= max_bytes else b""
    except OSError as e:
        problems.append(("read_error", f"cannot read the {what} ({e.strerror or e})"))
        return None
    finally:
        os.close(fd)
    return _check_size(size, data, max_bytes, problems, what, hint)


def _check_size(size: int, data: bytes, max_bytes: int, problems: list[tuple[str, str]], what: str,
                hint: str) -> Optional[bytes]:
    if size > max_bytes or len(data) > max_bytes:  # also a file that grew while read
        problems.append(("too_large", f"{max(size, len(data)):,} bytes, over the limit of {max_bytes:,} bytes for one "
                                      f"{what}; not read{f' ({hint})' if hint else ''}"))
        return None
    return data


def read_file(path: str | os.PathLike, what: str, max_bytes: int = MAX_TEXT_BYTES, root: Optional[str] = None) -> bytes:
    """:func:`read_limited` for a file the command needs: its bytes, or :class:`FileReadError`
    ("data.yaml x/data.yaml: a FIFO (named pipe), not a regular file; not read")."""
    problems: list[tuple[str, str]] = []
    data = read_limited(os.fspath(path), root, max_bytes, problems, what=what)
    if data is None:
        raise FileReadError(f"{what} {os.fspath(path)}: {problems[0][1]}")
    return data


def read_text(path: str | os.PathLike, what: str, max_bytes: int = MAX_TEXT_BYTES, root: Optional[str] = None) -> str:
    """:func:`read_file` decoded as UTF-8 (a byte-order mark dropped); raises :class:`FileReadError`."""
    data = read_file(path, what, max_bytes, root)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FileReadError(f"{what} {os.fspath(path)}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None


def path_problem(value: str) -> Optional[str]:
    """What makes a path written in a file unusable before any system call sees it (a NUL raised
    ValueError, a 300-character name OSError "File name too long" from ``exists()``), or None."""
    if "\0" in value:
        return "it holds a NUL character"
    try:
        raw = os.fsencode(value)
    except UnicodeError:
        return "it cannot be encoded as a file name"
    if len(raw) > 4096 or any(len(part) > 255 for part in raw.split(b"/")):
        return "it is longer than a file name can be (255 bytes a name, 4096 in all)"
    return None


# -- YAML --------------------------------------------------------------------------------------
def _yaml():
    import yaml  # here: xml2pkl's up-to-date run imports this module and parses no YAML

    return yaml


def check_yaml_events(text: str | bytes, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES) -> None:
    """Raise ValueError when the YAML ``text`` nests deeper than ``max_depth`` or holds more
    than ``max_nodes`` nodes with its aliases expanded. One pass over the parser's events (a
    flat stream, no recursion): each anchored node's expanded size is known when it ends, and
    an alias adds that size."""
    yaml = _yaml()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    start = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    end = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    sizes: dict[str, int] = {}
    stack: list[list] = [[None, 0]]  # [anchor, expanded nodes] of each open collection; the bottom: the documents
    total = 0
    for ev in yaml.parse(text, Loader=loader):
        if isinstance(ev, yaml.ScalarEvent):
            n = 1
            stack[-1][1] += 1
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.AliasEvent):
            n = sizes.get(ev.anchor, 1)
            stack[-1][1] += n
        elif isinstance(ev, start):
            if len(stack) > max_depth:
                raise ValueError(f"collections nested deeper than {max_depth} levels (a guard against hostile files)")
            n = 1
            stack.append([ev.anchor, 1])
        elif isinstance(ev, end):
            anchor, k = stack.pop()
            if anchor is not None:
                sizes[anchor] = k
            stack[-1][1] += k
            continue
        else:
            continue
        total += n
        if total > max_nodes:
            raise ValueError(f"more than {max_nodes:,} values once its aliases are expanded (a guard against "
                             "hostile files: YAML aliases can multiply a few bytes into billions of values)")


def parse_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` within :func:`check_yaml_events`' limits (libyaml's loader when
    PyYAML has it). Raises ``yaml.YAMLError`` or ValueError with the reason."""
    yaml = _yaml()
    check_yaml_events(text)
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


_YAML_MEMO: dict[tuple, Any] = {}


def load_yaml(path: str | os.PathLike, what: str, root: Optional[str] = None, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The YAML file ``path`` read (:func:`read_text`) and parsed (:func:`parse_yaml`); raises
    :class:`FileReadError` naming the file and the problem. A file read before with the same
    size, mtime and inode is not parsed again (the caller must not change what it gets)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        key = None
    if key is not None and key in _YAML_MEMO:
        return _YAML_MEMO[key]
    text = read_text(path, what, max_bytes, root)
    yaml = _yaml()
    try:
        d = parse_yaml(text)
    except yaml.YAMLError as e:
        raise FileReadError(f"{what} {path}: not valid YAML: {e}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise FileReadError(f"{what} {path}: refused: {e if not isinstance(e, RecursionError) else 'nested too deeply'}") from None
    if key is not None:
        if len(_YAML_MEMO) > 64:
            _YAML_MEMO.clear()
        _YAML_MEMO[key] = d
    return d


# -- JSON --------------------------------------------------------------------------------------
def _int_or_float(s: str) -> int | float:
    return int(s) if len(s) <= MAX_INT_DIGITS else float(s)  # float("1" * 400) is inf, no OverflowError


def _constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def parse_json(data: str | bytes) -> Any:
    """``json.loads`` with integers of more than :data:`MAX_INT_DIGITS` digits read as floats
    and ``NaN``/``Infinity`` as floats (the readers check every number is finite where it
    matters); nesting deeper than :data:`MAX_JSON_DEPTH` is a ValueError, not a RecursionError."""
    try:
        d = json.loads(data, parse_int=_int_or_float, parse_constant=_constant)
    except RecursionError:
        raise ValueError(f"values nested deeper than the parser can follow (limit {MAX_JSON_DEPTH}; a guard against "
                         "hostile files)") from None
    if _depth_over(d, MAX_JSON_DEPTH):
        raise ValueError(f"values nested deeper than {MAX_JSON_DEPTH} levels (a guard against hostile files)")
    return d


def _depth_over(d: Any, limit: int) -> bool:
    """Whether ``d`` nests deeper than ``limit``; iterative, and only containers are visited
    (a COCO file's numbers are skipped a list at a time)."""
    if not isinstance(d, (dict, list)):
        return False
    todo = [(d, 1)]
    while todo:
        x, depth = todo.pop()
        if depth > limit:
            return True
        items = x.values() if isinstance(x, dict) else x
        todo.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))
    return False
