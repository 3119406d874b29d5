"""Gaps: empty stretches of a shelf row where products should stand (out of stock).

The "lightweight out-of-stock" rule, on the columns of :mod:`detect.audit.facings`: between two
neighbouring columns of a row, the free shelf ``free`` (from the left one's right edge to the
right one's left edge) is a gap when

    free + w  >  ratio * (w + s)          (ratio 1.4 by default; free - s > (ratio - 1) * (w + s))

where ``w`` is the local median product width and ``s`` the local median spacing (the median
width of the up to :data:`WINDOW` columns on each side, and the median free space between
them): the centre distance of the neighbours, were they of the usual width, is more than 1.4
usual pitches. It holds ``k = max(1, round((free - s) / (w + s)))`` empty facings, one slot box
each. At the ends of a row the free shelf is measured to the shelf's edge (``shelf_x``: the
outermost products of the photo's other rows by default, or the image edges), with a margin
of ``s / 2``. An empty row (:attr:`Row.empty`) is one gap over the whole shelf.

Anything detected on the shelf fills it: a product lying down or turned (a box of any class,
also one the caller marks unknown with label -1) is a column like any other, so it is never a
gap. Gap boxes reach from the base line up the local median product height.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from detect.audit.facings import Column
from detect.audit.rows import Row, Rows

RATIO = 1.4
WINDOW = 3  # columns on each side that set the local width and spacing


@dataclass
class Gap:
    """An empty stretch of a row.

    Attributes:
        row: row index (0 = top).
        box: xyxy of the whole stretch (pixels).
        slots: one xyxy box per empty facing (``len(slots)`` facings are missing).
        left, right: label of the product to its left / right, -1 at the shelf's edge.
        left_name, right_name: their names ("" at the shelf's edge).
    """

    row: int
    box: tuple[float, float, float, float]
    slots: list[tuple[float, float, float, float]] = field(default_factory=list)
    left: int = -1
    right: int = -1
    left_name: str = ""
    right_name: str = ""

    @property
    def facings(self) -> int:
        return len(self.slots)

    def to_dict(self) -> dict:
        r = lambda b: [round(float(v), 1) for v in b]  # noqa: E731
        return {"row": self.row + 1, "box": r(self.box), "facings": self.facings, "slots": [r(s) for s in self.slots],
                "left": self.left_name or None, "right": self.right_name or None}


def shelf_extent(cols: list[list[Column]]) -> Optional[tuple[float, float]]:
    """(x0, x1): from the leftmost to the rightmost column of any row, None when there is none."""
    xs = [(c.x0, c.x1) for row in cols for c in row]
    if not xs:
        return None
    return min(a for a, _ in xs), max(b for _, b in xs)


def _local(row: list[Column], i: int, j: int) -> tuple[float, float]:
    """Median width and spacing of the columns around the pair (i, j)
    (j = i + 1; i = -1 or j = len(row) at the row's ends), the pair's own spacing left out."""
    lo, hi = max(0, i - WINDOW + 1), min(len(row), j + WINDOW)
    near = row[lo:hi]
    w = float(np.median([c.width for c in near]))
    spaces = [max(0.0, b.x0 - a.x1) for k, (a, b) in enumerate(zip(near, near[1:]), start=lo) if k != i]
    spaces = [v for v in spaces if v < RATIO * w]  # other gaps are not spacing
    s = float(np.median(spaces)) if spaces else 0.05 * w
    return w, s


def find_gaps(cols: list[list[Column]], rows: Rows, boxes: np.ndarray, names: list[str], *,
              shelf_x: Optional[tuple[float, float]] = None, ratio: float = RATIO) -> list[Gap]:
    """The gaps of every row, top to bottom and left to right (see the module docstring).

    Args:
        cols: :func:`~detect.audit.facings.columns` of ``rows``.
        boxes (float32[N, 4]): the boxes the rows were found from (for product heights).
        shelf_x: the shelf's left and right edge (default: :func:`shelf_extent`).
    """
    edge = shelf_x or shelf_extent(cols)
    if edge is None:
        return []
    X0, X1 = edge
    pitch_all = _photo_pitch(cols)
    out: list[Gap] = []
    for row, rc in zip(rows.rows, cols):
        if not rc:
            if row.empty and pitch_all:
                k = max(1, int(round((X1 - X0) / pitch_all)))
                out.append(_gap(row, X0, X1, k, 0.0, row.height, None, None, names))
            continue
        heights = [float(boxes[c.members[0], 3] - boxes[c.members[0], 1]) for c in rc]
        for i in range(-1, len(rc)):
            j = i + 1
            w, s = _local(rc, i, j)
            left = rc[i] if i >= 0 else None
            right = rc[j] if j < len(rc) else None
            xl = left.x1 if left else X0
            xr = right.x0 if right else X1
            margin = s if (left and right) else s / 2  # the spacing a full shelf has here
            if (xr - xl) - margin <= (ratio - 1) * (w + s):  # free + w <= ratio * (w + s) between two products
                continue
            k = max(1, int(round(((xr - xl) - margin) / (w + s))))
            lo, hi = max(0, i - WINDOW + 1), min(len(rc), j + WINDOW)
            h = float(np.median(heights[lo:hi]))
            out.append(_gap(row, xl, xr, k, s, h, left, right, names))
    return out


def _photo_pitch(cols: list[list[Column]]) -> float:
    """Median centre distance of neighbouring columns over the photo (0 when unknown)."""
    d = [b.cx - a.cx for row in cols for a, b in zip(row, row[1:])]
    if d:
        return float(np.median(d))
    w = [c.width for row in cols for c in row]
    return float(np.median(w)) if w else 0.0


def _gap(row: Row, xl: float, xr: float, k: int, s: float, h: float, left: Optional[Column],
         right: Optional[Column], names: list[str]) -> Gap:
    """A gap from ``xl`` to ``xr`` on ``row`` holding ``k`` facings of height ``h``, each slot
    the k-th part of the stretch less half a spacing on each side."""
    step = (xr - xl) / k
    slots = [row.band(xl + q * step + s / 2, xl + (q + 1) * step - s / 2, h) for q in range(k)]
    name = lambda c: (names[c.label] if 0 <= c.label < len(names) else "unknown") if c else ""  # noqa: E731
    return Gap(row.index, row.band(xl, xr, h), slots, left.label if left else -1, right.label if right else -1,
               name(left), name(right))
