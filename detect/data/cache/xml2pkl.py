"""``detect xml2pkl``: a folder of VOC XML files -> an incremental, versioned pickle cache.

Flow: scan (XML and image folders, with sizes and mtimes; a first build takes the XML files'
from the parser, which stats each as it reads it) -> reuse the old cache's rows whose
fingerprint is unchanged -> parse only new or changed files (in parallel) -> merge columns ->
select classes and split -> write the cache and its problems file atomically.

Re-running on unchanged inputs reads the old cache, compares fingerprints and writes nothing.
A truncated, foreign, unsafe or older-schema cache is reported on stderr and rebuilt.

That re-run is about one ``stat`` per file, so this module imports only the standard library
and the light data modules (the walk, the cache header); numpy, lxml, the parsers and the
column code are imported inside the functions that rebuild, so ``detect xml2pkl`` on an
up-to-date cache does not pay for them (bench/xml2pkl.py times the whole process).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from detect.data.cache.build import (
    BuildResult, check_cache_output, check_writable_folder, fingerprint, image_columns, load_previous, write_cache,
)
from detect.data.cache.header import CacheReader
from detect.data.images import IMAGE_EXTS, ImageIndex, Listing, default_image_roots, walk_files
from detect.data.limits import MAX_XML_BYTES
from detect.errors import UsageError
from detect.readers import FileReadError, read_text


def read_list_file(path: str | os.PathLike, what: str) -> list[str]:
    """Non-empty, non-comment lines of a class or split file (first whitespace token), read
    through the bounded reader (:func:`detect.readers.read_text`: a regular file, 16 MiB at
    most). An empty split file is an empty split (``detect synth`` writes an empty test.txt);
    an empty class file is a usage error."""
    try:
        text = read_text(path, f"{what} file")
    except FileReadError as e:
        raise UsageError(f"cannot read {e}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split()[0] if what == "split" else line)
    if not out and what != "split":
        raise UsageError(f"{what} file {path} lists nothing")
    return out


def _normalise_split(ids: Sequence[str]) -> list[str]:
    out = []
    for sid in ids:
        sid = sid.replace("\\", "/").removeprefix("./")
        stem, ext = os.path.splitext(sid)
        out.append(stem if ext.lower() in IMAGE_EXTS or ext.lower() == ".xml" else sid)
    return sorted(set(out))


def _same_images(old: dict[str, Any], images: dict[str, Any]) -> bool:
    import numpy as np

    o = old["images"]
    return o["path"] == images["path"] and np.array_equal(o["size"], images["size"]) and np.array_equal(o["mtime"], images["mtime"])


def _selection(classes, split) -> tuple[Optional[list[str]], Optional[list[str]], str]:
    """Class list (file or list), split ids (file or list), and the split file's name."""
    class_list = read_list_file(classes, "class") if isinstance(classes, (str, os.PathLike)) else (list(classes) if classes is not None else None)
    if class_list is not None:
        dup = [c for c, k in Counter(class_list).items() if k > 1]
        if dup:
            raise UsageError(f"class list repeats {dup}: each class must appear once")
    split_file = os.fspath(split) if isinstance(split, (str, os.PathLike)) else ""
    split_ids = _normalise_split(read_list_file(split, "split") if split_file else split) if split is not None else None
    return class_list, split_ids, split_file


def _plan(xmls: Listing, old_files: Optional[dict[str, Any]], index: ImageIndex, same_images: bool):
    """Which files to reuse and which to parse: ``rows`` (int64[F]: the old row of a reused
    file, or ``n_old + k`` for the k-th job) and the jobs ``(xml_path, xml_rel_dir)``. A file
    is reused when its size and mtime are unchanged and it still finds the same image."""
    import numpy as np

    if old_files is None:  # first run: parse everything
        return np.arange(len(xmls.rels), dtype=np.int64), [(path, rel.rpartition("/")[0]) for path, rel in zip(xmls.paths, xmls.rels)]
    n_old = len(old_files["rel"])
    old_pos = {rel: i for i, rel in enumerate(old_files["rel"])}
    old_size = old_files["size"].tolist()
    old_mtime = old_files["mtime"].tolist()
    rows = np.empty(len(xmls.rels), np.int64)
    jobs: list[tuple[str, str]] = []
    for j, (path, rel, size, mtime) in enumerate(zip(*xmls)):
        i = old_pos.get(rel)
        if i is not None and old_size[i] == size and old_mtime[i] == mtime and (
            same_images or _same_image(old_files, i, index, path, rel)
        ):
            rows[j] = i
        else:
            rows[j] = n_old + len(jobs)
            jobs.append((path, rel.rpartition("/")[0]))
    return rows, jobs


def build_cache(
    ann_dir: str | os.PathLike,
    output: str | os.PathLike,
    images: Optional[str | os.PathLike] = None,
    classes: Optional[str | os.PathLike | Sequence[str]] = None,
    split: Optional[str | os.PathLike | Sequence[str]] = None,
    workers: int = 0,
    progress: bool = True,
    log: Optional[TextIO] = None,
    max_xml_bytes: int = MAX_XML_BYTES,
    verify_images: bool = False,
) -> BuildResult:
    """Parse every ``*.xml`` under ``ann_dir`` into the cache ``output``, incrementally.

    Args:
        ann_dir: folder searched recursively for XML files.
        output: the cache file; its problems file goes beside it (:func:`~detect.data.cache.header.problems_path`).
        images: image folder. Given: every record needs an image (missing ones are reported
            and left out). None: images are looked up beside the XML files and in a sibling
            ``JPEGImages/`` or ``images/`` folder, and records without one are kept with
            ``image=""`` and the XML's ``<size>`` (an annotation-only cache).
        classes: class file or list; None: the sorted union of the names found.
        split: split file or list of ids (``<STEM>`` or ``<class>/<STEM>``); None: all files.
        workers: parsers, this process included (0: one per core).
        max_xml_bytes: larger annotation files are not read (a ``too_large`` problem).
        verify_images: decode every image fully (in the parser processes), not only its header:
            one that fails or makes the decoder complain is a ``corrupt_image`` problem and is
            treated as missing.
        progress: show a progress bar (stderr) on runs longer than a second.
        log: where notes go (default: stderr).

    Raises:
        UsageError: missing folder or file, nothing to parse, unwritable output.
    """
    t0 = time.perf_counter()
    ann = Path(ann_dir)
    if not ann.is_dir():
        raise UsageError(f"annotation folder {ann} does not exist or is not a folder")
    ann_abs = str(ann.resolve())
    if images is not None and not Path(images).is_dir():
        raise UsageError(f"image folder {images} does not exist or is not a folder")
    if max_xml_bytes < 1:
        raise UsageError(f"--max-xml-bytes must be at least 1, got {max_xml_bytes}")
    output = Path(output)
    class_list, split_ids, split_file = _selection(classes, split)

    roots = [str(Path(images).resolve())] if images is not None else default_image_roots(ann_abs)
    # A first build has no cache to compare with: its XML files are not stat-ed in the walk but
    # as the parser reads them (the fstat it makes anyway), ~4 us a file off the serial part.
    reader = CacheReader(output) if output.is_file() else None  # never a FIFO or device: check_cache_output refuses those
    first = reader is None
    xmls, beside = walk_files(ann_abs, {".xml"}, IMAGE_EXTS if ann_abs in roots else (), stat=(not first, True))  # one walk for both
    if not xmls.rels:
        raise UsageError(f"no .xml files under {ann}")
    index = ImageIndex.scan(roots, {ann_abs: beside})
    listed = [os.fspath(f) for f in (classes, split) if isinstance(f, (str, os.PathLike))]
    check_cache_output(output, [*xmls.paths, *(f.path for f in index.files), *listed], writable=False)
    options = {"ann_dir": ann_abs, "image_roots": roots, "require_images": images is not None, "max_xml_bytes": int(max_xml_bytes),
               "verify_images": bool(verify_images)}
    select = {"classes": class_list, "split": split_ids}
    rels = xmls.rels
    image_stats = {"path": [f.path for f in index.files], "size": [f.size for f in index.files],
                   "mtime": [f.mtime_ns for f in index.files]}
    old = None
    if not first:
        fp = fingerprint(options, select, rels, xmls.sizes, xmls.mtimes, image_stats)
        header, payload, old = load_previous(output, fp, log or sys.stderr, reader)
        if header is not None:  # up to date: no numpy was needed
            return BuildResult(str(output), [], len(rels), True, time.perf_counter() - t0, header["summary"], payload=payload)
    check_writable_folder(output)
    import numpy as np

    from detect.data.cache.columns import merge_files

    sizes = np.array(xmls.sizes, np.int64)
    mtimes = np.array(xmls.mtimes, np.int64)
    image_cols = image_columns(index)
    if old is not None and old["options"] != options:
        old = None  # other folders: no row can be trusted
    same_images = old is not None and _same_images(old, image_cols)
    old_files = old["files"] if old is not None else None
    rows, jobs = _plan(xmls, old_files, index, same_images)
    how = {"require_image": images is not None, "root": ann_abs, "max_bytes": int(max_xml_bytes), "verify_images": bool(verify_images)}
    from detect.data.cache.parse_pool import parse_many

    new = parse_many(jobs, index, how, workers, progress)
    if first:  # the fingerprint from the files as read; one that could not be stat-ed is left out, as a walk with stat does
        sizes, mtimes = new["xml_size"], new["xml_mtime"]
        rows = np.flatnonzero(sizes >= 0)
        if len(rows) < len(rels):
            rels, sizes, mtimes = [rels[i] for i in rows.tolist()], sizes[rows], mtimes[rows]
            if not rels:
                raise UsageError(f"no .xml files under {ann} (every one vanished or could not be read)")
        fp = fingerprint(options, select, rels, sizes, mtimes, image_stats)
    files = merge_files(rels, sizes, mtimes, old_files, new, rows)
    data, summary = write_cache(output, fp, options, select, files, image_cols, class_list, split_ids, split_file)
    n_old = len(old_files["rel"]) if old_files is not None else 0
    parsed = [rels[j] for j in np.flatnonzero(rows >= n_old).tolist()]
    return BuildResult(str(output), parsed, len(rels) - len(parsed), False, time.perf_counter() - t0, summary, data)


def _same_image(files: dict[str, Any], i: int, index: ImageIndex, xml_path: str, rel: str) -> bool:
    """Would an unchanged XML still resolve to the same, unchanged image file?"""
    found = index.find(xml_path, os.path.dirname(rel), *files["hints"][i])
    if found is None:
        return files["image"][i] == "" and files["image_size"][i] == -1
    return (found.path, found.size, found.mtime_ns) == (files["image"][i], files["image_size"][i], files["image_mtime"][i])
