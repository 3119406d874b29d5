"""``detect convert SRC --to voc|coco|yolo|pkl -o OUT``: a dataset in any layout we read, or
``detect predict``'s detections (as pre-labels), to the files another tool reads, or to a cache.

Sources: anything ``--data`` accepts (:func:`detect.data.formats.table.open_data`: dataset YAML, VOC
folder or split folders, YOLO ``data.yaml`` or its folder, COCO folder or ``.json``), a cache
``.pkl``, or the ``detections.jsonl`` that ``detect predict --save-json`` writes
(:func:`read_predictions`; scores are dropped, video frames are skipped).

Flow: every split of the source through its cache (built or reused exactly as for ``--data``,
so its problems are reported the same way) -> one class list -> the plan of output files
(the planner of its row in :data:`detect.data.formats.table.FORMATS`, :mod:`detect.data.formats.writers`)
-> refuse when OUT lies inside the source dataset or a planned file
is an input -> write. ``--to pkl`` writes the cache of one split (default: every image) to
``-o``: ``detect xml2pkl`` for every layout.

Exit codes: 0 done; 1 done, but images were left out, their files missing or unreadable (or ``--strict``
and the source had problems); 2 usage error (unknown source or split, OUT inside the source or
onto an input file, unwritable output).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional, TextIO

import numpy as np

from detect.data.cache.cache_file import Cache, CacheError
from detect.data.cache.header import problems_text
from detect.data.formats.boxcheck import clip_box
from detect.data.formats.source import ALL
from detect.data.formats.table import writers
from detect.data.formats.writers import Output, Splits, check_class_names, output_names, write_all
from detect.data.images import IMAGE_EXTS, read_image_size
from detect.data.spec import DatasetError, is_cache_path, open_data, resolve_data, resolve_source
from detect.errors import UsageError
from detect.readers import MAX_JSON_BYTES, FileReadError, parse_json, read_text
from detect.structures import ImageRecord, Problem
from detect.utils import atomic_write_text, check_output_path

PROBLEMS_FILE = "convert.problems.txt"
# source problems that leave images out of the output (exit 1): a missing or unreadable image, an
# annotation file that could not be read at all
LEFT_OUT_KINDS = ("missing_image", "bad_image", "read_error", "special_file", "link_outside", "too_large", "parse_error",
                  "not_coco", "over_limit")


class ConvertError(UsageError):
    """A usage error of ``detect convert`` (exit code 2, printed by ``detect.cli.main``)."""


# -- sources -------------------------------------------------------------------------------------
def _find(source: str, base: Path) -> Optional[str]:
    """A predicted image's path: as written (predict's folder), else from the JSON lines' folder."""
    for p in (Path(source), base / source):
        try:
            if p.is_file():
                return str(p.resolve())
        except (OSError, ValueError):  # a name too long, a NUL in it: no such image
            continue
    return None


def _number(v: Any, what: str) -> float:
    """A finite JSON number (not a bool, not a string), else ValueError naming ``what``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} {v!r:.40} is not a finite number")
    return float(v)


def _prediction_row(row: dict, where: str, base: Path, problems: list[Problem]) -> Optional[tuple[ImageRecord, list[str], dict]]:
    """One image's row of detections.jsonl -> (record without labels, names per box, label -> name).

    The ``source`` must be an image file (by extension and header: a row naming ``/etc/passwd``
    copied it into the output), and its real size must be the row's ``width`` x ``height``
    (boxes are pixels of that size: a row claiming 6400x4800 for a 64x48 image is not about
    this image)."""
    image = _find(str(row["source"]), base)
    if image is None:
        problems.append(Problem(str(row["source"]), "missing_image", f"{where}: the image does not exist here; skipped"))
        return None
    if os.path.splitext(image)[1].lower() not in IMAGE_EXTS:
        problems.append(Problem(image, "bad_image", f"{where}: not an image file (extension); skipped"))
        return None
    try:
        real = read_image_size(image)
    except Exception as e:  # PIL raises several types for bad files; NotRegularFileError for a FIFO
        problems.append(Problem(image, "bad_image", f"{where}: not a readable image ({e}); skipped"))
        return None
    width, height = _number(row["width"], "width"), _number(row["height"], "height")
    if (width, height) != real:
        problems.append(Problem(image, "size_mismatch", f"{where}: the row says {width:g}x{height:g} but the image is "
                                                        f"{real[0]}x{real[1]}: its boxes are not this image's; skipped"))
        return None
    width, height = real
    boxes: list[float] = []
    names: list[str] = []
    seen: dict[int, str] = {}
    clip: list[tuple[str, str]] = []
    for k, d in enumerate(row.get("detections") or [], 1):
        label, name = d["label"], d["name"]
        if isinstance(label, bool) or not isinstance(label, int) or not isinstance(name, str):
            raise ValueError(f"detection {k}: 'label' must be an integer and 'name' a string")
        xyxy = d["box"]
        if not isinstance(xyxy, list) or len(xyxy) != 4:
            raise ValueError(f"detection {k}: 'box' must be [x1, y1, x2, y2]")
        box = clip_box(tuple(_number(v, "a box coordinate") for v in xyxy), width, height,  # type: ignore[arg-type]
                       f"detection {k} ({name})", f"box {xyxy}", clip, 0.5)
        if box is not None:
            boxes += box
            names.append(name)
            seen.setdefault(label, name)
    problems += [Problem(image, kind, f"{where}: {msg}") for kind, msg in clip]
    rec = ImageRecord(image, width, height, np.asarray(boxes, np.float32).reshape(-1, 4))
    return rec, names, seen


def read_predictions(path: str | os.PathLike) -> tuple[list[str], list[ImageRecord], list[Problem]]:
    """``detect predict``'s ``detections.jsonl`` -> ``(classes, records, problems)``.

    Classes are the detected names in the model's label order; video frames, failed inputs,
    missing images and rows that are not predict's are skipped and reported. Read through the
    bounded reader (:mod:`detect.readers`: a regular file of at most 1 GiB, each line parsed
    with its limits). Raises :class:`ConvertError` when unreadable."""
    path = Path(path)
    try:
        lines = read_text(path, "detections file", MAX_JSON_BYTES).splitlines()
    except FileReadError as e:
        raise ConvertError(str(e)) from None
    problems: list[Problem] = []
    rows: list[tuple[ImageRecord, list[str]]] = []
    by_label: dict[int, str] = {}
    videos: Counter = Counter()
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {ln}"
        try:
            row = parse_json(line)
            if not isinstance(row, dict) or not isinstance(row.get("source"), str):
                raise ValueError("not an object with a 'source' string")
            if row.get("frame") is not None:
                videos[row["source"]] += 1
                continue
            if "error" in row:
                problems.append(Problem(row["source"], "bad_image", f"{where}: predict could not read it "
                                                                   f"({str(row['error'])[:200]}); skipped"))
                continue
            got = _prediction_row(row, where, path.parent, problems)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
            problems.append(Problem(str(path), "bad_entry", f"line {ln}: not a detections.jsonl row "
                                                            f"({type(e).__name__}: {str(e)[:200]}); skipped"))
            continue
        if got is not None:
            rows.append(got[:2])
            for label, name in got[2].items():
                by_label.setdefault(label, name)
    for video, n in videos.items():
        problems.append(Problem(video, "video_frames", f"{n} video frames skipped: extract them as image files to convert them"))
    # the model's label order; a name seen under another label too (an edited file) joins at the end
    classes = list(dict.fromkeys([by_label[k] for k in sorted(by_label)] + [n for _, names in rows for n in names]))
    index = {c: i for i, c in enumerate(classes)}
    records = [dataclasses.replace(r, labels=np.array([index[n] for n in names], np.int64),
                                   difficult=np.zeros(len(names), bool), truncated=np.zeros(len(names), bool),
                                   annotation=str(path)) for r, names in rows]
    return classes, records, problems


def _merge(caches: dict[str, Cache]) -> tuple[list[str], Splits]:
    """One class list for every split (the union in order of appearance; usually they are the
    same list) and each split's records with labels into it."""
    classes: list[str] = []
    for c in caches.values():
        classes += [n for n in c.classes if n not in classes]
    splits: Splits = {}
    for name, c in caches.items():
        lut = np.array([classes.index(n) for n in c.classes] + [0], np.int64)  # +[0]: never empty
        splits[name] = [r if c.classes == classes else dataclasses.replace(r, labels=lut[r.labels]) for r in c.records]
    return classes, splits


def read_source(src: str, split: Optional[str], workers: int = 0, progress: bool = False,
                log: TextIO = sys.stderr) -> tuple[list[str], Splits, list[Problem], Optional[Path], list[str]]:
    """The source's splits (``split`` given: only that one) -> ``(classes, splits, problems,
    dataset root or None, the files defining it)``. Raises :class:`ConvertError`."""
    p = Path(src)
    try:
        if p.suffix.lower() == ".jsonl":
            classes, records, problems = read_predictions(p)
            return classes, {split or ALL: records}, problems, None, [src]
        if is_cache_path(p):
            cache = resolve_data(p)
            return list(cache.classes), {split or ALL: cache.records}, list(cache.problems), None, [src]
        ds = open_data(p)
        wanted = [split] if split else (ds.splits or [ALL])
        caches = {ds.split_key(s): resolve_source(ds, s, workers=workers, progress=progress, log=log) for s in wanted}
    except (DatasetError, CacheError, FileNotFoundError) as e:
        raise ConvertError(str(e)) from None
    classes, splits = _merge(caches)
    problems = list({(pr.file, pr.kind, pr.message): pr for c in caches.values() for pr in c.problems}.values())  # splits share files
    return classes, splits, problems, ds.root, [src, *ds.files]


# -- the guard -----------------------------------------------------------------------------------
def _real(path: str | Path, dirs: dict[str, str]) -> str:
    """``path`` with its folder's symlinks resolved (the folder cached: one lookup per folder)."""
    head, tail = os.path.split(os.path.abspath(path))
    if head not in dirs:
        dirs[head] = os.path.realpath(head)
    return os.path.join(dirs[head], tail)


def check_outputs(plan: list[Output], splits: Splits, sources: list[str], out: Path, root: Optional[Path]) -> None:
    """Refuse (:class:`ConvertError`) an OUT inside the source dataset, or a planned file that is
    an input (an image, an annotation file, the source itself, the class and split files of a
    dataset YAML, wherever they lie) or not a regular file (a folder, a device, a FIFO): the
    source is never written, and nothing is written before the whole plan passes."""
    real_out = Path(os.path.realpath(out))
    if root is not None and real_out.is_relative_to(os.path.realpath(root)):
        raise ConvertError(f"output {out} is inside the input dataset {root}; choose a folder outside it")
    if real_out.exists() and not real_out.is_dir():
        raise ConvertError(f"output {out} is a file; give a folder")
    dirs: dict[str, str] = {}
    inputs = {_real(f, dirs) for f in sources}
    for recs in splits.values():
        for r in recs:
            inputs.add(_real(r.image, dirs))
            if r.annotation:
                inputs.add(_real(r.annotation, dirs))
    for o in plan:
        if _real(o.path, dirs) in inputs:
            raise ConvertError(f"writing {o.path} would overwrite the input file {_real(o.path, dirs)}; choose another output folder")
        check_output_path(o.path)  # an OutputPathError is a usage error too


# -- the command ---------------------------------------------------------------------------------
def convert(src: str, to: str, out: str | os.PathLike, split: Optional[str] = None, *, workers: int = 0,
            progress: bool = False, log: TextIO = sys.stderr) -> dict[str, Any]:
    """Convert ``src`` to ``to`` (a format that writes: "voc", "coco", "yolo";
    :func:`~detect.data.formats.table.writers`) in folder ``out``.

    Returns ``{"classes", "splits": {name: (images, boxes)}, "problems": source problems,
    "left_out": problems of records not written}``. Raises :class:`ConvertError` (usage) or
    OSError (cannot write)."""
    classes, splits, problems, root, sources = read_source(src, split, workers, progress, log)
    left_out: list[Problem] = []
    for name in splits:
        keep = [r for r in splits[name] if r.image]
        left_out += [Problem(r.annotation, "no_image", "the record has no image file; not written")
                     for r in splits[name] if not r.image]
        splits[name] = keep
    out = Path(out)
    check_class_names(classes)
    plan = writers()[to](out, classes, splits, output_names(splits))
    check_outputs(plan, splits, sources, out, root)
    from tqdm import tqdm

    with tqdm(total=len(plan), desc=f"convert to {to}", unit="file", file=sys.stderr, disable=not progress, delay=1.0) as bar:
        write_all(plan, lambda _: bar.update())
    report = out / PROBLEMS_FILE
    if problems or left_out:
        atomic_write_text(report, problems_text([(p.file, p.kind, p.message) for p in [*problems, *left_out]]))
    else:
        report.unlink(missing_ok=True)
    counts = {s: (len(recs), sum(len(r) for r in recs)) for s, recs in splits.items()}
    jsonl = Path(src).suffix.lower() == ".jsonl"  # every problem of a detections file is a row not converted
    missing = [p for p in problems if (p.kind != "video_frames" if jsonl else p.kind in LEFT_OUT_KINDS)]
    return {"classes": classes, "splits": counts, "problems": problems, "left_out": left_out, "missing": missing}
