"""Column assembly for annotation caches: per-file parse results <-> columnar arrays.

Shorthand: F files (XML), B boxes kept by parsing (all classes), R records (images in the
cache), M boxes in records (known classes only). ``box_start`` arrays are offsets:
file ``i`` owns rows ``box_start[i]:box_start[i + 1]``.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Optional, Sequence

import numpy as np

from detect.data.formats.result import FileResult
from detect.data.formats.voc import unknown_class_problems


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _gather_index(src_start: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Row indices that copy ``counts[i]`` rows from ``src_start[i]`` for every i, in order."""
    out_start = _offsets(counts)
    total = int(out_start[-1])
    # each output row r of block i reads src_start[i] + (r - out_start[i])
    return np.repeat(src_start - out_start[:-1], counts) + np.arange(total, dtype=np.int64)


_FILE_ARRAYS = {"image_size": np.int64, "image_mtime": np.int64, "ok": bool, "width": np.int32, "height": np.int32}
# The annotation files' size and mtime as parsed (-1: unknown): what a first build fingerprints
# them with (detect.data.cache.xml2pkl.build_cache); fresh tables only, never stored in a cache.
_PARSE_STATS = ("xml_size", "xml_mtime")
_FILE_LISTS = ("image", "hints")
_BOX_ARRAYS = ("boxes", "name_id", "difficult", "truncated")


def pack(results: Sequence[FileResult]) -> dict[str, Any]:
    """Per-file parse results -> a columnar table (the ``files`` block of a cache without
    the fingerprint). Workers pack their chunk, so few large arrays cross process borders."""
    chain = itertools.chain.from_iterable
    names: dict[str, int] = {}
    table: dict[str, Any] = {
        "image_size": np.fromiter((r.image_size for r in results), np.int64, len(results)),
        "image_mtime": np.fromiter((r.image_mtime_ns for r in results), np.int64, len(results)),
        "ok": np.fromiter((r.ok for r in results), bool, len(results)),
        "width": np.fromiter((r.width for r in results), np.int32, len(results)),
        "height": np.fromiter((r.height for r in results), np.int32, len(results)),
        "image": [r.image for r in results],
        "hints": [r.hints for r in results],
        "box_start": _offsets(np.fromiter((len(r.names) for r in results), np.int64, len(results))),
        "boxes": np.fromiter(chain(r.boxes for r in results), np.float32).reshape(-1, 4),  # flat [4B] -> (B, 4)
        "name_id": np.fromiter((names.setdefault(nm, len(names)) for nm in chain(r.names for r in results)), np.int32),
        "difficult": np.fromiter(chain(r.difficult for r in results), bool),
        "truncated": np.fromiter(chain(r.truncated for r in results), bool),
        "problems": [(i, kind, msg) for i, r in enumerate(results) for kind, msg in r.problems],
        "xml_size": np.fromiter((r.xml_size for r in results), np.int64, len(results)),
        "xml_mtime": np.fromiter((r.xml_mtime_ns for r in results), np.int64, len(results)),
    }
    table["names"] = list(names)  # after name_id filled it
    return table


def concat(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack columnar tables (rows of ``tables[0]`` first); name tables are merged."""
    if not tables:
        return pack([])
    names = sorted({nm for t in tables for nm in t["names"]})
    index = {nm: i for i, nm in enumerate(names)}
    out: dict[str, Any] = {key: np.concatenate([t[key] for t in tables]) for key in _FILE_ARRAYS}
    for key in _FILE_LISTS:
        out[key] = [v for t in tables for v in t[key]]
    out["box_start"] = _offsets(np.concatenate([np.diff(t["box_start"]) for t in tables]))
    for key in ("boxes", "difficult", "truncated"):
        out[key] = np.concatenate([t[key] for t in tables])
    out["name_id"] = np.concatenate(
        [np.array([index[nm] for nm in t["names"]] + [0], np.int32)[t["name_id"]] for t in tables])  # +[0]: never empty
    out["names"] = names
    for key in _PARSE_STATS:
        if all(key in t for t in tables):
            out[key] = np.concatenate([t[key] for t in tables])
    out["problems"] = []
    offset = 0
    for t in tables:
        out["problems"].extend((i + offset, kind, msg) for i, kind, msg in t["problems"])
        offset += len(t["ok"])
    return out


def take(table: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The table's rows ``rows`` (int64[K]), in that order; problems follow their files."""
    rows = np.asarray(rows, np.int64)
    out: dict[str, Any] = {key: table[key][rows] for key in _FILE_ARRAYS}
    for key in _FILE_LISTS:
        out[key] = [table[key][i] for i in rows.tolist()]
    start = table["box_start"]
    counts = (start[1:] - start[:-1])[rows]
    idx = _gather_index(start[:-1][rows], counts)
    out["box_start"] = _offsets(counts)
    for key in _BOX_ARRAYS:
        out[key] = table[key][idx]
    out["names"] = list(table["names"])
    pos = np.full(len(table["ok"]) + 1, -1, np.int64)
    pos[rows] = np.arange(len(rows))
    moved = [(int(pos[i]), kind, msg) for i, kind, msg in table["problems"] if pos[i] >= 0]
    out["problems"] = sorted(moved, key=lambda p: p[0])  # stable: a file's problems keep their order
    return out


def merge_files(
    rels: Sequence[str],
    sizes: np.ndarray,
    mtimes: np.ndarray,
    old: Optional[dict[str, Any]],
    new: dict[str, Any],
    rows: np.ndarray,
) -> dict[str, Any]:
    """The ``files`` block for ``rels`` and their fingerprint (``sizes``, ``mtimes``): row
    ``j`` is ``rows[j]`` of ``old`` stacked on ``new`` (reused files point into ``old``,
    parsed ones past its end)."""
    both = concat([old, new]) if old is not None else new
    out = take(both, rows)
    out["rel"] = list(rels)
    out["size"] = np.asarray(sizes, np.int64)
    out["mtime"] = np.asarray(mtimes, np.int64)
    return out


def split_ids(rel: str) -> tuple[str, str]:
    """The ids a split file may use for an annotation: ``<rel path without extension>`` and
    ``<stem>`` (``fish/FISH0041.xml`` -> ``fish/FISH0041``, ``FISH0041``)."""
    no_ext = os.path.splitext(rel)[0]
    return no_ext, no_ext.rsplit("/", 1)[-1]


def select_records(
    files: dict[str, Any],
    ann_dir: str,
    classes: Optional[list[str]],
    split: Optional[list[str]],
    split_file: str = "",
) -> tuple[list[str], dict[str, Any], list[tuple[str, str, str]]]:
    """The final stage: class list, the records of the split, and this selection's problems.

    Args:
        files: ``files`` columns from :func:`merge_files`.
        classes: the class list given (unknown names dropped and reported), or None for the
            sorted union of every name parsed (the same for every split of a folder).
        split: ids to keep (see :func:`split_ids`), or None for all files.

    Returns:
        ``(classes, records columns, problems [(file, kind, message)])``.
    """
    n = len(files["rel"])
    names = files["names"]
    used = np.unique(files["name_id"])
    class_list = list(classes) if classes is not None else sorted(names[i] for i in used.tolist())
    class_index = {c: i for i, c in enumerate(class_list)}
    lut = np.array([class_index.get(nm, -1) for nm in names] + [-1], np.int64)  # +1: never empty
    labels = lut[files["name_id"]] if len(files["name_id"]) else np.zeros(0, np.int64)

    in_split = np.ones(n, bool)
    problems_by_file: dict[int, list[tuple[str, str]]] = {}
    for i, kind, msg in files["problems"]:
        problems_by_file.setdefault(i, []).append((kind, msg))
    tail: list[tuple[str, str, str]] = []
    if split is not None:
        wanted = set(split)
        matched: set[str] = set()
        for j, rel in enumerate(files["rel"]):
            hit = [i for i in split_ids(rel) if i in wanted]
            in_split[j] = bool(hit)
            matched.update(hit)
        for sid in split:
            if sid not in matched:
                tail.append((split_file, "split_id_not_found", f"id {sid!r} matches no annotation under {ann_dir}"))

    start = files["box_start"]
    counts = np.diff(start)
    file_of_box = np.repeat(np.arange(n), counts)
    unknown = np.flatnonzero(labels < 0)
    for j, grp in _group(file_of_box[unknown], unknown):
        if in_split[j]:
            problems_by_file.setdefault(j, []).extend(unknown_class_problems(names[files["name_id"][b]] for b in grp))

    rec_files = np.flatnonzero(files["ok"] & in_split)
    keep = np.zeros(len(labels), bool)
    keep[np.isin(file_of_box, rec_files)] = True
    keep &= labels >= 0
    kept_counts = np.bincount(file_of_box[keep], minlength=n)[rec_files] if n else np.zeros(0, np.int64)
    records = {
        "file": rec_files.astype(np.int64),
        "box_start": _offsets(kept_counts),
        "boxes": np.ascontiguousarray(files["boxes"][keep]),
        "labels": labels[keep],
        "difficult": files["difficult"][keep],
        "truncated": files["truncated"][keep],
    }
    problems = []
    for j in sorted(problems_by_file):
        if in_split[j]:
            path = os.path.join(ann_dir, files["rel"][j])
            problems.extend((path, kind, msg) for kind, msg in problems_by_file[j])
    return class_list, records, problems + tail


def _group(keys: np.ndarray, values: np.ndarray):
    """Yield ``(key, values with that key)`` for sorted ``keys``."""
    if len(keys) == 0:
        return
    cuts = np.flatnonzero(np.diff(keys)) + 1
    for ks, vs in zip(np.split(keys, cuts), np.split(values, cuts)):
        yield int(ks[0]), vs.tolist()
