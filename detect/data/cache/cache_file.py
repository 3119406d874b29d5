"""Annotation caches: the on-disk format, :func:`load_cache`, and the public build entry points.

A cache file is two pickles (protocol 5) of plain containers and numpy arrays, written
atomically and read only through :func:`~detect.data.cache.safe_pickle.safe_load_pickle`:

- a small **header**: ``format``, ``schema``, the input ``fingerprint`` (a digest of every
  input path, size and mtime plus the options), a ``summary`` (counts, problems per kind,
  the first problems), the BLAKE2b digest of the problems file's text (``problems_blake2b``:
  the file is a view of the payload's ``problems``, rewritten whenever it differs), and the
  payload's length and BLAKE2b digest. A re-run on unchanged inputs reads only this (and
  checks the payload bytes), never unpickling the rest;
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

Building (:func:`build_cache`, ``detect xml2pkl``) lives in :mod:`detect.data.cache.xml2pkl`. The
header level (constants, reading and checking the bytes, writing, the problems file) is in
:mod:`detect.data.cache.header`, standard library only, and re-exported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from detect.data.cache.header import (  # noqa: F401  (re-exported: the cache API in one place)
    FORMAT, SCHEMA, CacheError, _read, _triples, escape_field, problems_digest, problems_path, problems_text, read_cache_parts,
    unescape_field, valid_summary, write_cache_data,
)
from detect.data.cache.safe_pickle import PICKLE_DATA_ERRORS, UnsafePickleError, safe_load_pickle
from detect.structures import ImageRecord, Problem

__all__ = ["Cache", "CacheError", "load_cache", "problems_path"]


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


def read_cache_data(path: str | os.PathLike) -> dict[str, Any]:
    """The validated payload of a cache file. Raises :class:`CacheError` (or OSError) for
    anything that is not a complete cache of the current schema; never returns half a cache."""
    return decode_payload(_read(path)[1], path)


def decode_payload(payload: bytes, path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle (restricted) and check the payload bytes of the cache at ``path``."""
    try:
        data = safe_load_pickle(payload, check=False)  # its size and digest matched the header (header._read)
        _check_consistent(data)
    except UnsafePickleError as e:
        raise CacheError(f"{path}: {e}") from None
    except PICKLE_DATA_ERRORS as e:  # _check_consistent raises ValueError, KeyError, TypeError
        raise CacheError(f"{path}: inconsistent cache ({type(e).__name__}: {e}); rebuild it with `detect xml2pkl`") from None
    return data


def _array(a: Any, name: str, dtype: Any, n: Optional[int] = None, width: int = 0) -> np.ndarray:
    """``a`` if it is an ndarray of ``dtype`` with ``n`` rows (any when None) and, when
    ``width``, shape (n, width); ValueError naming the column otherwise."""
    shape = (n if n is not None else "N",) + ((width,) if width else ())
    want = f"{np.dtype(dtype)}{list(shape)}"
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be {want}, got {type(a).__name__}")
    if a.dtype != dtype or a.ndim != len(shape) or (n is not None and len(a) != n) or (width and a.shape[1] != width):
        raise ValueError(f"{name} must be {want}, got {a.dtype}{list(a.shape)}")
    return a


def _strings(a: Any, name: str, n: Optional[int] = None) -> list:
    if not isinstance(a, list) or not all(isinstance(v, str) for v in a) or (n is not None and len(a) != n):
        raise ValueError(f"{name} must be a list of {'' if n is None else f'{n} '}strings")
    return a


def _offsets_of(a: Any, name: str, n: int, total: int) -> None:
    """``box_start``: int64[n + 1], from 0 to ``total``, never decreasing."""
    _array(a, name, np.int64, n + 1)
    if int(a[0]) != 0 or int(a[-1]) != total or (np.diff(a) < 0).any():
        raise ValueError(f"{name} does not match its boxes")


def _index(a: np.ndarray, name: str, size: int) -> None:
    if len(a) and (int(a.min()) < 0 or int(a.max()) >= size):
        raise ValueError(f"{name} out of range")


def _boxes(a: Any, name: str) -> int:
    """Rows of a float32[N, 4] box column whose every value is finite."""
    _array(a, name, np.float32, None, 4)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds a non-finite coordinate")
    return len(a)


def _check_consistent(data: Any) -> None:
    """Every column the code reads, with its type, dtype, length and range, so a payload that
    is intact but foreign or hand-edited fails here (ValueError naming the column) rather than
    as a TypeError in :meth:`Cache.from_data` or NaN boxes in training."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("options", "select", "files", "images", "records")):
        raise ValueError("payload must be a dict with the dicts options, select, files, images, records")
    o, f, r, im = data["options"], data["files"], data["records"], data["images"]
    if not isinstance(o.get("ann_dir"), str):
        raise ValueError("options must hold ann_dir (str)")
    if o.get("format", "voc") == "voc":  # the YOLO and COCO importers have options of their own
        if not isinstance(o.get("require_images"), bool):
            raise ValueError("options of a VOC cache must hold require_images (bool)")
        _strings(o.get("image_roots"), "options.image_roots")
    for key in ("classes", "split"):
        if data["select"].get(key) is not None:
            _strings(data["select"][key], f"select.{key}")
    classes = _strings(data.get("classes"), "classes")
    n = len(_strings(f.get("rel"), "files.rel"))
    for key, dtype in (("size", np.int64), ("mtime", np.int64), ("image_size", np.int64), ("image_mtime", np.int64),
                       ("ok", bool), ("width", np.int32), ("height", np.int32)):
        _array(f.get(key), f"files.{key}", dtype, n)
    _strings(f.get("image"), "files.image", n)
    hints = f.get("hints")
    if not isinstance(hints, list) or len(hints) != n or not all(
            isinstance(h, tuple) and len(h) == 3 and all(isinstance(v, str) for v in h) for h in hints):
        raise ValueError(f"files.hints must hold {n} triples of strings")
    b = _boxes(f.get("boxes"), "files.boxes")
    _offsets_of(f.get("box_start"), "files.box_start", n, b)
    names = _strings(f.get("names"), "files.names")
    _index(_array(f.get("name_id"), "files.name_id", np.int32, b), "files.name_id", len(names))
    for key in ("difficult", "truncated"):
        _array(f.get(key), f"files.{key}", bool, b)
    _triples(f.get("problems"), "files.problems", int, n)
    n_img = len(_strings(im.get("path"), "images.path"))
    for key in ("size", "mtime"):
        _array(im.get(key), f"images.{key}", np.int64, n_img)
    m = _boxes(r.get("boxes"), "records.boxes")
    n_rec = len(_array(r.get("file"), "records.file", np.int64))
    _index(r["file"], "records.file", n)
    _offsets_of(r.get("box_start"), "records.box_start", n_rec, m)
    _index(_array(r.get("labels"), "records.labels", np.int64, m), "records.labels", len(classes))
    for key in ("difficult", "truncated"):
        _array(r.get(key), f"records.{key}", bool, m)
    _triples(data.get("problems"), "problems", str)


def load_cache(path: str | os.PathLike) -> Cache:
    """Load an annotation cache written by ``detect xml2pkl`` / :func:`detect.data.cache.xml2pkl.build_cache`.

    Raises:
        FileNotFoundError: no such file.
        CacheError: truncated, foreign, unsafe (see :mod:`detect.data.cache.safe_pickle`) or
            written by another schema version; the message says to rebuild it.
    """
    return Cache.from_data(read_cache_data(path), os.fspath(path))
