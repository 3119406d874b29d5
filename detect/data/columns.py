"""Column assembly for annotation caches: per-file parse results <-> columnar arrays.

Shorthand: F files (XML), B boxes kept by parsing (all classes), R records (images in the
cache), M boxes in records (known classes only). ``box_start`` arrays are offsets:
file ``i`` owns rows ``box_start[i]:box_start[i + 1]``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from detect.data.voc import FileResult


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


def empty_files() -> dict[str, Any]:
    return merge_files([], [], None, [])


def merge_files(
    rels: Sequence[str],
    stats: Sequence[tuple[int, int]],
    old: Optional[dict[str, Any]],
    sources: Sequence[tuple[bool, int | FileResult]],
) -> dict[str, Any]:
    """Build the ``files`` columns for ``rels`` (sorted), each row either reused from the old
    columns (``(True, old_index)``) or freshly parsed (``(False, FileResult)``)."""
    n = len(rels)
    new_results = [s for reused, s in sources if not reused]
    names: list[str] = sorted({nm for r in new_results for nm in r.names} | (set(old["names"]) if old else set()))
    name_index = {nm: i for i, nm in enumerate(names)}
    old_name_map = np.array([name_index[nm] for nm in old["names"]], np.int32) if old and old["names"] else np.zeros(0, np.int32)

    flat = [v for r in new_results for v in r.boxes]
    new_boxes = np.array(flat, np.float32).reshape(-1, 4)  # flat [4B'] -> (B', 4)
    new_names = np.array([name_index[nm] for r in new_results for nm in r.names], np.int32)
    new_diff = np.array([d for r in new_results for d in r.difficult], bool)
    new_trunc = np.array([t for r in new_results for t in r.truncated], bool)
    n_old_boxes = len(old["boxes"]) if old else 0

    cols: dict[str, list] = {k: [] for k in ("image", "image_size", "image_mtime", "hints", "ok", "width", "height")}
    src_start = np.zeros(n, np.int64)
    counts = np.zeros(n, np.int64)
    problems: list[tuple[int, str, str]] = []
    old_problems: dict[int, list[tuple[str, str]]] = {}
    if old:
        for i, kind, msg in old["problems"]:
            old_problems.setdefault(i, []).append((kind, msg))
    new_pos = 0  # next row of the new_* arrays
    for j, (reused, src) in enumerate(sources):
        if reused:
            i = src
            for key in cols:
                cols[key].append(old[key][i])
            s, e = int(old["box_start"][i]), int(old["box_start"][i + 1])
            src_start[j], counts[j] = s, e - s
            problems.extend((j, k, m) for k, m in old_problems.get(i, ()))
        else:
            r = src
            for key, val in (("image", r.image), ("image_size", r.image_size), ("image_mtime", r.image_mtime_ns),
                             ("hints", r.hints), ("ok", r.ok), ("width", r.width), ("height", r.height)):
                cols[key].append(val)
            k = len(r.names)
            src_start[j], counts[j] = n_old_boxes + new_pos, k
            new_pos += k
            problems.extend((j, kind, msg) for kind, msg in r.problems)

    all_boxes = np.concatenate([old["boxes"], new_boxes]) if old else new_boxes
    all_names = np.concatenate([old_name_map[old["name_id"]], new_names]) if old else new_names
    all_diff = np.concatenate([old["difficult"], new_diff]) if old else new_diff
    all_trunc = np.concatenate([old["truncated"], new_trunc]) if old else new_trunc
    idx = _gather_index(src_start, counts)
    return {
        "rel": list(rels),
        "size": np.array([s for s, _ in stats], np.int64),
        "mtime": np.array([m for _, m in stats], np.int64),
        "image": cols["image"],
        "image_size": np.array(cols["image_size"], np.int64),
        "image_mtime": np.array(cols["image_mtime"], np.int64),
        "hints": cols["hints"],
        "ok": np.array(cols["ok"], bool),
        "width": np.array(cols["width"], np.int32),
        "height": np.array(cols["height"], np.int32),
        "box_start": _offsets(counts),
        "boxes": np.ascontiguousarray(all_boxes[idx]).reshape(-1, 4),
        "name_id": all_names[idx].astype(np.int32),
        "names": names,
        "difficult": all_diff[idx].astype(bool),
        "truncated": all_trunc[idx].astype(bool),
        "problems": problems,
    }


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
            per_name: dict[str, int] = {}
            for b in grp:
                nm = names[files["name_id"][b]]
                per_name[nm] = per_name.get(nm, 0) + 1
            for nm, k in per_name.items():
                problems_by_file.setdefault(j, []).append(
                    ("unknown_class", f"class {nm!r} is not in the class list; {k} box{'es' if k > 1 else ''} dropped"))

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
