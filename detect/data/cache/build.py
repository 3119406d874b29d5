"""The stages every cache build shares, whatever the annotation format (VOC in
:mod:`detect.data.cache.xml2pkl`; YOLO, COCO and per-image formats in
:mod:`detect.data.cache.importers`): check the output, fingerprint the inputs, read the previous
cache once (up to date: its header alone), write the cache and its problems file atomically,
and summarise what was done (:class:`BuildResult`, :func:`summarize`).

An up-to-date re-run goes through this module, so it imports only the standard library and the
light data modules at the top; numpy comes inside the functions that rebuild.
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, TextIO

from detect.data.cache.header import (
    CacheError, CacheReader, blake2b, escape_field, problems_digest, problems_path, problems_text, read_cache_parts, valid_summary, write_cache_data,
)
from detect.errors import UsageError
from detect.utils import OutputPathError, atomic_write_text, check_output_path

if TYPE_CHECKING:
    from detect.data.cache.cache_file import Cache
    from detect.data.images import ImageIndex
    from detect.structures import Problem

SUMMARY_LINES = 5


class BuildResult:
    """What :func:`build_cache` did.

    Attributes:
        path: the cache file.
        parsed: relative paths of the XML files parsed in this run (the rest were reused).
        reused: number of files taken from the previous cache unchanged.
        up_to_date: nothing changed: the old cache was kept as it was (and not unpickled).
        seconds: wall time of the build.
        summary: counts (files, records, boxes, classes, problems), problems per kind and
            the first few problems, as stored in the cache header.
        data, cache, problems: the cache's payload, as a :class:`Cache`, its problems
            (unpickled on first use after an up-to-date run, from the bytes that run read).
    """

    def __init__(self, path: str, parsed: list[str], reused: int, up_to_date: bool, seconds: float,
                 summary: dict[str, Any], data: Optional[dict[str, Any]] = None, payload: Optional[bytes] = None):
        self.path, self.parsed, self.reused, self.up_to_date = path, parsed, reused, up_to_date
        self.seconds, self.summary = seconds, summary
        self._payload = payload  # the up-to-date cache's checked payload bytes: no second read
        if data is not None:
            self.__dict__["data"] = data  # fills the cached_property

    @cached_property
    def data(self) -> dict[str, Any]:
        from detect.data.cache.cache_file import decode_payload, read_cache_data

        payload, self._payload = self._payload, None
        return decode_payload(payload, self.path) if payload is not None else read_cache_data(self.path)

    @cached_property
    def cache(self) -> Cache:
        from detect.data.cache.cache_file import Cache

        return Cache.from_data(self.data, self.path)

    @property
    def problems(self) -> list[Problem]:
        from detect.structures import Problem

        return [Problem(*p) for p in self.data["problems"]]


def check_cache_output(output: Path, inputs: Sequence[str], writable: bool = True) -> None:
    """The cache and its problems file are new paths or regular files, none of them an input
    (an annotation, an image, the class or split file), in a folder we can write (``writable``:
    checked here; else the caller calls :func:`check_writable_folder` before it builds)."""
    try:
        for path, what in ((output, "output"), (problems_path(output), "problems file")):
            check_output_path(path, inputs, what=what)
    except OutputPathError as e:
        raise UsageError(str(e)) from None
    if writable:
        check_writable_folder(output)


def check_writable_folder(output: Path) -> None:
    """The output's folder exists (created if needed) and a file can be created in it: checked
    before a build parses anything, so a long parse does not end in "cannot write"."""
    import tempfile  # not at the top: an up-to-date re-run writes nothing and needs none of this

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {output.parent}: {e.strerror or e}") from None
    try:  # os.access() is not enough (root, read-only mounts): really create a file there
        with tempfile.TemporaryFile(dir=output.parent):
            pass
    except OSError as e:
        raise UsageError(f"cannot write in {output.parent}: {e.strerror or e}") from None


def load_previous(output: Path, fingerprint: str, log: TextIO, reader: Optional[CacheReader] = None,
                  ) -> tuple[Optional[dict[str, Any]], Optional[bytes], Optional[dict[str, Any]]]:
    """One read of the cache at ``output`` (or ``reader``'s, started earlier): ``(header, payload
    bytes, None)`` when it is intact and its fingerprint matches (nothing to do; the bytes are
    unpickled only if asked for), else ``(None, None, old payload or None)`` for an incremental
    or full rebuild."""
    if reader is None and not output.exists():
        return None, None, None
    try:
        header, payload = reader.parts() if reader is not None else read_cache_parts(output)
        if (header.get("fingerprint") == fingerprint and valid_summary(header.get("summary"))
                and isinstance(header.get("problems_blake2b"), str)):
            _sync_problems_file(output, header["problems_blake2b"], payload, log)
            return header, payload, None
        from detect.data.cache.cache_file import decode_payload

        return None, None, decode_payload(payload, output)
    except (CacheError, OSError) as e:
        reason = str(e).split("; rebuild it with")[0]
        print(f"xml2pkl: previous cache unusable, rebuilding: {reason}", file=log)
        return None, None, None


def _sync_problems_file(output: Path, digest: str, payload: bytes, log: TextIO) -> None:
    """Rewrite the problems file from the cache when it is missing or not the one the header
    names (a crash between the two writes): the cache holds the problems, the file shows them."""
    path = problems_path(output)
    try:
        if problems_digest(path.read_text(encoding="utf-8")) == digest:
            return
    except (OSError, UnicodeDecodeError):
        pass
    from detect.data.cache.cache_file import decode_payload

    atomic_write_text(path, problems_text(decode_payload(payload, output)["problems"]))
    print(f"xml2pkl: problems file {path} was missing or out of date; rewritten from the cache", file=log)


def image_columns(index: ImageIndex) -> dict[str, Any]:
    """The indexed images' fingerprint as cache columns: path list, size and mtime int64[I]."""
    import numpy as np

    files = index.files
    return {
        "path": [f.path for f in files],
        "size": np.fromiter((f.size for f in files), np.int64, len(files)),
        "mtime": np.fromiter((f.mtime_ns for f in files), np.int64, len(files)),
    }


def fingerprint(options: dict[str, Any], select: dict[str, Any], rels: list[str], sizes: Sequence[int], mtimes: Sequence[int],
                images: dict[str, Any]) -> str:
    """Digest of everything a cache is built from: options, class list, split, and the path,
    size and mtime of every XML file and every indexed image (``images``: :func:`image_columns`,
    or the same as lists). Sizes and mtimes are hashed as native int64 (lists or numpy arrays
    give the same digest, so the up-to-date check needs no numpy)."""
    h = blake2b(digest_size=16)
    h.update(repr((options, select)).encode("utf-8", "surrogateescape"))
    h.update("\0".join(rels).encode("utf-8", "surrogateescape"))
    h.update(_int64_bytes(sizes))
    h.update(_int64_bytes(mtimes))
    h.update("\0".join(images["path"]).encode("utf-8", "surrogateescape"))
    h.update(_int64_bytes(chain.from_iterable(zip(images["size"], images["mtime"]))))  # (size, mtime) per image, interleaved
    return h.hexdigest()


def _int64_bytes(values) -> bytes:
    """``values`` as native int64 bytes (``numpy.int64[N].tobytes()`` without numpy)."""
    if hasattr(values, "dtype"):  # already an array
        return values.astype("int64", copy=False).tobytes()
    return array("q", map(int, values)).tobytes()


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    problems = data["problems"]
    return {
        "files": len(data["files"]["rel"]), "records": len(data["records"]["file"]), "boxes": len(data["records"]["boxes"]),
        "classes": len(data["classes"]), "problems": len(problems),
        "kinds": dict(Counter(k for _, k, _ in problems).most_common()), "first": problems[:SUMMARY_LINES],
    }


def write_cache(output: Path, fp: str, options: dict[str, Any], select: dict[str, Any], files: dict[str, Any],
                images: dict[str, Any], classes: Optional[list[str]], split: Optional[list[str]] = None, split_file: str = "",
                extra_problems: Sequence[tuple[str, str, str]] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last stage of every cache build, whatever the annotation format: select the records
    (:func:`~detect.data.cache.columns.select_records`), then write the cache (fingerprint ``fp``) and
    its problems file atomically. ``extra_problems`` ``(file, kind, message)`` concern no single
    row of ``files`` (a split list naming a missing image). Returns ``(data, summary)``."""
    from detect.data.cache.columns import select_records

    classes_out, records, problems = select_records(files, options["ann_dir"], classes, split, split_file)
    problems = problems + list(extra_problems)
    data = {
        "options": options,
        "select": select,
        "files": files,
        "images": images,
        "classes": classes_out,
        "records": records,
        "problems": problems,
    }
    summary = _summary(data)
    text = problems_text(problems)
    try:  # the cache first: its header names the problems file's digest, so a crash between is repaired
        write_cache_data(output, data, fingerprint=fp, summary=summary, problems_blake2b=problems_digest(text))
        atomic_write_text(problems_path(output), text)
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror or e}") from None
    return data, summary


def summarize(result: BuildResult, out: Optional[TextIO] = None, prog: str = "xml2pkl", what: str = "XML files") -> None:
    """One line on what was cached, problem counts per kind, and the first few problems
    (``prog``: the line prefix; ``what``: the kind of annotation file counted)."""
    out = out or sys.stderr
    sm = result.summary
    how = "up to date, nothing re-parsed" if result.up_to_date else f"{len(result.parsed)} parsed, {result.reused} reused"
    print(f"{prog}: {sm['files']} {what} ({how}) -> {sm['records']} images, {sm['boxes']} boxes, {sm['classes']} classes "
          f"in {result.seconds:.2f}s: {result.path}", file=out)
    n = sm["problems"]
    if not n:
        return
    kinds = ", ".join(f"{k} {c}" for k, c in sm["kinds"].items())
    print(f"{prog}: {n} problem{'s' if n > 1 else ''} ({kinds}); full list: {problems_path(result.path)}", file=out)
    for f, k, m in sm["first"]:
        print(f"  {escape_field(f)}: [{k}] {m}", file=out)
    if n > len(sm["first"]):
        print(f"  ... and {n - len(sm['first'])} more", file=out)
