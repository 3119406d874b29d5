"""Gaps: empty stretches of a shelf row where products should stand (out of stock).

The "lightweight out-of-stock" rule, on the columns of :mod:`detect.audit.facings`: between two
neighbouring columns of a row, the free shelf ``free`` (from the left one's right edge to the
right one's left edge) is a gap when, beyond the usual spacing ``s``, it holds more than
``ratio - 1`` of the wider neighbour's width ``w``:

    free - s  >  (ratio - 1) * w          (ratio 1.55 by default, :data:`RATIO`)

that is, the neighbours stand more than ``ratio`` usual pitches apart. Between two different
products the missing one may be neither's, so the stretch is a gap when, beyond the usual
spacing, it holds a narrow product of the row (the :data:`NARROW` quantile of its facings'
widths): a can missing between two cereal boxes is found, the wide spacing between two
positions of narrow bottles is not. ``s`` is the row's
median spacing between neighbours of the same kind: two facings of one product stand closer
than two different products (planogram positions are spaced), so a pair of the same product
is compared with same-product pairs, a pair of different ones with different-product pairs.
The stretch holds ``k = max(1, round((free - s + s') / (w' + s')))`` empty facings (``s'`` the
same-product spacing), one slot box each: between two facings of one product (``w'`` theirs),
evenly spaced between them, their mean width and height; at a row's end, beside the end
product, its width and height; between two different products (the last facings of one
position, the first of the next, or a whole position of another product) ``w'`` is the wider
one's (fewer facings are likelier than many narrow ones), one more spacing is taken out of the
stretch, and the rest is cut into ``k`` equal slots as high as the geometric mean of the
neighbours' heights (the missing product is either one's, or another: the mean is as close to
the one as to the other). At the
ends of a row the free shelf is measured to the shelf's edge (``shelf_x``: the outermost
products of the photo's other rows by default, or the image edges) with half the spacing, and
must hold :data:`END_FILL` of the end product: a product standing mostly beyond the edge is
not detected, and its sliver of shelf is no gap. An empty row (:attr:`Row.empty`) is one gap
over the whole shelf. A row whose products stand below the photo's bottom edge (only their
tops in view, :attr:`Row.cut`) has no gaps: its shelf is not in the photo; nor has a row whose
products stand mostly above its top edge (only their feet in view, :attr:`Row.above`). An
empty facing less than :data:`SEEN` in the photo (a slot of a tilted row where the shelf leaves
the photo) is not reported: too little of it shows to tell it from the shelf beyond.

Anything detected on the shelf fills it: a product lying down or turned (a box of any class,
also one the caller marks unknown with label -1) is a column like any other, so it is never a
gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from detect.audit.facings import Column
from detect.audit.rows import Row, Rows

RATIO = 1.55  # tuned on dense shelves of seed 7 (bench/audit.py: 1.35, 1.45, 1.55, 1.65 tried)
END_FILL = 0.7  # at a row's end the free shelf must hold this much of the end product (a product mostly
# outside the shelf's edge, or the photo's, is not detected: its place is not a gap)
NARROW = 0.1  # between two different products a gap must hold the row's narrow products: this quantile of its widths
SEEN = 0.5  # an empty facing less than this much inside the photo is not reported
FIT = 0.35  # a facing count that leaves more than this much of a facing over is a poor fit


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


def _spacings(row: list[Column], ratio: float) -> tuple[float, float]:
    """The row's median spacing between neighbours of one product and of different ones (the
    latter falls back to the former, and that to 0, when the row has no such pair); spacings
    that are gaps by themselves (over ``ratio - 1`` of the wider neighbour) are left out."""
    pairs = [(a, b, max(0.0, b.x0 - a.x1)) for a, b in zip(row, row[1:])]
    usual = [(a, b, sp) for a, b, sp in pairs if sp <= (ratio - 1) * max(a.width, b.width)]
    same = [sp for a, b, sp in usual if a.label == b.label]
    diff = [sp for a, b, sp in usual if a.label != b.label]
    s_same = float(np.median(same)) if same else (float(np.median(diff)) if diff else 0.0)
    return s_same, float(np.median(diff)) if diff else s_same


def _facings_in(room: float, near: list[Column], s: float) -> tuple[int, Column]:
    """How many facings fit ``room`` (free shelf beyond the usual spacing ``s``), and of which
    of the ``near`` columns' products: the one that fits with the fewest facings, unless it
    leaves more than :data:`FIT` of a facing over where another fits better."""
    fits = []
    for c in near:
        k = max(1, int(round((room + s) / (c.width + s))))
        fits.append((k, abs(room - (k * c.width + (k - 1) * s)) / c.width, c))
    fits.sort(key=lambda f: f[0])
    good = [f for f in fits if f[1] <= FIT]
    k, _, c = good[0] if good else min(fits, key=lambda f: f[1])
    return k, c


def find_gaps(cols: list[list[Column]], rows: Rows, boxes: np.ndarray, names: list[str], *,
              shelf_x: Optional[tuple[float, float]] = None, ratio: float = RATIO,
              image_size: Optional[tuple[int, int]] = None) -> list[Gap]:
    """The gaps of every row, top to bottom and left to right (see the module docstring).

    Args:
        cols: :func:`~detect.audit.facings.columns` of ``rows``.
        boxes (float32[N, 4]): the boxes the rows were found from (for product heights).
        shelf_x: the shelf's left and right edge (default: :func:`shelf_extent`).
        image_size: (width, height) of the photo: gap boxes are clipped to it, and rows
            standing below its bottom edge get none.
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
        if row.cut or row.above:
            continue  # the shelf is below the photo (only the tops of its products show) or its products above it
        s_same, s_diff = _spacings(rc, ratio)
        heights = [column_height(c, boxes) for c in rc]
        narrow = float(np.quantile([c.width for c in rc], NARROW))  # a narrow product of this row
        for i in range(-1, len(rc)):
            j = i + 1
            left = rc[i] if i >= 0 else None
            right = rc[j] if j < len(rc) else None
            xl = left.x1 if left else X0
            xr = right.x0 if right else X1
            near = [c for c in (left, right) if c is not None]
            if left and right:
                s = s_same if left.label == right.label else s_diff
            else:
                s = s_same / 2
            room = (xr - xl) - s
            if left and right and left.label != right.label:  # another product may stand there: a narrow one must fit
                if room <= narrow:
                    continue
            elif room <= ((ratio - 1) if left and right else END_FILL) * max(c.width for c in near):
                continue  # one product's facings apart (or at an end: a product would show)
            if left and right and left.label == right.label:  # missing facings of one position: evenly between
                k, _ = _facings_in(room, near, s_same)
                pitch = (right.cx - left.cx) / (k + 1)
                w, h = (left.width + right.width) / 2, (heights[i] + heights[j]) / 2
                slots = [row.band(left.cx + q * pitch - w / 2, left.cx + q * pitch + w / 2, h) for q in range(1, k + 1)]
                out.append(Gap(row.index, row.band(xl, xr, h), slots, left.label, right.label,
                               _name(names, left), _name(names, right)))
            elif len(near) == 1:  # at a row's end: facings of the end product, beside it
                k, c = _facings_in(room, near, s_same)
                out.append(_gap(row, xl, xr, k, s_same, heights[rc.index(c)], left, right, names, like=c))
            else:  # between two products: the wider sets the count (fewer, likelier facings); the stretch
                # also holds the spacing on the far side of the missing facings
                k, _ = _facings_in(room - s_diff, [max(near, key=lambda q: q.width)], s_same)
                h = float(np.sqrt(heights[i] * heights[j]))  # either neighbour's product, or another: between their heights
                out.append(_gap(row, xl, xr, k, s_same, h, left, right, names, margin=(s_same + s_diff) / 2))
    return clip_gaps(out, *image_size) if image_size is not None else out


def column_height(c: Column, boxes: np.ndarray) -> float:
    """Height of column ``c`` (a stack: from its lowest bottom to its highest top)."""
    return float(boxes[c.members, 3].max() - boxes[c.members, 1].min())


def clip_gaps(gaps: list[Gap], W: int, H: int) -> list[Gap]:
    """``gaps`` clipped to a W x H photo: slots less than :data:`SEEN` inside it are dropped,
    and so are gaps left with none."""
    clip = lambda b: (max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(W)), min(b[3], float(H)))  # noqa: E731
    area = lambda b: max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)  # noqa: E731
    out = []
    for g in gaps:
        slots = [clip(s) for s in g.slots if area(clip(s)) >= SEEN * area(s) and area(clip(s)) > 0]
        if slots:
            g.box, g.slots = clip(g.box), slots
            out.append(g)
    return out


def _photo_pitch(cols: list[list[Column]]) -> float:
    """Median centre distance of neighbouring columns over the photo (0 when unknown)."""
    d = [b.cx - a.cx for row in cols for a, b in zip(row, row[1:])]
    if d:
        return float(np.median(d))
    w = [c.width for row in cols for c in row]
    return float(np.median(w)) if w else 0.0


def _gap(row: Row, xl: float, xr: float, k: int, s: float, h: float, left: Optional[Column],
         right: Optional[Column], names: list[str], like: Optional[Column] = None, margin: float = 0.0) -> Gap:
    """A gap from ``xl`` to ``xr`` on ``row`` holding ``k`` facings of height ``h``. With
    ``like`` (the neighbour the missing product is taken to be) the slots are its width, ``s``
    apart, beside it (the empty facings of its position); else the stretch less ``margin`` at
    each end is cut into ``k`` equal slots ``s`` apart."""
    if like is not None and k * like.width + (k - 1) * s <= xr - xl - s:
        step = like.width + s
        start = xl + s if like is left else xr - s - k * like.width - (k - 1) * s
        slots = [row.band(start + q * step, start + q * step + like.width, h) for q in range(k)]
    else:
        lo, hi = (xl + margin, xr - margin) if xr - xl > 2 * margin + k else (xl, xr)
        step = (hi - lo + s) / k
        slots = [row.band(lo + q * step, lo + (q + 1) * step - s, h) for q in range(k)]
    return Gap(row.index, row.band(xl, xr, h), slots, left.label if left else -1, right.label if right else -1,
               _name(names, left), _name(names, right))


def _name(names: list[str], c: Optional[Column]) -> str:
    return (names[c.label] if 0 <= c.label < len(names) else "unknown") if c else ""
