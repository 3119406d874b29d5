"""Annotation caches: the on-disk format, :func:`load_cache`, and the public build entry points.

A cache file is two pickles (protocol 5) of plain containers and numpy arrays, written
atomically and read only through :func:`~detect.data.safe_pickle.safe_load_pickle`:

- a small **header**: ``format``, ``schema``, the input ``fingerprint`` (a digest of every
  input path, size and mtime plus the options), a ``summary`` (counts, problems per kind,
  the first problems), and the payload's length and BLAKE2b digest. A re-run on unchanged
  inputs reads only this (and checks the payload bytes), never unpickling the rest;
- the **payload**, columnar (all boxes of all images in one ``float32[M, 4]`` array plus
  offsets), so 20,000 images load in milliseconds; :class:`Cache` hands out per-image
  :class:`~detect.structures.ImageRecord` s whose arrays are views into those columns.

Payload layout (``SCHEMA`` 1)::

    options                 inputs of per-file parsing: ann_dir, image_roots, require_images
    select                  inputs of the final stage: class list given, split ids given
    files                   per XML file (F of them), for incremental rebuilds: rel, size,
                            mtime (the fingerprint), image + its size/mtime, hints, ok,
                            width, height, box_start int64[F+1], boxes float32[B, 4],
                            name_id int32[B] into names, difficult/truncated bool[B],
                            problems [(file index, kind, message)]
    images                  fingerprint of the image folders: path, size, mtime
    classes                 list[str]
    records                 the images kept (R): file int64[R], box_start int64[R+1],
                            boxes float32[M, 4], labels int64[M], difficult/truncated bool[M]
    problems                [(file, kind, message)] of this cache's selection

Building (:func:`build_cache`, ``detect xml2pkl``) lives in :mod:`detect.data.xml2pkl`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detect.data.safe_pickle import UnsafePickleError, load_versioned_pickle, safe_load_pickle
from detect.structures import ImageRecord, Problem
from detect.utils import atomic_write

FORMAT = "retail-detect/voc-cache"
SCHEMA = 1

__all__ = ["Cache", "CacheError", "load_cache", "problems_path"]


class CacheError(ValueError):
    """A file that is not a usable cache: truncated, foreign, or of another schema version."""


@dataclass
class Cache:
    """An annotation cache in memory.

    Attributes:
        classes: class names; ``record.labels`` index into it.
        records: one :class:`ImageRecord` per usable image (boxes float32[N, 4] xyxy 0-based
            pixels, labels int64[N], difficult/truncated bool[N]); its arrays are views of the
            record's own rows in the cache's columns (cheap to load; copy before growing them).
        problems: every defect found in the inputs of this cache.
        path: the file it was loaded from ("" when built in memory).
    """

    classes: list[str]
    records: list[ImageRecord]
    problems: list[Problem] = field(default_factory=list)
    path: str = ""

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def from_data(cls, data: dict[str, Any], path: str = "") -> "Cache":
        files, rec = data["files"], data["records"]
        ann_dir = data["options"]["ann_dir"]
        start = rec["box_start"]
        records = []
        for r, f in enumerate(rec["file"].tolist()):
            s, e = int(start[r]), int(start[r + 1])
            records.append(
                ImageRecord(
                    image=files["image"][f],
                    width=int(files["width"][f]),
                    height=int(files["height"][f]),
                    boxes=rec["boxes"][s:e],
                    labels=rec["labels"][s:e],
                    difficult=rec["difficult"][s:e],
                    truncated=rec["truncated"][s:e],
                    annotation=os.path.join(ann_dir, files["rel"][f]),
                )
            )
        problems = [Problem(*p) for p in data["problems"]]
        return cls(list(data["classes"]), records, problems, path)


def problems_path(cache_path: str | os.PathLike) -> Path:
    """The problems file written beside a cache: ``g.pkl`` -> ``g.problems.txt``."""
    p = Path(cache_path)
    return p.with_name(p.stem + ".problems.txt") if p.suffix else p.with_name(p.name + ".problems.txt")


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
    if hashlib.blake2b(payload, digest_size=16).hexdigest() != digest:
        raise CacheError(f"{path}: corrupt cache (payload digest differs); rebuild it with `detect xml2pkl`")
    return header, payload


def read_cache_parts(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """The header of a complete, intact cache and its payload bytes, checked but not unpickled
    (:func:`decode_payload` does that), in one read. Raises :class:`CacheError` (or OSError)
    like :func:`read_cache_data`."""
    return _read(path)


def read_cache_data(path: str | os.PathLike) -> dict[str, Any]:
    """The validated payload of a cache file. Raises :class:`CacheError` (or OSError) for
    anything that is not a complete cache of the current schema; never returns half a cache."""
    return decode_payload(_read(path)[1], path)


def decode_payload(payload: bytes, path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle (restricted) and check the payload bytes of the cache at ``path``."""
    try:
        data = safe_load_pickle(payload)
        _check_consistent(data)
    except UnsafePickleError as e:
        raise CacheError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        raise CacheError(f"{path}: inconsistent cache ({type(e).__name__}: {e}); rebuild it with `detect xml2pkl`") from None
    return data


def _check_consistent(data: dict[str, Any]) -> None:
    """Cheap structural checks, so a damaged file fails here rather than deep in training."""
    if not isinstance(data, dict):
        raise TypeError("payload is not a dict")
    f, r = data["files"], data["records"]
    n = len(f["rel"])
    for key in ("size", "mtime", "image", "image_size", "image_mtime", "hints", "ok", "width", "height"):
        if len(f[key]) != n:
            raise ValueError(f"files.{key} has {len(f[key])} entries for {n} files")
    if len(f["box_start"]) != n + 1 or int(f["box_start"][-1]) != len(f["boxes"]):
        raise ValueError("files.box_start does not match files.boxes")
    for key in ("name_id", "difficult", "truncated"):
        if len(f[key]) != len(f["boxes"]):
            raise ValueError(f"files.{key} does not match files.boxes")
    m = len(r["boxes"])
    if len(r["box_start"]) != len(r["file"]) + 1 or int(r["box_start"][-1]) != m:
        raise ValueError("records.box_start does not match records.boxes")
    for key in ("labels", "difficult", "truncated"):
        if len(r[key]) != m:
            raise ValueError(f"records.{key} does not match records.boxes")
    if m and (int(r["labels"].min()) < 0 or int(r["labels"].max()) >= len(data["classes"])):
        raise ValueError("records.labels out of range of classes")
    if len(r["file"]) and (int(r["file"].min()) < 0 or int(r["file"].max()) >= n):
        raise ValueError("records.file out of range")
    for arr in (f["boxes"], r["boxes"]):
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError("boxes must be [N, 4]")


def write_cache_data(path: str | os.PathLike, data: dict[str, Any], **header: Any) -> None:
    """Write a cache atomically (temporary file, fsync, rename): a header holding ``header``
    (``fingerprint``, ``summary``) and the payload's size and digest, then the payload."""
    payload = pickle.dumps(data, protocol=5)
    head = {"format": FORMAT, "schema": SCHEMA, **header, "payload_bytes": len(payload),
            "payload_blake2b": hashlib.blake2b(payload, digest_size=16).hexdigest()}

    def write(f) -> None:
        pickle.dump(head, f, protocol=5)
        f.write(payload)

    atomic_write(path, write)


def load_cache(path: str | os.PathLike) -> Cache:
    """Load an annotation cache written by ``detect xml2pkl`` / :func:`detect.data.xml2pkl.build_cache`.

    Raises:
        FileNotFoundError: no such file.
        CacheError: truncated, foreign, unsafe (see :mod:`detect.data.safe_pickle`) or
            written by another schema version; the message says to rebuild it.
    """
    return Cache.from_data(read_cache_data(path), os.fspath(path))
