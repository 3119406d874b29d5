"""YOLO (ultralytics) datasets -> :class:`~detect.data.formats.result.FileResult` rows: ``data.yaml``, its
split lists, and the ``labels/*.txt`` files.

Where YOLO data enters, so its box conversion happens here, once: a label line is
``class cx cy w h``, the box centre and size divided by the image's width W and height H, so
``x1 = (cx - w/2) W, y1 = (cy - h/2) H, x2 = (cx + w/2) W, y2 = (cy + h/2) H`` in our 0-based
pixel xyxy with exclusive x2/y2 (:func:`yolo_to_xyxy`; :func:`xyxy_to_yolo` is the inverse that
``detect convert --to yolo`` writes).

Paths are resolved as ultralytics resolves them (``ultralytics.data.utils.check_det_dataset``,
``img2label_paths`` and ``BaseDataset.get_img_files``):

- dataset root: ``path``; a relative one is taken from the current folder when it exists there,
  else from the YAML's folder (where ultralytics would use its settings' ``datasets_dir``, which
  we do not have); no ``path``: the YAML's folder.
- a split (``train``, ``val``, ``test``; ``validation`` is read as ``val``): a string is
  ``root / value``, and when that does not exist and the value starts with ``../``,
  ``root / value[3:]``: labelling services (Roboflow) write ``train: ../train/images`` in a
  ``data.yaml`` that sits beside ``train/``. A list: each entry ``root / entry``.
- each entry: a folder (every image under it, recursively) or a ``.txt`` list of image paths,
  one a line. Relative lines are taken from the list's folder (ultralytics does so for ``./``
  lines and leaves other relative lines to the current folder; that only works from one folder).
- an image's label file: the last ``/images/`` of its path replaced by ``/labels/`` and the
  extension by ``.txt``; without an ``/images/`` folder, the ``.txt`` beside the image.
- ``names``: a list, or a dict ``{0: a, 1: b}`` with keys 0..nc-1; ``nc`` alone gives
  ``class_0``...; both must agree.

Label files as they come: an empty or a missing label file is a negative image (ultralytics'
"background" images; not a problem); a segmentation line (``class x1 y1 x2 y2 ...``) becomes its
polygon's bounding box; a repeated line is dropped (as ultralytics does). Problems, the rest of the
file kept: a line that is neither 5 numbers nor a polygon (``bad_label``), a class id that is not
an integer in [0, nc) (``unknown_class``), a box whose edge lies past the image by more than 1% of
the image (clipped, ``box_clipped``; less is rounding and clipped silently; ultralytics accepts
values up to 1.01) or entirely outside it (``box_outside``), zero or negative size
(``degenerate_box``). Images
are read for their size only (header; PIL, as everywhere): an unreadable one is left out
(``bad_image``).

No library: ultralytics is a training framework (torch, its own cache files, downloads) rather
than a parser, and the format is five numbers a line; its path rules are reproduced above.
"""

from __future__ import annotations

import os
import reprlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from detect.checks import MAX_CLASSES
from detect.data.formats.boxcheck import clip_box
from detect.data.formats.result import FileResult
from detect.data.images import IMAGE_EXTS, FileStat, read_image_size, walk_files
from detect.errors import UsageError
from detect.readers import MAX_TEXT_BYTES, FileReadError, load_yaml, path_problem, read_file, read_limited

SPLIT_KEYS = ("train", "val", "test")
TOLERANCE = 0.01  # box edges this far past the image (fraction of its size) are rounding, not mistakes


class DataYamlError(UsageError):
    """A ``data.yaml`` that cannot be used: unreadable, no classes, a split that does not exist."""


@dataclass
class YoloSpec:
    """A YOLO dataset.

    Attributes:
        yaml: the ``data.yaml``.
        root: the dataset root (``path``, resolved).
        names: class names; a label's class id indexes this list.
        splits: split name -> resolved entries (folders or ``.txt`` lists), in YAML order.
    """

    yaml: Path
    root: Path
    names: list[str]
    splits: dict[str, list[Path]] = field(default_factory=dict)

    def present(self) -> list[str]:
        """The splits whose entries all exist (Roboflow lists ``test`` even when it has none)."""
        return [s for s, entries in self.splits.items() if all(e.exists() for e in entries)]


def looks_like_data_yaml(d: Any) -> bool:
    """Whether a loaded YAML is an ultralytics data.yaml rather than our dataset YAML."""
    return isinstance(d, dict) and "annotations" not in d and any(k in d for k in ("train", "val", "names", "nc"))


def read_data_yaml(path: str | os.PathLike) -> YoloSpec:
    """Read a ``data.yaml`` and resolve its root and split paths (rules in the module docstring).
    Raises :class:`DataYamlError`."""
    path = Path(path)
    try:
        d = load_yaml(path, "data.yaml")  # bounded, regular file only, alias and depth limits
    except FileReadError as e:
        raise DataYamlError(str(e)) from None
    if not looks_like_data_yaml(d):
        raise DataYamlError(f"{path}: not a YOLO data.yaml (expected 'train', 'val' and 'names' or 'nc')")
    d = dict(d)  # load_yaml's result is shared: never changed in place
    if "val" not in d and "validation" in d:
        d["val"] = d["validation"]
    here = path.resolve().parent
    root = _root(d.get("path"), here, path)
    splits = {k: _entries(root, d[k], k, path) for k in SPLIT_KEYS if d.get(k)}
    if not splits:
        raise DataYamlError(f"{path}: no 'train', 'val' or 'test' paths")
    names = _names(d, path)
    for k in ("train", "val"):  # a missing train folder made the split vanish, and val was trained on
        missing = [e for e in splits.get(k, []) if not e.exists()]
        if missing:
            raise DataYamlError(f"{path}: '{k}: {d[k]}' does not exist ({missing[0]}); fix the path or remove the key")
    return YoloSpec(path.resolve(), root, names, splits)


def _path_text(value: str, key: str, path: Path) -> str:
    problem = path_problem(value)
    if problem:
        raise DataYamlError(f"{path}: '{key}' is not a usable path: {problem}")
    return value


def _root(value: Any, here: Path, path: Path) -> Path:
    if not value:
        return here
    p = Path(os.path.expanduser(_path_text(str(value), "path", path)))
    if p.is_absolute():
        return p.resolve()
    return p.resolve() if p.exists() else (here / p).resolve()


def _entries(root: Path, value: Any, key: str, path: Path) -> list[Path]:
    if isinstance(value, str):
        x = (root / _path_text(value, key, path)).resolve()
        if not x.exists() and value.startswith("../"):
            x = (root / value[3:]).resolve()
        return [x]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [(root / _path_text(v, key, path)).resolve() for v in value]
    raise DataYamlError(f"{path}: '{key}' must be a path or a list of paths, got {value!r}")


def _class_id(k: Any) -> Optional[int]:
    """A ``names`` key as a class id: an int, or a string of digits ("0"); not 0.5, not true."""
    if isinstance(k, bool):
        return None
    if isinstance(k, int):
        return k
    if isinstance(k, str) and k.strip().isdigit() and len(k.strip()) <= 9:
        return int(k)
    return None


def _name(v: Any, path: Path) -> str:
    """A class name: a string, or a number written bare (``names: [1, 2]``); nothing nested."""
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v)
    raise DataYamlError(f"{path}: a class name must be text, got {reprlib.repr(v)}")


def _names(d: dict, path: Path) -> list[str]:
    names, nc = d.get("names"), d.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or not 1 <= nc <= MAX_CLASSES):
        raise DataYamlError(f"{path}: 'nc' must be a number of classes from 1 to {MAX_CLASSES:,}, got {reprlib.repr(nc)}")
    if names is None:
        if nc is None:
            raise DataYamlError(f"{path}: give 'names' (a list or a dict of class names) or 'nc'")
        return [f"class_{i}" for i in range(nc)]
    if isinstance(names, (dict, list)) and len(names) > MAX_CLASSES:
        raise DataYamlError(f"{path}: 'names' lists {len(names):,} classes, more than the limit of {MAX_CLASSES:,}")
    if isinstance(names, dict):
        by_id: dict[int, str] = {}
        for k, v in names.items():
            cid = _class_id(k)
            if cid is None:
                raise DataYamlError(f"{path}: 'names' keys must be class ids 0, 1, ..., got {reprlib.repr(k)}")
            by_id[cid] = _name(v, path)
        if sorted(by_id) != list(range(len(by_id))):
            raise DataYamlError(f"{path}: 'names' keys must be 0..{len(by_id) - 1}, got {reprlib.repr(sorted(by_id))}")
        out = [by_id[i] for i in range(len(by_id))]
    elif isinstance(names, list):
        out = [_name(n, path) for n in names]
    else:
        raise DataYamlError(f"{path}: 'names' must be a list or a dict, got {type(names).__name__}")
    if nc is not None and nc != len(out):
        raise DataYamlError(f"{path}: 'nc: {nc}' but 'names' has {len(out)} entries")
    repeated = sorted(n for n, k in Counter(out).items() if k > 1)  # one pass: out.count() per name took 16 s for 40,000
    if repeated or not out:
        raise DataYamlError(f"{path}: each class name must appear once; repeated: {reprlib.repr(repeated)}" if out
                            else f"{path}: 'names' is empty")
    return out


def list_images(entries: Sequence[Path]) -> tuple[list[FileStat], list[tuple[str, str, str]]]:
    """The images of a split's entries, sorted by path, each once, and problems
    ``(list file, kind, message)`` for listed images that do not exist. Raises
    :class:`DataYamlError` for an entry that does not exist."""
    found: dict[str, FileStat] = {}
    problems: list[tuple[str, str, str]] = []
    for entry in entries:
        if entry.is_dir():
            listing = walk_files(entry, IMAGE_EXTS)[0]
            found.update((st.path, st) for st in listing.stats())
        elif entry.exists():
            try:
                listed = read_file(entry, "image list").decode("utf-8-sig", "replace")
            except FileReadError as e:
                raise DataYamlError(str(e)) from None
            for line in listed.splitlines():
                line = line.strip()
                if not line or line.startswith("#") or os.path.splitext(line)[1].lower() not in IMAGE_EXTS:
                    continue
                p = os.path.abspath(os.path.join(entry.parent, line))
                try:
                    st = os.stat(p)
                except OSError:
                    problems.append((str(entry), "missing_image", f"lists {line}, which does not exist; left out"))
                    continue
                found[p] = FileStat(p, st.st_size, st.st_mtime_ns)
        else:
            raise DataYamlError(f"{entry} does not exist (a split entry of the data.yaml)")
    return [found[p] for p in sorted(found)], problems


def label_path(image: str) -> str:
    """The label file of an image (ultralytics' ``img2label_paths``)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return os.path.splitext(sb.join(image.rsplit(sa, 1)))[0] + ".txt"


def yolo_to_xyxy(cx: float, cy: float, w: float, h: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Normalised centre/size -> 0-based pixel xyxy (the only place YOLO boxes are read)."""
    return (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height


def xyxy_to_yolo(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[float, float, float, float]:
    """0-based pixel xyxy -> normalised ``cx cy w h`` (the inverse of :func:`yolo_to_xyxy`)."""
    return (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height


def _line_box(vals: list[float], width: int, height: int) -> Optional[tuple[tuple[float, float, float, float], str]]:
    """A label line's box in pixels and how it was written, or None when it has a bad length."""
    n = len(vals)
    if n == 5:
        cx, cy, w, h = vals[1:]
        return yolo_to_xyxy(cx, cy, w, h, width, height), f"box (cx {cx:g}, cy {cy:g}, w {w:g}, h {h:g})"
    if n >= 7 and n % 2 == 1:  # class + a polygon of >= 3 points: its bounding box
        xs, ys = vals[1::2], vals[2::2]
        return (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height), f"polygon of {len(xs)} points"
    return None


def parse_labels(text: str, width: int, height: int, names: Sequence[str], problems: list[tuple[str, str]]):
    """The lines of one label file -> ``(flat boxes [x1, y1, x2, y2, ...], class names)`` for a
    ``width`` x ``height`` image; defects go to ``problems`` (kinds in the module docstring)."""
    boxes: list[float] = []
    out: list[str] = []
    seen: dict[tuple[float, ...], int] = {}
    tol = TOLERANCE * min(width, height)
    for ln, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            problems.append(("bad_label", f"line {ln}: {line.strip()[:60]!r} is not a list of numbers; dropped"))
            continue
        got = _line_box(vals, width, height)
        if got is None:
            problems.append(("bad_label", f"line {ln}: {len(vals)} values; a box is 'class cx cy w h' (5 values), "
                                          "a polygon 'class x1 y1 x2 y2 x3 y3 ...'; dropped"))
            continue
        cls = vals[0]
        if not 0 <= cls < len(names) or cls != int(cls):  # range first: NaN and inf fail it
            problems.append(("unknown_class", f"line {ln}: class {parts[0]} is not one of the {len(names)} classes of "
                                              f"the data.yaml (0..{len(names) - 1}); dropped"))
            continue
        key = tuple(vals)
        if key in seen:
            problems.append(("duplicate_box", f"line {ln} repeats line {seen[key]}; dropped"))
            continue
        seen[key] = ln
        name = names[int(cls)]
        box = clip_box(got[0], width, height, f"line {ln} ({name})", got[1], problems, tol)
        if box is not None:
            boxes += box
            out.append(name)
    return boxes, out


def parse_image(image: FileStat, label: str, names: Sequence[str], root: Optional[str] = None) -> FileResult:
    """One image and its label file (missing: a negative image) -> a cache row. The label file
    goes through :func:`detect.readers.read_limited`: a regular file of at most
    :data:`~detect.readers.MAX_TEXT_BYTES`, and a symlink only when it leads inside ``root``
    (the dataset root, a real path)."""
    problems: list[tuple[str, str]] = []
    fail = FileResult(False, "", -1, -1, 0, 0, [], [], [], [], ("", "", ""), problems)
    try:
        width, height = read_image_size(image.path)
    except Exception as e:  # PIL raises several types for bad files
        problems.append(("bad_image", f"image {image.path} cannot be read ({e}); left out"))
        return fail
    read: list[tuple[str, str]] = []
    data = read_limited(label, root, MAX_TEXT_BYTES, read, what="label file", missing_ok=True)
    if data is None:
        problems.append((read[0][0], f"{read[0][1]}; image left out"))
        return fail
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(("read_error", f"not UTF-8 text ({e.reason} at byte {e.start}); image left out"))
        return fail
    boxes, found = parse_labels(text, width, height, names, problems)
    flags = [False] * len(found)
    return FileResult(True, image.path, image.size, image.mtime_ns, width, height, boxes, found, flags, list(flags),
                      ("", "", ""), problems)
