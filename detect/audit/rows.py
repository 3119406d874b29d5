"""Shelf rows from the boxes of the products standing on them.

Products stand on a shelf: the bottoms of the boxes of one row lie on one line, the row's
*base line* (tilted when the phone was, with a different slope per row under perspective).
Products stacked on other products (chocolate bars, boxes) sit on a box, not on the base, and
belong to the row of the box under them. The rule:

1. A box whose bottom touches the top of a box under it (x-overlap >= ``stack_overlap`` of the
   narrower one, within ``stack_tol`` of the lower box's height) is a *stack candidate*; the
   others stand on a base line. Under a tilt ``a`` (the photo's median, step 2) the box of a
   product of width ``w`` may be up to ``|a| * w`` taller than the product, so the boxes of a
   stack of wide, flat bars on a tilted shelf overlap by that much more.
2. Standing boxes are chained left to right: each links to the nearest box to its right whose
   bottom is at the same height (within ``chain_tol`` of the smaller height, after the
   photo's median tilt is taken out). Chains follow a tilted or keystoned row step by step,
   so no single global angle has to fit every row.
3. Each chain gets a base line (least squares over its bottoms; the median tilt when it is
   too short to fit one); chains whose lines are within ``merge_tol`` of the median product
   height where the shorter chain stands are one row (rows are a product's height apart);
   rows are sorted top to bottom.
4. Every box joins the row whose base line is nearest its bottom; a stack candidate whose
   bottom is on no base line joins the row of the box it sits on. A short row whose base
   line lies inside the product band of the row below (a stack whose lowest unit is hidden)
   joins that row, and so does a short row less than half the usual shelf spacing above it
   or below the row above (:func:`_without_floating_rows`).
5. Empty rows: with three or more rows, a spacing between base lines that is at least
   ``empty_row_ratio`` times the usual one (the median of the others) and leaves room for a
   whole row above the lower row's products holds empty rows at the usual spacing
   (``Row.empty``), so an emptied shelf shows as one long gap, not as nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STACK_OVERLAP = 0.5  # x-overlap (of the narrower box) of a box resting on another
STACK_TOL = 0.12  # |bottom of the upper - top of the lower| within this fraction of the lower's height
CHAIN_TOL = 0.25  # neighbours in a row: bottoms within this fraction of the smaller height
MERGE_TOL = 0.5  # base lines closer than this fraction of the median height are one row's
FLOAT_BAND = 0.8  # a row whose base is within this fraction of the lower row's height above it is part of it
EMPTY_ROW_RATIO = 1.7  # a base-line spacing this many times the median one holds empty rows
SHELF_STEP = 0.5  # a row less than this fraction of the usual shelf spacing above the next is part of it
EDGE = 0.1  # a box ending this fraction of its row's product height from the photo's edge ends at the edge
ABOVE = 0.5  # a row cut by the photo's top edge to under this fraction of its products' full height is above it
SAME_PLACE = 0.5  # two boxes sharing half the smaller one are one product read twice (distinct; 0.4-0.8 tried on seed 5)


@dataclass
class Row:
    """One shelf row.

    Attributes:
        index: 0 for the top row of the photo (tables and drawings number rows from 1, like
            planogram shelves).
        slope, intercept: the base line ``y = slope * x + intercept`` (pixels).
        x0, x1: horizontal extent of its products (for an empty row: of the whole shelf).
        height: median height of the row's standing products (pixels; for an empty row the
            mean of its neighbours').
        members (int64[M]): indices of its boxes into the boxes given to :func:`find_rows`.
        empty: no product was found on it (inferred from the spacing of the rows around it).
        cut: its shelf is below the photo's bottom edge, only the tops of its products show
            (set by :func:`mark_cut`; such a row is not searched for gaps).
        above: its products stand mostly above the photo's top edge, only their feet show
            (set by :func:`mark_cut`; such a row is not searched for gaps either).
    """

    index: int
    slope: float
    intercept: float
    x0: float
    x1: float
    height: float
    members: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    empty: bool = False
    cut: bool = False
    above: bool = False

    def base_y(self, x: float | np.ndarray) -> float | np.ndarray:
        """y of the base line at ``x``."""
        return self.slope * x + self.intercept

    def band(self, x0: float, x1: float, height: float | None = None) -> tuple[float, float, float, float]:
        """Axis-aligned box xyxy of the row between ``x0`` and ``x1``: from ``height`` (the
        row's) above the base line down to it, covering the tilt."""
        h = self.height if height is None else height
        ya, yb = float(self.base_y(x0)), float(self.base_y(x1))
        return (float(x0), min(ya, yb) - h, float(x1), max(ya, yb))

    def to_dict(self) -> dict:
        return {"row": self.index + 1, "base": [[round(self.x0, 1), round(float(self.base_y(self.x0)), 1)],
                                              [round(self.x1, 1), round(float(self.base_y(self.x1)), 1)]],
                "slope": round(self.slope, 5), "height": round(self.height, 1), "products": int(len(self.members)),
                "empty": self.empty, "below_photo": self.cut, "above_photo": self.above}


@dataclass
class Rows:
    """The rows of one photo: ``rows`` top to bottom and ``row_of`` (int64[N], the row of each
    box, -1 for none: only when there are no rows) plus ``stacked`` (bool[N]: the box rests on
    another box, not on the shelf)."""

    rows: list[Row]
    row_of: np.ndarray
    stacked: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def distinct(boxes: np.ndarray, scores: np.ndarray, products: np.ndarray | None = None, same: float = SAME_PLACE) -> np.ndarray:
    """bool[N]: the boxes that are not a second detection of a product already kept. Products
    on a shelf stand side by side or on each other, they do not cover each other: of two boxes
    whose intersection holds ``same`` of the smaller one, only one is a product (a bottle read
    twice, once as each of two classes, or its top half read again by another slice). Kept
    first: ``products`` (bool[N], sure detections, default all), then by decreasing score."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(b)
    keep = np.zeros(n, bool)
    if not n:
        return keep
    products = np.ones(n, bool) if products is None else np.asarray(products, bool)
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)  # (N, N)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    dup = inter >= same * np.maximum(np.minimum(area[:, None], area[None]), 1e-6)
    for i in np.lexsort((-np.asarray(scores, np.float32), ~products)):  # products first, then by score
        keep[i] = not (dup[i] & keep).any()
    return keep


def mark_cut(rows: Rows, boxes: np.ndarray, height: int) -> None:
    """Set :attr:`Row.cut` on rows whose products mostly end at the bottom edge of a photo
    ``height`` pixels high (their shelf is below it): within :data:`EDGE` of the row's product
    height (a detector's box stops a few pixels short of the edge), at least 2 pixels.

    Set :attr:`Row.above` on rows whose products mostly start at the top edge (within the
    same margin) and are under :data:`ABOVE` of their full height: the median height of the
    row's standing boxes that stay clear of the edge (three or more), else of the rows that touch
    neither edge. Only the feet of products standing mostly above the photo show, and where
    a product shows less than that it is not seen at all (a detector misses a sliver, and so
    does a truth that keeps products by the share in view), so an empty stretch there says
    nothing about the shelf."""
    near = [max(2.0, EDGE * row.height) for row in rows.rows]  # a box within this of an edge ends at it
    touch_top = []
    for row, m in zip(rows.rows, near):
        has = bool(len(row.members))
        row.cut = has and float(np.median(boxes[row.members, 3])) >= height - m
        touch_top.append(has and float(np.median(boxes[row.members, 1])) <= m)
    usual = [r.height for r, top in zip(rows.rows, touch_top) if len(r.members) and not top and not r.cut]
    for row, top, m in zip(rows.rows, touch_top, near):
        if not top or row.cut:
            continue
        b = boxes[row.members[~rows.stacked[row.members]]]  # standing products (a stacked unit is short)
        clear = b[b[:, 1] > m]
        full = float(np.median(clear[:, 3] - clear[:, 1])) if len(clear) >= 3 else (float(np.median(usual)) if usual else 0.0)
        row.above = row.height < ABOVE * full


def stacked_on(boxes: np.ndarray, overlap: float = STACK_OVERLAP, tol: float = STACK_TOL, slope: float = 0.0) -> np.ndarray:
    """int64[N]: for each box the index of the box it rests on (its bottom on that box's top,
    overlapping it horizontally), -1 when it rests on none. Under a tilt ``slope`` the boxes
    of a stack may also overlap by up to ``|slope|`` times the narrower one's width (each box
    holds its tilted product's corners). The lowest-lying support wins."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    below = np.full(n, -1, np.int64)
    if n < 2:
        return below
    x1, y1, x2, y2 = boxes.T
    w, h = x2 - x1, y2 - y1
    ov = np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None])  # (N, N) x-overlap of i (upper) and j (lower)
    narrow = np.minimum(w[:, None], w[None])
    sink = y2[:, None] - y1[None]  # how far the bottom of i reaches below the top of j
    touch = (sink >= -tol * h[None]) & (sink <= tol * h[None] + abs(slope) * narrow)
    ok = (ov >= overlap * narrow) & touch
    np.fill_diagonal(ok, False)
    for i in np.flatnonzero(ok.any(1)):
        js = np.flatnonzero(ok[i])
        below[i] = js[np.argmax(y2[js])]
    return below


def _median_slope(boxes: np.ndarray, idx: np.ndarray, tol: float) -> float:
    """Median slope of the bottoms of horizontally neighbouring boxes at about the same height."""
    if len(idx) < 2:
        return 0.0
    b = boxes[idx]
    cx, bottom, h = (b[:, 0] + b[:, 2]) / 2, b[:, 3], b[:, 3] - b[:, 1]
    order = np.argsort(cx)
    slopes = []
    for a, i in enumerate(order):
        for j in order[a + 1:a + 6]:  # the next few to the right
            dx = cx[j] - cx[i]
            if dx > 0 and abs(bottom[j] - bottom[i]) <= tol * min(h[i], h[j]):
                slopes.append((bottom[j] - bottom[i]) / dx)
                break
    return float(np.median(slopes)) if slopes else 0.0


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def _chains(boxes: np.ndarray, idx: np.ndarray, slope: float, tol: float) -> list[np.ndarray]:
    """Groups (indices into ``boxes``) of standing boxes linked left to right by bottoms at the
    same height: each box links to the nearest box to its right within ``tol`` (of the smaller
    height) of its bottom, extrapolated along ``slope``."""
    b = boxes[idx]
    cx, bottom, h = (b[:, 0] + b[:, 2]) / 2, b[:, 3], b[:, 3] - b[:, 1]
    order = np.argsort(cx, kind="stable")
    u = _Union(len(idx))
    for a, i in enumerate(order):
        right = order[a + 1:]
        if not len(right):
            break
        expect = bottom[i] + slope * (cx[right] - cx[i])
        near = np.abs(bottom[right] - expect) <= tol * np.minimum(h[i], h[right])
        if near.any():
            u.join(int(i), int(right[np.argmax(near)]))  # order is by x: the first match is the nearest
    groups: dict[int, list[int]] = {}
    for k in range(len(idx)):
        groups.setdefault(u.find(k), []).append(int(idx[k]))
    return [np.asarray(g, np.int64) for g in groups.values()]


def _fit(boxes: np.ndarray, members: np.ndarray, slope: float) -> tuple[float, float]:
    """Base line (slope, intercept) through the bottom centres of ``members``; the given slope
    when they span less than three of their median widths (too short to fit a tilt)."""
    b = boxes[members]
    cx, bottom = (b[:, 0] + b[:, 2]) / 2, b[:, 3]
    span = cx.max() - cx.min()
    if len(members) >= 3 and span >= 3 * float(np.median(b[:, 2] - b[:, 0])):
        a, c = np.polyfit(cx, bottom, 1)
        resid = bottom - (a * cx + c)
        keep = np.abs(resid) <= max(2.5 * float(np.median(np.abs(resid))), 1.0)  # one refit without outliers
        if keep.sum() >= 3:
            a, c = np.polyfit(cx[keep], bottom[keep], 1)
        return float(a), float(c)
    return slope, float(np.median(bottom - slope * cx))


def find_rows(boxes: np.ndarray, anchors: np.ndarray | None = None, *, stack_overlap: float = STACK_OVERLAP,
              stack_tol: float = STACK_TOL, chain_tol: float = CHAIN_TOL, merge_tol: float = MERGE_TOL,
              empty_row_ratio: float = EMPTY_ROW_RATIO) -> Rows:
    """Group product boxes (float32[N, 4] xyxy) into shelf rows (see the module docstring).
    Only ``anchors`` (bool[N], default all) define base lines; the other boxes (detections
    the caller is unsure of) join the nearest row but never make one of their own."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    anchors = np.ones(n, bool) if anchors is None else np.asarray(anchors, bool).reshape(n)
    if n == 0:
        return Rows([], np.zeros(0, np.int64), np.zeros(0, bool))
    below = stacked_on(boxes, stack_overlap, stack_tol, _median_slope(boxes, np.flatnonzero(anchors), chain_tol))
    standing = np.flatnonzero((below < 0) & anchors)
    if not len(standing):  # no sure box stands on a shelf (or every box rests on another): all may
        standing = np.arange(n)
    slope = _median_slope(boxes, standing, chain_tol)
    chains = _chains(boxes, standing, slope, chain_tol)
    spans = [(float(boxes[g, 0].min()), float(boxes[g, 2].max())) for g in chains]
    h_all = float(np.median(boxes[standing, 3] - boxes[standing, 1]))
    xc = float((boxes[:, 0].min() + boxes[:, 2].max()) / 2)
    groups = _merge_lines([_fit(boxes, g, slope) for g in chains], spans, xc, merge_tol * h_all)
    lines = [_fit(boxes, np.concatenate([chains[q] for q in g]), slope) for g in groups]  # one line through a row's bottoms

    cx, bottom = (boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]
    h = boxes[:, 3] - boxes[:, 1]
    dist = np.abs(bottom[:, None] - (np.array([a for a, _ in lines])[None] * cx[:, None] + np.array([c for _, c in lines])[None]))  # (N, R)
    nearest = np.argmin(dist, 1)
    on_line = dist[np.arange(n), nearest] <= chain_tol * h
    stacked = (below >= 0) & ~on_line
    row_of = nearest.astype(np.int64)
    for i in _bottom_up(boxes, stacked):  # a stacked box takes the row of the box under it
        row_of[i] = row_of[below[i]]

    rows = []
    for r, (a, c) in enumerate(lines):
        members = np.flatnonzero(row_of == r)
        if not len(members):
            continue
        stand = members[~stacked[members]]
        hs = h[stand] if len(stand) else h[members]
        rows.append(Row(0, a, c, float(boxes[members, 0].min()), float(boxes[members, 2].max()),
                        float(np.median(hs)), members))
    rows.sort(key=lambda r: float(r.base_y(xc)))
    rows = _without_floating_rows(rows, boxes)
    rows = _with_empty_rows(rows, xc, empty_row_ratio, float(boxes[:, 0].min()), float(boxes[:, 2].max()))
    row_of = np.full(n, -1, np.int64)
    for k, row in enumerate(rows):
        row.index = k
        row_of[row.members] = k
    return Rows(rows, row_of, stacked)


def _without_floating_rows(rows: list[Row], boxes: np.ndarray) -> list[Row]:
    """Fold a row whose base line lies inside the product band of the row below it (within
    ``FLOAT_BAND`` of that row's product height above its base, at the upper row's centre)
    into that row: its boxes rest on products whose own boxes are missing or hidden (the top
    of a stack whose lowest unit is hidden), not on a shelf of their own. So is a row whose
    base line is less than :data:`SHELF_STEP` of the usual spacing of the other rows' base
    lines (their median, with three other rows or more) above the next one's, or below the
    previous one's, that spans less than :data:`SHELF_STEP` of the next row's length or holds
    fewer than :data:`SHELF_STEP` of its boxes: shelves are spaced alike, run across the photo and are
    full of products (a whole shelf just above the tops of a row cut by the photo's
    bottom edge stays a row; a few boxes just under a shelf, the tops of products of the shelf
    below that a detector read only in part, are no shelf: their products would reach through
    the shelf above)."""
    k = len(rows) - 2
    while k >= 0:
        up, down = rows[k], rows[k + 1]
        x = (up.x0 + up.x1) / 2
        lift = float(down.base_y(x) - up.base_y(x))
        others = np.diff([float(r.base_y(x)) for j, r in enumerate(rows) if j != k])
        step = float(np.median(others)) if len(others) >= 2 else 0.0
        short = ((up.x1 - up.x0) < SHELF_STEP * (down.x1 - down.x0)  # a shelf runs across the photo, a few stacks do not
                 or len(up.members) < SHELF_STEP * len(down.members))  # and is full of products
        drop = float(up.base_y(x) - rows[k - 1].base_y(x)) if k > 0 else float("inf")  # below the row above
        close = lift < FLOAT_BAND * down.height or (short and min(lift, drop) < SHELF_STEP * step)
        if 0 <= lift and close and len(up.members) < len(down.members):
            members = np.concatenate([down.members, up.members])
            rows[k + 1] = Row(0, down.slope, down.intercept, min(down.x0, up.x0), max(down.x1, up.x1), down.height, members)
            del rows[k]
        k -= 1
    return rows


def _bottom_up(boxes: np.ndarray, stacked: np.ndarray) -> list[int]:
    """Stacked boxes from the lowest up, so a box's support has its row before it does."""
    idx = np.flatnonzero(stacked)
    return [int(i) for i in idx[np.argsort(-boxes[idx, 3], kind="stable")]]


def _merge_lines(lines: list[tuple[float, float]], spans: list[tuple[float, float]], xc: float,
                 tol: float) -> list[list[int]]:
    """Group the base lines (slope, intercept) of chains spanning ``spans`` (x0, x1) that are
    within ``tol`` of each other (fragments of one row that a wide gap split), top to bottom:
    the indices of each group's lines (one line is then fitted through all their bottoms: the
    mean of the fragments' lines is only as good as the worst, such as the guessed tilt of a
    lone box). Two lines are compared at the middle of the shorter span, where the shorter
    fragment's boxes stand: a fragment's line says nothing far from its boxes (the flat line
    of the tops of a row cut by the photo's bottom edge meets a tilted shelf's line somewhere
    beside the photo, not under its products)."""
    order = sorted(range(len(lines)), key=lambda k: lines[k][0] * xc + lines[k][1])
    groups: list[list[int]] = []
    for k in order:
        if groups:
            g = groups[-1]
            g0, g1 = min(spans[q][0] for q in g), max(spans[q][1] for q in g)
            x0, x1 = spans[k] if spans[k][1] - spans[k][0] <= g1 - g0 else (g0, g1)
            x = (x0 + x1) / 2
            if abs(lines[k][0] * x + lines[k][1] - np.mean([lines[q][0] * x + lines[q][1] for q in g])) <= tol:
                g.append(k)
                continue
        groups.append([k])
    return groups


def _with_empty_rows(rows: list[Row], xc: float, ratio: float, x0: float, x1: float) -> list[Row]:
    """Insert empty rows where the base lines are ``ratio`` or more median spacings apart."""
    if len(rows) < 3:
        return rows
    ys = np.array([float(r.base_y(xc)) for r in rows])
    gaps = np.diff(ys)
    step = float(np.median(np.sort(gaps)[:-1]))  # the usual spacing: the widest one left out (it may hold the empty rows)
    out = [rows[0]]
    for up, down, g in zip(rows[:-1], rows[1:], gaps):
        fits = g - down.height >= 0.8 * step  # a whole row fits above the lower row's products
        k = int(round(g / step)) - 1 if g >= ratio * step and fits else 0
        for j in range(1, k + 1):
            t = j / (k + 1)
            slope = (1 - t) * up.slope + t * down.slope
            y = (1 - t) * float(up.base_y(xc)) + t * float(down.base_y(xc))
            out.append(Row(0, slope, y - slope * xc, x0, x1, (up.height + down.height) / 2, empty=True))
        out.append(down)
    return out
