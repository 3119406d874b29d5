"""Checking one box that a format module has already converted to our convention (float xyxy,
0-based pixels, exclusive x2/y2) against its image: shared by :mod:`detect.data.formats.yolo` and
:mod:`detect.data.formats.coco`. (VOC keeps its own :func:`detect.data.formats.voc.check_box`, which works on
the 1-based corners as written.)

Problems are ``(kind, message)`` pairs, as in :class:`detect.data.formats.result.FileResult`; ``what``
names the box the way its file does ("line 3 (cup)", "annotation 17 (cup)") and ``written``
repeats its coordinates as written, so a message says what to fix where.
"""

from __future__ import annotations

import math
from typing import Optional


def clip_box(
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    what: str,
    written: str,
    problems: list[tuple[str, str]],
    tol: float = 0.0,
) -> Optional[tuple[float, float, float, float]]:
    """``box`` clipped to a ``width`` x ``height`` image, or None when it is unusable.

    Non-finite coordinates (``bad_box``) and zero or negative size (``degenerate_box``) drop
    the box; a box entirely outside the image is dropped (``box_outside``); one that extends
    past an edge by more than ``tol`` pixels is clipped and reported (``box_clipped``), by less
    it is clipped silently (float rounding in the file, not a labelling mistake).
    """
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        problems.append(("bad_box", f"{what}: non-finite coordinate in {written}; dropped"))
        return None
    if x2 <= x1 or y2 <= y1:
        problems.append(("degenerate_box", f"{what}: {written} has zero or negative size; dropped"))
        return None
    c1, d1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    c2, d2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if c2 <= c1 or d2 <= d1:
        problems.append(("box_outside", f"{what}: {written} lies outside the {width}x{height} image; dropped"))
        return None
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        problems.append(("box_clipped", f"{what}: {written} extends past the {width}x{height} image; clipped"))
    return c1, d1, c2, d2
