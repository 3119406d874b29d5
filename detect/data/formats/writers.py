"""Records -> Pascal VOC, COCO or YOLO datasets on disk, as the tools that read those formats
expect them (``detect convert``).

Each writer first *plans* its files (:class:`Output`: a path and either an image to copy or the
text to write), so the caller can check that no planned file is one of the inputs before a
single byte is written; :func:`write_all` then writes them, each atomically.

- **VOC** (labelImg, CVAT "Pascal VOC 1.1"): ``Annotations/<stem>.xml`` as labelImg writes them
  (tab-indented, ``folder``/``filename``/``path``/``source``/``size``/``segmented``, objects with
  ``pose``/``truncated``/``difficult`` and integer 1-based inclusive corners: the inverse of
  :func:`detect.data.formats.voc.convert_box`, see :func:`voc_corners`), ``JPEGImages/``,
  ``ImageSets/Main/<split>.txt``, ``classes.txt``.
- **COCO**: ``annotations/instances_<split>.json`` (categories with 1-based ids in class order,
  1-based image and annotation ids, ``bbox`` xywh, ``area``, ``iscrowd: 0``; difficult and
  truncated boxes carry ``attributes``, which COCO tools ignore and :mod:`detect.data.formats.coco` reads
  back) and ``images/<split>/``.
- **YOLO** (ultralytics): ``data.yaml`` (no ``path``: ultralytics then resolves the splits from
  the YAML's folder, so the dataset can move), ``images/<split>/`` and ``labels/<split>/*.txt``
  with one ``class cx cy w h`` line per box (6 decimals; an empty file for a negative image).
  YOLO has no difficult flag: such boxes become ordinary boxes.

Images are **copied** (``shutil.copy2``: data and mtime; an identical copy from a previous run is
kept), never linked: the output is a dataset to hand to other tools, and some of them write into
their dataset (ultralytics re-saves JPEGs it finds truncated, in place; labelling tools save next
to the image), which through a hard or symbolic link would modify the source. The source is
never moved or modified.

Split names ``valid``/``validation`` and year-suffixed ones (``val2017``) are written as
``train``/``val``/``test`` (:func:`detect.data.formats.layouts.canonical_split`); output file names are the
images' names, made unique across the dataset when two images share a stem (``<folder>_<stem>``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml
from lxml import etree

from detect.data.formats.coco import xyxy_to_coco
from detect.data.formats.layouts import canonical_split
from detect.data.formats.yolo import xyxy_to_yolo
from detect.errors import UsageError
from detect.readers import FileReadError, load_yaml, read_text
from detect.structures import ImageRecord
from detect.utils import atomic_write_text

Splits = dict[str, list[ImageRecord]]  # split name -> records (every record has an image file)


@dataclass
class Output:
    """One planned output file: a copy of ``image``, or ``text()`` written."""

    path: Path
    image: str = ""
    text: Optional[Callable[[], str]] = None


def output_split(name: str) -> str:
    """The split name written: ``train``/``val``/``test`` for what means one of them, else as is."""
    c = canonical_split(name)
    return c if c in ("train", "val", "test") else name


def check_class_names(classes: Sequence[str]) -> None:
    """Refuse (a usage error, before anything is written) a class name no format can carry: empty,
    or holding a control character (a NUL or ``\x01`` crashed lxml after the first image was
    copied; a newline turned classes.txt into 3 lines for 2 classes, and the round trip lost that
    class's boxes)."""
    for c in classes:
        bad = sorted({repr(ch) for ch in c if unicodedata.category(ch) in ("Cc", "Cs")})
        if not c.strip() or bad:
            raise UsageError(f"class name {c[:80]!r}{'...' if len(c) > 80 else ''} cannot be written: "
                             + (f"it holds the control character(s) {', '.join(bad)}" if bad else "it is empty")
                             + "; rename the class in the source")


def utf8_name(name: str) -> str:
    """A file name every format can hold: bytes that are not UTF-8 (``os.fsdecode``'s surrogate
    escapes) become ``_`` (COCO JSON and VOC XML are UTF-8 text; such a name crashed both)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate from JSON text, not a file-name byte
            raw = name.encode("utf-8", "replace")
        return raw.decode("utf-8", "replace").replace("\ufffd", "_")


def output_names(splits: Splits) -> dict[str, str]:
    """Image path -> output file name, unique by stem (case-insensitive) over the whole dataset,
    so a VOC ``Annotations/<stem>.xml`` or a YOLO label never serves two images."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for image in sorted({r.image for recs in splits.values() for r in recs}):
        p = Path(utf8_name(image))
        stem = p.stem
        if stem.lower() in taken:
            stem = f"{p.parent.name}_{p.stem}"
        base, k = stem, 2
        while stem.lower() in taken:
            stem, k = f"{base}_{k}", k + 1
        taken.add(stem.lower())
        names[image] = stem + p.suffix
    return names


# -- VOC ------------------------------------------------------------------------------------------
def voc_corners(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """0-based xyxy -> VOC's integer 1-based inclusive corners (the inverse of
    :func:`detect.data.formats.voc.convert_box`: ``xmin = x1 + 1``, ``xmax = x2``), rounded and kept
    inside the image, at least one pixel wide and high."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xmin, ymin = min(max(round(x1) + 1, 1), width), min(max(round(y1) + 1, 1), height)
    xmax, ymax = min(max(round(x2), xmin), width), min(max(round(y2), ymin), height)
    return xmin, ymin, xmax, ymax


def _sub(parent, tag: str, text: object = None):
    el = etree.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def voc_xml(record: ImageRecord, classes: Sequence[str], filename: str, path: str) -> str:
    """One image's annotation, as labelImg writes it."""
    root = etree.Element("annotation")
    _sub(root, "folder", utf8_name(Path(path).parent.name))
    _sub(root, "filename", filename)
    _sub(root, "path", utf8_name(path))
    _sub(_sub(root, "source"), "database", "Unknown")
    size = _sub(root, "size")
    _sub(size, "width", record.width)
    _sub(size, "height", record.height)
    _sub(size, "depth", 3)
    _sub(root, "segmented", 0)
    for k, (box, label) in enumerate(zip(record.boxes, record.labels)):
        obj = _sub(root, "object")
        _sub(obj, "name", classes[int(label)])
        _sub(obj, "pose", "Unspecified")
        _sub(obj, "truncated", int(bool(record.truncated[k])) if len(record.truncated) else 0)
        _sub(obj, "difficult", int(bool(record.difficult[k])) if len(record.difficult) else 0)
        bb = _sub(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), voc_corners(box, record.width, record.height)):
            _sub(bb, tag, v)
    etree.indent(root, space="\t")
    return etree.tostring(root, encoding="unicode") + "\n"


def plan_voc(out: Path, classes: Sequence[str], splits: Splits, names: dict[str, str]) -> list[Output]:
    plan: list[Output] = []
    done: set[str] = set()
    for split, recs in splits.items():
        for r in recs:
            if r.image in done:  # an image in several splits (VOC's trainval) is written once
                continue
            done.add(r.image)
            name = names[r.image]
            img = out / "JPEGImages" / name
            plan.append(Output(img, image=r.image))
            plan.append(Output(out / "Annotations" / f"{Path(name).stem}.xml",
                               text=lambda r=r, name=name, img=img: voc_xml(r, classes, name, str(img))))
        stems = "".join(f"{Path(names[r.image]).stem}\n" for r in recs)
        plan.append(Output(out / "ImageSets" / "Main" / f"{output_split(split)}.txt", text=lambda s=stems: s))
    merged = [*existing_classes(out / "classes.txt"), *classes]  # converting split by split into one folder
    plan.append(Output(out / "classes.txt", text=lambda: "".join(f"{c}\n" for c in dict.fromkeys(merged))))
    return plan


def existing_classes(path: Path) -> list[str]:
    """The class names of a ``classes.txt`` a previous convert left in the output (none: [])."""
    if not path.is_file():
        return []
    try:
        return [c.strip() for c in read_text(path, "class file").splitlines() if c.strip()]
    except FileReadError as e:
        raise UsageError(f"{e}; choose another output folder") from None


# -- COCO -----------------------------------------------------------------------------------------
def coco_json(records: Sequence[ImageRecord], classes: Sequence[str], names: dict[str, str]) -> str:
    """One split as a COCO detection file (ids 1-based; boxes xywh rounded to 0.01 px)."""
    images, anns = [], []
    for i, r in enumerate(records, 1):
        images.append({"id": i, "file_name": names[r.image], "width": int(r.width), "height": int(r.height)})
        for k, (box, label) in enumerate(zip(r.boxes.tolist(), r.labels.tolist())):
            x, y, w, h = (round(v, 2) for v in xyxy_to_coco(*box))
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": int(label) + 1, "bbox": [x, y, w, h],
                   "area": round(w * h, 2), "iscrowd": 0, "segmentation": []}
            flags = {key: True for key, arr in (("difficult", r.difficult), ("truncated", r.truncated)) if len(arr) and arr[k]}
            if flags:
                ann["attributes"] = flags
            anns.append(ann)
    cats = [{"id": i, "name": c, "supercategory": ""} for i, c in enumerate(classes, 1)]
    doc = {"info": {"description": "written by retail-detect (detect convert)"}, "licenses": [], "categories": cats,
           "images": images, "annotations": anns}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


def plan_coco(out: Path, classes: Sequence[str], splits: Splits, names: dict[str, str]) -> list[Output]:
    plan: list[Output] = []
    for split, recs in splits.items():
        s = output_split(split)
        plan += [Output(out / "images" / s / names[r.image], image=r.image) for r in recs]
        plan.append(Output(out / "annotations" / f"instances_{s}.json", text=lambda recs=recs: coco_json(recs, classes, names)))
    return plan


# -- YOLO -----------------------------------------------------------------------------------------
def yolo_label(record: ImageRecord) -> str:
    """One image's label file: ``class cx cy w h`` per box, normalised, 6 decimals."""
    return "".join(f"{int(label)} " + " ".join(f"{v:.6f}" for v in xyxy_to_yolo(*box, record.width, record.height)) + "\n"
                   for box, label in zip(record.boxes.tolist(), record.labels.tolist()))


def yolo_yaml(classes: Sequence[str], splits: Sequence[str]) -> str:
    """The ``data.yaml``: train/val/test folders relative to its own folder, ``nc``, ``names``.
    A split the source lacks is left out and said in a comment (``train: images/val`` would
    train on the val images)."""
    keys = [s for s in ("train", "val", "test") if s in splits]
    notes = ["# written by retail-detect (detect convert); no 'path': ultralytics resolves the splits",
             "# from this file's folder, so the dataset can be moved"]
    notes += [f"# no {s} split in the source: add '{s}: images/{s}' before training" for s in ("train", "val") if s not in keys]
    body: dict = {k: f"images/{k}" for k in keys}
    body.update(nc=len(classes), names=list(classes))
    return "\n".join(notes) + "\n" + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def existing_yolo(out: Path, classes: Sequence[str]) -> list[str]:
    """The splits a previous convert wrote into ``out`` (its ``data.yaml`` names ``images/<split>``
    and the folder exists), when that ``data.yaml`` has the same class names; other names: a
    usage error (the labels' class ids would mean different classes)."""
    path = out / "data.yaml"
    if not path.exists():
        return []
    try:
        d = load_yaml(path, "data.yaml")
    except FileReadError as e:
        raise UsageError(f"{e}; choose another output folder") from None
    if not isinstance(d, dict):
        return []
    names = d.get("names")
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
    if names != list(classes):
        raise UsageError(f"{path} exists with other classes ({str(names)[:200]}); converting into it would mix class ids: "
                         "convert every split at once, or into another folder")
    return [s for s in ("train", "val", "test") if d.get(s) == f"images/{s}" and (out / "images" / s).is_dir()]


def plan_yolo(out: Path, classes: Sequence[str], splits: Splits, names: dict[str, str]) -> list[Output]:
    plan: list[Output] = []
    for split, recs in splits.items():
        s = output_split(split)
        for r in recs:
            name = names[r.image]
            plan.append(Output(out / "images" / s / name, image=r.image))
            plan.append(Output(out / "labels" / s / f"{Path(name).stem}.txt", text=lambda r=r: yolo_label(r)))
    written = [*existing_yolo(out, classes), *(output_split(s) for s in splits)]
    plan.append(Output(out / "data.yaml", text=lambda: yolo_yaml(classes, written)))
    return plan


# -- writing --------------------------------------------------------------------------------------
def copy_image(src: str, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (temporary file, rename), keeping its mtime; a
    ``dst`` of the same size and mtime (a previous run's copy) is kept."""
    st = os.stat(src)
    try:
        d = os.stat(dst)
        if (d.st_size, d.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            return
    except FileNotFoundError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all(plan: Sequence[Output], progress: Optional[Callable[[int], None]] = None) -> None:
    """Write every planned file (raises OSError on the first that cannot be written)."""
    for k, o in enumerate(plan):
        if o.text is not None:
            atomic_write_text(o.path, o.text())
        else:
            copy_image(o.image, o.path)
        if progress is not None:
            progress(k)
