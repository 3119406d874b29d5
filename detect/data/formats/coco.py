"""COCO detection JSON (``instances_*.json``) -> one :class:`~detect.data.formats.result.FileResult` row per
image, and where the JSON files and their image folders are.

Where COCO data enters, so its box conversion happens here, once: a COCO ``bbox`` is
``[x, y, w, h]`` in 0-based pixels with continuous coordinates (``x + w`` is the right edge),
which is already our convention, so ``xyxy = (x, y, x + w, y + h)`` with no shift
(:func:`coco_to_xyxy`; :func:`xyxy_to_coco` is the inverse that ``detect convert --to coco`` writes).

Classes are the ``categories`` sorted by ``id``: ids may have gaps (COCO's own run 1..90 with
ten missing), labels are positions in that list. ``iscrowd: 1`` marks a box over a crowd of
objects: it is kept as a *difficult* box, which evaluation ignores (VOC AP, and COCO AP, where
difficult becomes ``iscrowd`` again); like every difficult box it is still a training target.
``attributes.difficult`` / ``attributes.truncated`` (what ``detect convert --to coco`` writes for
VOC flags) are read too. An image without annotations is a negative image.

Defects are problems naming the JSON and the image or annotation, and the rest goes on:
unreadable JSON (``parse_error``), a file that is not COCO (``not_coco``), a bad image, category
or annotation entry (``bad_entry``), an annotation whose ``image_id`` is not an image
(``orphan_annotation``) or whose ``category_id`` is not a category (``unknown_class``), bad boxes
(as in :mod:`detect.data.formats.boxcheck`; up to a pixel past the edge is float rounding, clipped
silently), a missing or unreadable image (``missing_image``, ``bad_image``: left out), and a
declared size that differs from the image (``size_mismatch``: the image wins).

Parsed with the standard library's ``json``, not with pycocotools' or faster-coco-eval's ``COCO``
class, although both are dependencies: that class is ``json.load`` plus a few dicts (its index),
and it assumes a well-formed file: it raises ``KeyError`` on the first annotation without an
``id`` or ``image_id``, asserts on a top level that is not a dict, and prints to stdout. It knows
nothing of image files, sizes or boxes outside the image. What we need is the tolerant
per-entry walk below, which costs no more than its index. faster-coco-eval stays the evaluator
and checks in the tests that the files we write load there.
"""

from __future__ import annotations

import os
import reprlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from detect.data.formats.boxcheck import clip_box
from detect.data.formats.result import FileResult
from detect.data.images import FileStat, ImageIndex, read_image_size
from detect.readers import MAX_JSON_BYTES, parse_json, read_limited

ROBOFLOW_JSON = "_annotations.coco.json"  # Roboflow: <split>/_annotations.coco.json beside the images
TOLERANCE = 1.0  # pixels past the image edge clipped without a problem


@dataclass
class CocoSplit:
    """One COCO annotation file and the folder its ``file_name`` s are relative to."""

    json: Path
    images: Path


def coco_to_xyxy(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` -> 0-based pixel xyxy (the only place COCO boxes are read)."""
    return x, y, x + w, y + h


def xyxy_to_coco(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    """0-based pixel xyxy -> COCO ``[x, y, w, h]`` (the inverse of :func:`coco_to_xyxy`)."""
    return [x1, y1, x2 - x1, y2 - y1]


# -- where the files are ------------------------------------------------------------------------
def split_name(json_path: Path) -> str:
    """``instances_val2017.json`` -> ``val2017``; Roboflow's ``valid/_annotations.coco.json`` -> ``valid``."""
    if json_path.name == ROBOFLOW_JSON:
        return json_path.parent.name
    return json_path.stem.removeprefix("instances_")


def image_folder(root: Path, json_path: Path, split: str) -> Path:
    """The folder a JSON's ``file_name`` s are relative to: the first that exists of
    ``root/<split>`` (COCO 2017), ``root/images/<split>``, the JSON's own folder (Roboflow; not
    ``annotations/``), ``root/images`` (CVAT), ``root``."""
    here = [] if json_path.parent.name.lower() == "annotations" else [json_path.parent]
    for cand in [root / split, root / "images" / split, *here, root / "images"]:
        if cand.is_dir():
            return cand.resolve()
    return root.resolve()


def find_splits(root: Path) -> dict[str, CocoSplit]:
    """The COCO annotation files of a dataset folder, by split name: ``annotations/instances_*.json``
    (or, when there is none, every ``annotations/*.json``: CVAT writes ``instances_default.json``)
    and Roboflow's ``<split>/_annotations.coco.json``. Empty when there are none."""
    out: dict[str, CocoSplit] = {}
    ann = root / "annotations"
    if ann.is_dir():
        for j in sorted(ann.glob("instances_*.json")) or sorted(ann.glob("*.json")):
            out[split_name(j)] = CocoSplit(j.resolve(), image_folder(root, j, split_name(j)))
    for j in sorted(root.glob(f"*/{ROBOFLOW_JSON}")):
        out.setdefault(split_name(j), CocoSplit(j.resolve(), j.parent.resolve()))
    return out


def split_of_file(json_path: Path) -> tuple[str, CocoSplit, Path]:
    """A COCO JSON given on its own: its split name, its image folder, and the dataset root
    (the folder above ``annotations/``, else the JSON's folder)."""
    json_path = json_path.resolve()
    root = json_path.parent.parent if json_path.parent.name.lower() == "annotations" else json_path.parent
    name = split_name(json_path)
    return name, CocoSplit(json_path, image_folder(root, json_path, name)), root


# -- parsing ------------------------------------------------------------------------------------
def _int(v: Any) -> Optional[int]:
    """An id as an int (COCO ids are ints; some tools write "12"), or None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def _categories(cats: Any, problems: list[tuple[str, str]]) -> tuple[list[str], dict[int, str]]:
    """Class names (categories by id, each name once) and category id -> name."""
    by_id: dict[int, str] = {}
    for k, c in enumerate(cats if isinstance(cats, list) else []):
        cid = _int(c.get("id")) if isinstance(c, dict) else None
        name = c.get("name") if isinstance(c, dict) else None
        if cid is None or not isinstance(name, str) or not name.strip():
            problems.append(("bad_entry", f"categories[{k}] needs an integer 'id' and a 'name', got {reprlib.repr(c)}; skipped"))
        elif cid in by_id:
            problems.append(("bad_entry", f"category id {cid} appears twice ({reprlib.repr(by_id[cid])}, {reprlib.repr(name)}); the first is kept"))
        else:
            by_id[cid] = name.strip()
    if not by_id:
        problems.append(("bad_entry", "no usable 'categories': every annotation is dropped"))
    for name, k in Counter(by_id.values()).items():
        if k > 1:
            problems.append(("bad_entry", f"{k} categories are named {reprlib.repr(name)}; they are one class"))
    classes = list(dict.fromkeys(by_id[i] for i in sorted(by_id)))
    return classes, by_id


def _images(imgs: Any, problems: list[tuple[str, str]]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for k, im in enumerate(imgs):
        iid = _int(im.get("id")) if isinstance(im, dict) else None
        if iid is None or not isinstance(im.get("file_name"), str) or not im["file_name"] or "\0" in im["file_name"]:
            problems.append(("bad_entry", f"images[{k}] needs an integer 'id' and a 'file_name', got {reprlib.repr(im)}; skipped"))
        elif iid in out:
            problems.append(("bad_entry", f"image id {iid} appears twice ({out[iid]['file_name']}, {im['file_name']}); the first is kept"))
        else:
            out[iid] = im
    return out


def _group(anns: Any, images: dict[int, dict], problems: list[tuple[str, str]]) -> dict[int, list[dict]]:
    """Annotations by image id; those without a known image are reported, grouped by image id."""
    by_image: dict[int, list[dict]] = {i: [] for i in images}
    orphans: Counter = Counter()
    for k, a in enumerate(anns if isinstance(anns, list) else []):
        iid = _int(a.get("image_id")) if isinstance(a, dict) else None
        if iid is None:
            problems.append(("bad_entry", f"annotations[{k}] has no integer 'image_id'; dropped"))
        elif iid in by_image:
            by_image[iid].append(a)
        else:
            orphans[iid] += 1
    for iid, n in orphans.items():
        problems.append(("orphan_annotation", f"{n} annotation{'s refer' if n > 1 else ' refers'} to image id {iid}, "
                                              "which is not in 'images'; dropped"))
    return by_image


def _flag(a: dict, key: str) -> bool:
    attrs = a.get("attributes")
    return bool(isinstance(attrs, dict) and attrs.get(key))


def _boxes(anns: list[dict], cats: dict[int, str], width: int, height: int, problems: list[tuple[str, str]]):
    """An image's annotations -> (flat boxes, names, difficult, truncated)."""
    boxes: list[float] = []
    names: list[str] = []
    difficult: list[bool] = []
    truncated: list[bool] = []
    for k, a in enumerate(anns):
        aid = a.get("id", f"#{k + 1}")
        what = f"annotation {aid if isinstance(aid, (int, str)) and len(str(aid)) < 40 else reprlib.repr(aid)}"
        name = cats.get(_int(a.get("category_id")))  # type: ignore[arg-type]
        if name is None:
            problems.append(("unknown_class", f"{what}: category_id {reprlib.repr(a.get('category_id'))} is not in 'categories'; dropped"))
            continue
        bb = a.get("bbox")
        if not (isinstance(bb, list) and len(bb) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                               for v in bb)):  # "1234" was read as [1, 2, 3, 4], true as 1
            problems.append(("bad_box", f"{what} ({name}): 'bbox' {reprlib.repr(bb)} is not [x, y, w, h] (4 numbers); dropped"))
            continue
        x, y, w, h = (float(v) for v in bb)
        box = clip_box(coco_to_xyxy(x, y, w, h), width, height, f"{what} ({name})", f"bbox [{x:g}, {y:g}, {w:g}, {h:g}]",
                       problems, TOLERANCE)
        if box is not None:
            boxes += box
            names.append(name)
            difficult.append(bool(_int(a.get("iscrowd")) or _flag(a, "difficult")))
            truncated.append(_flag(a, "truncated"))
    return boxes, names, difficult, truncated


class ImageFinder:
    """Image files of a JSON's ``file_name`` s: the exact path under the image folder, else the
    file with the same stem (re-encoded or moved images, as for VOC), and their sizes, read from
    the header unless ``memo`` (path -> (bytes, mtime_ns, width, height) from the previous
    cache) already knows the unchanged file."""

    def __init__(self, folder: Path, index: ImageIndex, memo: Optional[dict[str, tuple[int, int, int, int]]] = None):
        self.folder, self.index, self.memo = str(folder), index, memo or {}
        self.by_path = {f.path: f for f in index.files}

    def find(self, file_name: str) -> Optional[FileStat]:
        rel = file_name.replace("\\", "/")
        p = os.path.normpath(os.path.join(self.folder, rel))
        return self.by_path.get(p) or self.index.find(p, os.path.dirname(rel), filename=rel)

    def size(self, st: FileStat) -> tuple[int, int]:
        m = self.memo.get(st.path)
        if m is not None and (m[0], m[1]) == (st.size, st.mtime_ns):
            return m[2], m[3]
        return read_image_size(st.path)


def _image_row(im: dict, anns: list[dict], cats: dict[int, str], finder: ImageFinder) -> FileResult:
    problems: list[tuple[str, str]] = []
    out: list[tuple[str, str]] = []
    fail = FileResult(False, "", -1, -1, 0, 0, [], [], [], [], (im["file_name"], "", ""), out)
    head = f"image {im['id']} ({im['file_name']})"
    st = finder.find(im["file_name"])
    if st is None:
        out.append(("missing_image", f"{head}: no such file in {finder.folder}; left out"))
        return fail
    try:
        width, height = finder.size(st)
    except Exception as e:  # PIL raises several types for bad files
        out.append(("bad_image", f"{head}: image {st.path} cannot be read ({e}); left out"))
        return fail
    declared = (_int(im.get("width")), _int(im.get("height")))
    if declared != (width, height) and all(declared):
        problems.append(("size_mismatch", f"declared {declared[0]}x{declared[1]} but {st.path} is {width}x{height}; "
                                          "using the image's size"))
    boxes, names, difficult, truncated = _boxes(anns, cats, width, height, problems)
    out.extend((kind, f"{head}: {msg}") for kind, msg in problems)
    return FileResult(True, st.path, st.size, st.mtime_ns, width, height, boxes, names, difficult, truncated,
                      (im["file_name"], "", ""), out)


def parse_coco(json_path: str | os.PathLike, finder: ImageFinder, root: Optional[str] = None,
               ) -> tuple[list[str], list[FileResult], list[tuple[str, str]]]:
    """One COCO JSON -> ``(classes, one row per image in file order, problems of the file itself)``.

    Rows carry their image's problems (messages start with ``image <id> (<file_name>)``);
    an image whose file is missing or unreadable gives a row with ``ok=False``. The file is read
    by :func:`detect.readers.read_limited` (a regular file of at most 1 GiB; a symlink only when
    it leads inside ``root``, the dataset root as a real path) and parsed by
    :func:`detect.readers.parse_json` (nesting, huge numbers and NaN within limits).
    """
    problems: list[tuple[str, str]] = []
    data = read_limited(os.fspath(json_path), root, MAX_JSON_BYTES, problems, what="annotation file")
    if data is None:
        return [], [], problems
    try:
        d = parse_json(data)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, the limits
        return [], [], [("parse_error", f"not valid JSON ({str(e)[:300]}); fix or re-export the file")]
    if not isinstance(d, dict) or not isinstance(d.get("images"), list):
        return [], [], [("not_coco", "no 'images' list at the top level: not a COCO detection file; skipped")]
    classes, cats = _categories(d.get("categories"), problems)
    images = _images(d["images"], problems)
    by_image = _group(d.get("annotations"), images, problems)
    rows = [_image_row(im, by_image[iid], cats, finder) for iid, im in images.items()]
    return classes, rows, problems
