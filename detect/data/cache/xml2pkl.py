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
from array import array
from collections import Counter
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, TextIO

from detect.data.cache.header import (
    CacheError, CacheReader, blake2b, escape_field, problems_digest, problems_path, problems_text, read_cache_parts, valid_summary, write_cache_data,
)
from detect.data.images import IMAGE_EXTS, ImageIndex, Listing, default_image_roots, walk_files
from detect.data.limits import MAX_XML_BYTES
from detect.errors import UsageError
from detect.readers import FileReadError, read_text
from detect.utils import OutputPathError, atomic_write_text, check_output_path

if TYPE_CHECKING:
    from detect.data.cache.cache_file import Cache
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


# -- the build ------------------------------------------------------------------------------
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
        output: the cache file; its problems file goes beside it (:func:`problems_path`).
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


def _same_image(files: dict[str, Any], i: int, index: ImageIndex, xml_path: str, rel: str) -> bool:
    """Would an unchanged XML still resolve to the same, unchanged image file?"""
    found = index.find(xml_path, os.path.dirname(rel), *files["hints"][i])
    if found is None:
        return files["image"][i] == "" and files["image_size"][i] == -1
    return (found.path, found.size, found.mtime_ns) == (files["image"][i], files["image_size"][i], files["image_mtime"][i])


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


def cmd_xml2pkl(args) -> int:
    """``detect xml2pkl ANN_DIR [--images DIR] [--classes FILE] [--split FILE] -o CACHE``.
    Exit 0: written (problems are reported, not fatal); 1: ``--strict`` and problems found;
    2: usage error (missing folder or file, unwritable output)."""
    max_xml_bytes = getattr(args, "max_xml_bytes", None)
    result = build_cache(
        args.ann_dir, args.output, images=args.images, classes=args.classes, split=args.split,
        workers=args.workers, progress=not getattr(args, "no_progress", False),
        max_xml_bytes=MAX_XML_BYTES if max_xml_bytes is None else max_xml_bytes,
        verify_images=getattr(args, "verify_images", False),
    )
    summarize(result)
    return 1 if args.strict and result.summary["problems"] else 0
