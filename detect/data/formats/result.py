"""What every format's reader returns per annotation file or image, and what the cache stores per
file (:func:`detect.data.cache.columns.pack`): class names, not labels, so a cache can be built
before the class list is known."""

from __future__ import annotations

from typing import NamedTuple


class FileResult(NamedTuple):
    """Class-agnostic result of one annotation file (VOC XML) or image (YOLO, COCO): what the cache
    keeps per file.

    ``boxes`` is flat ``[x1, y1, x2, y2, ...]`` (0-based, clipped) so a chunk of results
    pickles cheaply between processes; ``names``/``difficult``/``truncated`` run parallel to
    it, one entry per kept box. ``ok`` is False when the file yields no usable record
    (unparseable, not of its format, or its image is required and missing). ``width``/``height`` are 0
    when neither ``<size>`` nor the image tells them. ``image`` is "" when none was found.
    """

    ok: bool
    image: str
    image_size: int
    image_mtime_ns: int
    width: int
    height: int
    boxes: list[float]
    names: list[str]
    difficult: list[bool]
    truncated: list[bool]
    hints: tuple[str, str, str]  # (<filename>, <frame>, <path>) as written, for image re-lookup
    problems: list[tuple[str, str]]  # (kind, message)
    xml_size: int = -1  # the annotation file's size and mtime (ns) as read; -1: not known
    xml_mtime_ns: int = -1
