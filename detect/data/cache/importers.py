"""Caches of YOLO, COCO and other per-image formats: the same file format, fingerprint and problem
report as the VOC cache of :mod:`detect.data.cache.xml2pkl`, through the stages of
:mod:`detect.data.cache.build`.

The payload is the one described in :mod:`detect.data.cache.cache_file`; ``options["format"]`` says which
importer built it ("yolo", "coco", a new format's name; absent in VOC caches) and every row of
``files`` is one image:

- YOLO, and any format with one annotation file per image (:func:`build_image_cache`): one row
  per image of the split; ``rel``/``size``/``mtime`` are its label file's
  (absolute path; -1/-1 when it has none), ``image*`` the image's. A re-run on unchanged inputs
  reads only the cache header; after a change only the images whose label file or image
  changed are parsed again (the label text and the image header).
- COCO: one row per ``images`` entry; ``rel``/``size``/``mtime`` are its JSON's. The JSON is
  the unit of change: when it or an indexed image changed, it is parsed again (one
  ``json.loads``), but the sizes of unchanged images come from the previous cache.

The fingerprint covers the options (root, split entries, class list), every annotation file's
path, size and mtime, and every image's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO

import numpy as np

from detect.data.cache.build import BuildResult, check_cache_output, fingerprint, image_columns, load_previous, write_cache
from detect.data.cache.columns import merge_files, pack
from detect.data.formats.coco import CocoSplit, ImageFinder, parse_coco
from detect.data.formats.result import FileResult
from detect.data.formats.yolo import YoloSpec, label_path, list_images, parse_image
from detect.data.images import FileStat, ImageIndex


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _start(output: str | os.PathLike, options: dict[str, Any], select: dict[str, Any], rels: list[str], sizes: np.ndarray,
           mtimes: np.ndarray, images: dict[str, Any], log: Optional[TextIO]):
    """Check the output, fingerprint the inputs, and read the previous cache: ``(output, fp,
    header or None, payload bytes, previous payload or None)`` as :func:`~detect.data.cache.build.load_previous`
    returns them (a previous cache of other options is not reused)."""
    output = Path(output)
    check_cache_output(output, [*rels, *images["path"]])
    fp = fingerprint(options, select, rels, sizes, mtimes, images)
    header, payload, old = load_previous(output, fp, log or sys.stderr)
    if old is not None and old["options"] != options:
        old = None
    return output, fp, header, payload, old


def build_yolo_cache(spec: YoloSpec, split: str, output: str | os.PathLike, *, progress: bool = False,
                     log: Optional[TextIO] = None) -> BuildResult:
    """The cache of one split of a YOLO dataset (``"all"``: every split whose folders exist).

    Raises :class:`~detect.data.formats.yolo.DataYamlError` (unknown split, a split entry that does not
    exist) and :class:`~detect.errors.UsageError` (unwritable output).
    """
    from detect.data.formats.yolo import DataYamlError

    if split == "all":
        entries = [e for s in spec.present() for e in spec.splits[s]]
    elif split in spec.splits:
        entries = spec.splits[split]
    else:
        raise DataYamlError(f"{spec.yaml}: no split {split!r}; known splits: {sorted(spec.splits) + ['all']}")
    for e in entries if split != "all" else []:
        if not e.exists():
            raise DataYamlError(f"split {split!r} is {e}, which does not exist")
    images, extra = list_images(entries)
    options = {"format": "yolo", "ann_dir": str(spec.root), "data_yaml": str(spec.yaml), "entries": [str(e) for e in entries],
               "missing": [p[2] for p in extra]}
    real_root = os.path.realpath(spec.root)  # label symlinks leading out of it are not read
    return build_image_cache(images, [label_path(st.path) for st in images],
                             lambda image, label: parse_image(image, label, spec.names, real_root), options, spec.names,
                             output, extra_problems=extra, missing=(str(entries[0]) if entries else "", "is the labels/ folder missing?"), desc="yolo",
                             progress=progress, log=log)


def build_image_cache(images: list[FileStat], labels: list[str], parse: Callable[[FileStat, str], FileResult],
                      options: dict[str, Any], classes: Optional[list[str]], output: str | os.PathLike, *,
                      extra_problems: Sequence[tuple[str, str, str]] = (), missing: tuple[str, str] = ("", ""), desc: str = "images",
                      progress: bool = False, log: Optional[TextIO] = None) -> BuildResult:
    """The cache of a format with one annotation file per image (YOLO's label files, or a new
    format's): ``labels[i]`` is the annotation file of ``images[i]`` (it may not exist: a negative
    image), ``parse(image, label) -> FileResult`` reads one. ``options`` must hold ``"format"`` (the
    format's name) and ``"ann_dir"`` (the dataset root); with ``classes`` None the class list is
    the sorted names found. Incremental: a re-run on unchanged inputs reads only the cache header;
    after a change only the images whose annotation file or image changed are parsed again.
    ``extra_problems`` ``(file, kind, message)`` concern no single image; ``missing`` ``(file,
    hint)``: the file named, and the hint given, when no image has an annotation file.
    Raises :class:`~detect.errors.UsageError` (unwritable output)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    stats = [_stat(p) for p in labels]
    sizes = np.array([s for s, _ in stats], np.int64).reshape(-1)
    mtimes = np.array([m for _, m in stats], np.int64).reshape(-1)
    image_cols = {"path": [st.path for st in images], "size": np.array([st.size for st in images], np.int64),
                  "mtime": np.array([st.mtime_ns for st in images], np.int64)}
    select = {"classes": classes, "split": None}
    output, fp, header, payload, old = _start(output, options, select, labels, sizes, mtimes, image_cols, log)
    if header is not None:
        return BuildResult(str(output), [], len(labels), True, time.perf_counter() - t0, header["summary"], payload=payload)

    old_files = old["files"] if old is not None else None
    rows, jobs = _plan_images(images, labels, sizes, mtimes, old_files)
    new = pack([parse(images[j], labels[j])
                for j in tqdm(jobs, desc=desc, unit="image", file=sys.stderr, disable=not progress, delay=1.0)])
    files = merge_files(labels, sizes, mtimes, old_files, new, rows)
    extra = list(extra_problems)
    if len(labels) and (sizes < 0).all():
        where, hint = missing
        extra.append((where or options["ann_dir"], "no_labels", f"no label file for any of the {len(labels)} images (the first "
                      f"would be {labels[0]}); every image is a negative{': ' + hint if hint else ''}"))
    data, summary = write_cache(output, fp, options, select, files, image_cols, classes, extra_problems=extra)
    parsed = [labels[j] for j in jobs]
    return BuildResult(str(output), parsed, len(labels) - len(parsed), False, time.perf_counter() - t0, summary, data)


def _plan_images(images: list[FileStat], labels: list[str], sizes: np.ndarray, mtimes: np.ndarray,
               old: Optional[dict[str, Any]]) -> tuple[np.ndarray, list[int]]:
    """Rows of the new ``files`` block (an old row, or ``n_old + k`` for the k-th job) and the
    images to parse: those whose label file or image changed since the previous cache."""
    rows = np.empty(len(images), np.int64)
    jobs: list[int] = []
    if old is None:
        return np.arange(len(images), dtype=np.int64), list(range(len(images)))
    n_old = len(old["rel"])
    pos = {rel: i for i, rel in enumerate(old["rel"])}
    # (label bytes, label mtime, image path, image bytes, image mtime) per old row, as plain ints
    before = list(zip(old["size"].tolist(), old["mtime"].tolist(), old["image"], old["image_size"].tolist(),
                      old["image_mtime"].tolist()))
    for j, (st, rel, size, mtime) in enumerate(zip(images, labels, sizes.tolist(), mtimes.tolist())):
        i = pos.get(rel)
        if i is not None and before[i] == (size, mtime, st.path, st.size, st.mtime_ns):
            rows[j] = i
        else:
            rows[j] = n_old + len(jobs)
            jobs.append(j)
    return rows, jobs


def build_coco_cache(root: Path, sources: list[CocoSplit], output: str | os.PathLike, *, progress: bool = False,
                     log: Optional[TextIO] = None) -> BuildResult:
    """The cache of COCO annotation files (one split's JSON, or several for ``"all"``: their
    classes are merged by name, in order of appearance). Raises
    :class:`~detect.errors.UsageError` (unwritable output)."""
    t0 = time.perf_counter()
    finders = [ImageFinder(s.images, ImageIndex.scan([s.images])) for s in sources]
    jsons = [str(s.json) for s in sources]
    stats = [_stat(j) for j in jsons]
    cols = [image_columns(f.index) for f in finders]
    image_cols = {"path": [p for c in cols for p in c["path"]], "size": np.concatenate([c["size"] for c in cols]),
                  "mtime": np.concatenate([c["mtime"] for c in cols])}
    options = {"format": "coco", "ann_dir": str(root), "sources": [(j, str(s.images)) for j, s in zip(jsons, sources)]}
    select = {"classes": None, "split": None}
    sizes = np.array([s for s, _ in stats], np.int64)
    mtimes = np.array([m for _, m in stats], np.int64)
    output, fp, header, payload, old = _start(output, options, select, jsons, sizes, mtimes, image_cols, log)
    if header is not None:
        return BuildResult(str(output), [], len(jsons), True, time.perf_counter() - t0, header["summary"], payload=payload)

    memo = _size_memo(old["files"]) if old is not None else {}
    classes: list[str] = []
    rows, rels, extra = [], [], []
    for j, finder in zip(jsons, finders):
        finder.memo = memo
        names, results, problems = parse_coco(j, finder, os.path.realpath(root))
        classes += [c for c in names if c not in classes]
        rows += results
        rels += [j] * len(results)
        extra += [(j, kind, msg) for kind, msg in problems]
    files = pack(rows)
    index = {j: k for k, j in enumerate(jsons)}
    files.update(rel=rels, size=sizes[[index[r] for r in rels]].reshape(-1), mtime=mtimes[[index[r] for r in rels]].reshape(-1))
    data, summary = write_cache(output, fp, options, select, files, image_cols, classes, extra_problems=extra)
    return BuildResult(str(output), rels, 0, False, time.perf_counter() - t0, summary, data)


def _size_memo(files: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    """Image path -> (bytes, mtime_ns, width, height) of every image a previous cache read."""
    return {p: (int(s), int(m), int(w), int(h)) for p, s, m, w, h in zip(
        files["image"], files["image_size"].tolist(), files["image_mtime"].tolist(), files["width"].tolist(),
        files["height"].tolist()) if p}
