"""Pascal VOC XML -> :class:`~detect.structures.ImageRecord`, tolerant of real-world files.

Where VOC data enters the project, so the one coordinate conversion happens here:
VOC corners are 1-based and inclusive (a box over pixel columns 0..9 is written xmin=1,
xmax=10); ours are 0-based with an exclusive right/bottom edge, so
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (see :func:`convert_box`).

Accepted as they come: any child order (``xmin,xmax,ymin,ymax``), float coordinates, missing
optional tags (``pose``, ``truncated``, ``difficult``, ``segmented``, ``size``), extra elements
(``part``, ``actions``, ``point``, ``occluded``: ignored), URPC's ``<frame>`` for
``<filename>``, any XML declaration, CRLF, non-ASCII text and character references, UTF-16
without a byte-order mark.
Defects become :class:`~detect.structures.Problem` s, never exceptions: unparseable files,
degenerate boxes (``xmax <= xmin`` or ``ymax <= ymin``: dropped), boxes outside the image
(clipped), missing images, a declared ``<size>`` that disagrees with the image (the image wins).
Annotation files come from strangers, so nothing in one is trusted: only regular files inside
the annotation folder are read, up to a size limit; entities are never expanded (a class name
holding one, or a control character, is a ``bad_name``, never silently changed); sizes and
coordinates must be finite and below ``MAX_SIDE``; ``<path>`` is never opened (see
:mod:`detect.data.images`).

Reading the file safely and parsing it with lxml (regular files only, a size limit, no
entities, UTF-16 without a byte-order mark, libxml2's limits reported) is
:mod:`detect.data.formats.xml_file`; this module reads the VOC content of the tree.

Two levels: :func:`parse_file` is class-agnostic (names, not labels: what the cache stores
per file); :func:`parse_voc` maps names to a class list and returns an ``ImageRecord``.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np
from lxml import etree

from detect.data.formats.result import FileResult
from detect.data.formats.xml_file import load_tree
from detect.data.images import ImageIndex, hint_stems, path_hint_target, read_image_size, verify_image
from detect.data.limits import MAX_XML_BYTES  # noqa: F401  (re-exported)
from detect.structures import ImageRecord, Problem

_FALSE = frozenset({"", "0", "0.0", "false", "no", "none", "unspecified"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # tab, newline...: a class name is one line of text
MAX_SIDE = 2**31  # image sides and box coordinates must be below this (int32 sizes in a cache)


def convert_box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """VOC 1-based inclusive corners -> 0-based xyxy with exclusive x2/y2 (the only place the
    shift happens). A 0 written by a 0-based tool becomes -1 and is clipped back to 0."""
    return xmin - 1.0, ymin - 1.0, xmax, ymax


def _text(el) -> str:
    t = el.text
    return t.strip() if t else ""


def _written(el) -> str:
    """An element's content as written, entity references and child elements included
    (``el.text`` stops at the first one: ``x&sec;y`` has the text "x")."""
    return (el.text or "") + "".join(etree.tostring(c, encoding="unicode") for c in el)


def flag_value(t: Optional[str]) -> bool:
    """``<difficult>``/``<truncated>`` text -> bool: "1", "true", "yes", "2.0" are True;
    "0", "", "no", "unspecified" and other words are False."""
    if t == "0":  # the common cases first: this runs for every object
        return False
    if t == "1":
        return True
    t = t.strip().lower() if t else ""
    if t in _FALSE:
        return False
    try:
        return float(t) != 0.0
    except ValueError:
        return t in ("true", "yes")


def size_value(t: Optional[str]) -> int:
    """``<width>``/``<height>`` text -> int pixels (floats rounded); 0 when missing, not a
    finite number, or not below ``MAX_SIDE`` (a cache stores sizes as int32)."""
    try:
        v = int(round(float(t)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # None, "abc", "nan" / "inf"
        return 0
    return v if v < MAX_SIDE else 0


def _size(el) -> tuple[int, int]:
    w = h = 0
    for c in el[:]:  # the last <width>/<height> wins
        tag = c.tag
        if tag == "width":
            w = size_value(c.text)
        elif tag == "height":
            h = size_value(c.text)
    return w, h


def _objects(objects, width: int, height: int, problems: list[tuple[str, str]]):
    """The ``<object>`` elements -> ``(boxes, names, difficult, truncated)``: boxes flat, 0-based
    and clipped (:func:`check_box`) against ``width`` x ``height``, one name and flag per kept box;
    each object dropped (no or a bad name, no ``<bndbox>``, a coordinate missing, not a number or
    out of range, a degenerate box, or one outside the image) is a problem.

    This runs for every object of every file: one pass over each object's children, flags and
    the usual box (inside the image) decided inline, helpers only for what gets reported."""
    boxes: list[float] = []
    names: list[str] = []
    difficult: list[bool] = []
    truncated: list[bool] = []
    clean = _CLEAN_NAMES
    for i, obj in enumerate(objects, 1):  # i: the 1-based object number used in messages
        name, bb, diff, trunc = "", None, False, False
        for c in obj[:]:  # direct children only: <part> boxes nested deeper are ignored
            tag = c.tag
            if tag == "name":
                if len(c):  # never change a class name silently
                    name = None
                    _bad_name(_written(c).strip(), i, "holds markup (an entity reference is never expanded)", problems)
                    break
                t = c.text
                name = t.strip() if t else ""
                if name not in clean:
                    if _CONTROL.search(name):
                        name = None
                        _bad_name(t.strip(), i, "holds a control character", problems)
                        break
                    if len(name) <= 256 and len(clean) < 4096:  # bounded: names come from strangers too
                        clean.add(name)
            elif tag == "bndbox":
                bb = c
            elif tag == "difficult":
                diff = flag_value(c.text)
            elif tag == "truncated":
                trunc = flag_value(c.text)
        if name is None:
            continue
        if not name:
            problems.append(("bad_box", f"object {i} has no <name>; dropped"))
            continue
        if bb is None:
            problems.append(("bad_box", f"object {i} ({name}) has no <bndbox>; dropped"))
            continue
        xmin = ymin = xmax = ymax = None
        for c in bb[:]:  # any child order
            tag = c.tag
            t = c.text if not len(c) else _written(c)  # "1&e;0" is not a number (its text alone is "1")
            if tag == "xmin":
                xmin = t
            elif tag == "ymin":
                ymin = t
            elif tag == "xmax":
                xmax = t
            elif tag == "ymax":
                ymax = t
        try:  # float() accepts surrounding whitespace and "12.0"
            x1, y1, x2, y2 = float(xmin), float(ymin), float(xmax), float(ymax)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            _not_a_number(i, name, (xmin, ymin, xmax, ymax), problems)
            continue
        if 1.0 <= x1 < x2 <= width and 1.0 <= y1 < y2 <= height:  # the usual box (sides < MAX_SIDE)
            boxes += (x1 - 1.0, y1 - 1.0, x2, y2)  # what check_box returns for it, cheaper
        else:
            vals = [x1, y1, x2, y2]
            if not (-MAX_SIDE < x1 < MAX_SIDE and -MAX_SIDE < y1 < MAX_SIDE and -MAX_SIDE < x2 < MAX_SIDE
                    and -MAX_SIDE < y2 < MAX_SIDE):  # NaN fails every comparison
                bad = [v for v in vals if not abs(v) < MAX_SIDE]  # 1e308 is finite here but inf as the cache's float32
                what = "non-finite coordinate" if not all(map(math.isfinite, bad)) else f"coordinate out of range (not below {MAX_SIDE})"
                problems.append(("bad_box", f"object {i} ({name}): {what} in {[_num(v) for v in vals]}; dropped"))
                continue
            box = check_box(vals, width, height, i, name, problems)
            if box is None:
                continue
            boxes += box
        names.append(name)
        difficult.append(diff)
        truncated.append(trunc)
    return boxes, names, difficult, truncated


_CLEAN_NAMES: set[str] = set()  # class names already checked for control characters (a few per dataset)


def _bad_name(name: str, i: int, what: str, problems: list[tuple[str, str]]) -> None:
    problems.append(("bad_name", f"object {i}: class name {name!r} {what}; write the name out as plain text on one line; dropped"))


def _not_a_number(i: int, name: str, raw: tuple, problems: list[tuple[str, str]]) -> None:
    """The problem for the first coordinate (xmin, ymin, xmax, ymax) missing or not a number."""
    for key, t in zip(("xmin", "ymin", "xmax", "ymax"), raw):
        try:
            float(t)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            what = f"has no <{key}>" if t is None else f"<{key}> {t.strip()!r} is not a number"
            problems.append(("bad_box", f"object {i} ({name}): {what}; dropped"))
            return


def _num(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) and abs(v) < 1e15 else f"{v:g}"


def check_box(vals: Sequence[float], width: int, height: int, i: int, name: str, problems: list[tuple[str, str]]):
    """Validate one box written in VOC coordinates against a ``width`` x ``height`` image
    (0 = unknown: no clipping) and return it 0-based and clipped, or None when dropped."""
    xmin, ymin, xmax, ymax = vals
    if xmax <= xmin or ymax <= ymin:
        axis = f"xmax {_num(xmax)} <= xmin {_num(xmin)}" if xmax <= xmin else f"ymax {_num(ymax)} <= ymin {_num(ymin)}"
        problems.append(("degenerate_box", f"object {i} ({name}): {axis} (zero or negative size); dropped"))
        return None
    x1, y1, x2, y2 = convert_box(xmin, ymin, xmax, ymax)
    if width <= 0 or height <= 0:
        return x1, y1, x2, y2
    if x1 < 0.0:
        x1 = 0.0  # xmin == 0 (a 0-based labeller) lands here silently; xmin < 0 is reported below
    if y1 < 0.0:
        y1 = 0.0
    if xmin < 0 or ymin < 0 or xmax > width or ymax > height:  # xmax == width is legal
        written = f"({_num(xmin)}, {_num(ymin)}, {_num(xmax)}, {_num(ymax)})"
        x1, y1 = min(x1, width), min(y1, height)
        x2, y2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            problems.append(("box_outside", f"object {i} ({name}): box {written} lies outside the {width}x{height} image; dropped"))
            return None
        problems.append(("box_clipped", f"object {i} ({name}): box {written} extends past the {width}x{height} image; clipped"))
    return x1, y1, x2, y2


def resolve_image(
    xml_path: str,
    images: Optional[ImageIndex],
    xml_rel_dir: str,
    require_image: bool,
    width: int,
    height: int,
    hints: tuple[str, str, str],
    problems: list[tuple[str, str]],
    verify_images: bool = False,
) -> tuple[bool, str, int, int, int, int]:
    """Find the annotation's image and settle the size boxes are checked against.

    Returns ``(ok, image, image_size, image_mtime_ns, width, height)``: the image's real size
    wins over the declared ``width`` x ``height``; 0 x 0 when neither is known. Problems
    (``bad_image``, ``size_mismatch``, ``image_outside``, ``missing_image``, ``missing_size``)
    go to ``problems``. ``verify_images`` decodes the whole image (:func:`verify_image`): one
    that fails is a ``corrupt_image`` and treated as missing.
    """
    filename, frame, path = hints
    image, img_size, img_mtime = "", -1, -1
    ok = True
    if images is not None:
        found = images.find(xml_path, xml_rel_dir, filename, frame, path)
        if found is not None:
            image, img_size, img_mtime = found
            try:
                iw, ih = read_image_size(image)
            except Exception as e:  # PIL raises several types for bad files
                problems.append(("bad_image", f"image {image} cannot be read ({e}); treated as missing"))
                image, img_size, img_mtime = "", -1, -1
            else:
                kind, what = verify_image(image, (iw, ih)) if verify_images else ("", "")
                if kind == "corrupt_image":
                    problems.append((kind, f"image {image} {what}; treated as missing"))
                    image, img_size, img_mtime = "", -1, -1
                else:
                    if kind:
                        problems.append((kind, f"image {image} {what}"))
                    if width > 0 and height > 0 and (width, height) != (iw, ih):
                        problems.append(("size_mismatch", f"<size> says {width}x{height} but image {image} is {iw}x{ih}; using the image's size"))
                    width, height = iw, ih
        elif target := path_hint_target(xml_path, path):
            problems.append(("image_outside", f"<path> {path} names {target}, which is not an image under "
                                              f"{', '.join(images.roots)}; not read (images are found by name there only)"))
        if not image and require_image:
            stem = os.path.splitext(os.path.basename(xml_path))[0]
            tried = ", ".join(hint_stems(stem, filename, frame, path))
            problems.append(("missing_image", f"no image found (looked for {tried} in {', '.join(images.roots)}); record left out"))
            ok = False
    if width <= 0 or height <= 0:
        width = height = 0
        if ok:
            problems.append(("missing_size", "no usable <size> and no image to read it from: size unknown, boxes not clipped (give --images)"))
    return ok, image, img_size, img_mtime, width, height


def _failed(problems: list[tuple[str, str]], stat: Sequence[int] = (-1, -1)) -> FileResult:
    """The result of a file that yields no record (unreadable, not XML, not VOC)."""
    return FileResult(False, "", -1, -1, 0, 0, [], [], [], [], ("", "", ""), problems, stat[0], stat[1])


def parse_file(xml_path: str, images: Optional[ImageIndex] = None, *, xml_rel_dir: str = "", require_image: bool = False,
               root: str = "", max_bytes: int = MAX_XML_BYTES, verify_images: bool = False) -> FileResult:
    """Parse one VOC XML file without a class list.

    Args:
        xml_path: the annotation file (absolute, so images beside it are found).
        images: where to look for its image (None: do not look; the XML's ``<size>`` is used).
        xml_rel_dir: the XML's folder relative to the annotation root, for per-class layouts.
        require_image: a missing image makes the file unusable (``ok=False``) and is reported;
            otherwise the record is kept with ``image=""`` (annotation-only caches).
        root: the annotation folder (a real path): a symlink pointing out of it is not read.
        max_bytes: larger files are not read (``too_large``).
        verify_images: decode the image fully, not only its header (see :func:`resolve_image`).
    """
    problems: list[tuple[str, str]] = []
    stat = [-1, -1]  # the file's size and mtime as read (a first build's fingerprint)
    root = load_tree(xml_path, root, max_bytes, problems, stat)
    if root is None:
        return _failed(problems, stat)
    if root.tag != "annotation":
        problems.append(("not_voc", f"root element is <{root.tag}>, not <annotation>: not a Pascal VOC file; skipped"))
        return _failed(problems, stat)

    filename = frame = path = ""
    width = height = 0
    objects = []
    for c in root[:]:  # a list at once: ~20% cheaper than iterating lxml children one by one
        tag = c.tag
        if tag == "object":
            objects.append(c)
        elif tag == "size":
            width, height = _size(c)
        elif tag == "filename":
            filename = _text(c)
        elif tag == "frame":  # URPC underwater contest files
            frame = _text(c)
        elif tag == "path":
            path = _text(c)
    hints = (filename, frame, path)

    ok, image, img_size, img_mtime, width, height = resolve_image(
        xml_path, images, xml_rel_dir, require_image, width, height, hints, problems, verify_images)

    boxes, names, difficult, truncated = _objects(objects, width, height, problems)
    return FileResult(ok, image, img_size, img_mtime, width, height, boxes, names, difficult, truncated, hints, problems,
                      stat[0], stat[1])


def unknown_class_problems(unknown: Iterable[str]) -> list[tuple[str, str]]:
    """One ``unknown_class`` problem per distinct name of ``unknown`` (the names of one file's
    boxes whose class is not in the list), in first-seen order, with its box count."""
    return [("unknown_class", f"class {n!r} is not in the class list; {k} box{'es' if k > 1 else ''} dropped")
            for n, k in Counter(unknown).items()]


def map_classes(names: Sequence[str], class_index: dict[str, int]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Labels for ``names`` (int64[N], -1 for names not in ``class_index``) and one
    ``unknown_class`` problem per unknown name with its box count."""
    labels = np.fromiter((class_index.get(n, -1) for n in names), np.int64, len(names))
    return labels, unknown_class_problems(n for n, lab in zip(names, labels.tolist()) if lab < 0)


def parse_voc(
    xml_path: str | os.PathLike,
    classes: Sequence[str],
    images: Optional[ImageIndex | str | os.PathLike] = None,
    *,
    require_image: bool = False,
) -> tuple[Optional[ImageRecord], list[Problem]]:
    """One VOC XML file -> ``(ImageRecord or None, problems)``.

    Args:
        xml_path: the annotation file.
        classes: class names; label = index in this list. Boxes of other classes are dropped
            and reported (collect names first with :func:`parse_file` to build a list).
        images: an :class:`ImageIndex` or a folder to search for the image (None: use the
            XML's ``<size>``; ``record.image`` stays "").
        require_image: see :func:`parse_file`.

    Returns:
        The record (boxes float32[N, 4] xyxy 0-based, clipped; labels int64[N]; difficult and
        truncated bool[N]) or None when the file is unusable, and every problem found, each
        naming ``xml_path``.
    """
    xml_path = os.path.abspath(xml_path)
    if images is not None and not isinstance(images, ImageIndex):
        images = ImageIndex.scan([images])
    r = parse_file(xml_path, images, require_image=require_image)
    labels, class_problems = map_classes(r.names, {c: i for i, c in enumerate(classes)})
    problems = [Problem(xml_path, k, m) for k, m in r.problems + class_problems]
    if not r.ok:
        return None, problems
    keep = labels >= 0
    boxes = np.asarray(r.boxes, np.float32).reshape(-1, 4)  # flat [4N] -> (N, 4)
    record = ImageRecord(
        image=r.image,
        width=r.width,
        height=r.height,
        boxes=boxes[keep],
        labels=labels[keep],
        difficult=np.asarray(r.difficult, bool)[keep] if r.difficult else np.zeros(0, bool),
        truncated=np.asarray(r.truncated, bool)[keep] if r.truncated else np.zeros(0, bool),
        annotation=xml_path,
    )
    return record, problems
