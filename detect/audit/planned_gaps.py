"""Gaps the planogram points at: facings it expects that the shelf rules alone cannot tell from
a wide spacing.

Without a planogram an empty stretch between two different products is ambiguous: the free
shelf between two positions varies by more than a narrow product's width, so the rules of
:mod:`detect.audit.gaps` ask for a narrow product of the row beyond the usual spacing and miss
a missing facing where the positions happen to stand close. With a planogram the row's slots
(its columns and the gaps found so far) are aligned with its shelf's expected sequence (the
alignment and the matching of rows to shelves of :mod:`detect.audit.compliance`). A position
with fewer slots aligned with it than it has facings is short of facings; the alignment cannot
say at which end of the position they are missing (it ties), so the free stretch is taken
where they fit best: the widest of the stretches just before and after its columns and between
them (between its neighbours' columns for a position not seen at all). That stretch is a gap
when its free shelf, less the usual spacing between facings, holds :data:`FILL` of each missing
facing (the product's median width in the photo: the facings of one product are alike; the
narrow products of the row when the photo shows none of it), as many as fit. The slots have
that product's width and height, beside its own columns when it has some there (the missing
facings of a position stand next to its others), else in the middle of the stretch.

Rows below the photo are not searched, nor positions whose columns reach a row's end (their
other facings may stand beyond the photo's edge). The planogram adds gaps, it removes none: an
empty stretch the rules found is empty whatever was planned there.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from detect.audit.compliance import EMPTY, align, check, row_slots
from detect.audit.facings import Column
from detect.audit.gaps import NARROW, RATIO, Gap, _clipped, _name, _spacings
from detect.audit.planogram import Planogram
from detect.audit.rows import Rows

FILL = 0.8  # the free shelf must hold this much of the expected product (beyond the facings' spacing)


def planned_gaps(planogram: Planogram, cols: list[list[Column]], rows: Rows, gaps: list[Gap], boxes: np.ndarray,
                 names: list[str], *, ratio: float = RATIO, fill: float = FILL,
                 image_size: Optional[tuple[int, int]] = None) -> list[Gap]:
    """``gaps`` (from :func:`~detect.audit.gaps.find_gaps`) and the gaps the planogram points at
    (see the module docstring), top to bottom and left to right."""
    comp = check(planogram, row_slots(cols, gaps), names)
    shelf_of = {v.row: v.position.shelf for v in comp.verdicts if v.row >= 0}
    size = _sizes(cols, boxes)
    out = list(gaps)
    for r, shelf in sorted(shelf_of.items()):
        if not rows.rows[r].cut and len(cols[r]) >= 2:
            out += _row_gaps(planogram, shelf, r, rows, cols[r], [g for g in gaps if g.row == r], boxes, names, size,
                             ratio, fill)
    out.sort(key=lambda g: (g.row, g.box[0]))
    return [_clipped(g, *image_size) for g in out] if image_size is not None else out


def _row_gaps(planogram: Planogram, shelf: int, r: int, rows: Rows, rc: list[Column], found: list[Gap],
              boxes: np.ndarray, names: list[str], size: dict[int, tuple[float, float]], ratio: float,
              fill: float) -> list[Gap]:
    """New gaps of row ``r`` (matched with planogram shelf ``shelf``): for each position with
    fewer facings in the row (products, other products and empty facings aligned with it)
    than planned, the free stretch beside its columns (or, for a position not seen at all,
    between its neighbours') that holds its missing facings; of several, the widest. The
    alignment alone cannot say at which end of a position a facing is missing."""
    positions = planogram.shelf(shelf)
    owner = [k for k, p in enumerate(positions) for _ in range(p.facings)]  # expected slot -> position
    items: list[Optional[Column]] = list(rc) + [None for g in found for _ in g.slots]  # None: an empty facing
    xs = [c.cx for c in rc] + [(s[0] + s[2]) / 2 for g in found for s in g.slots]
    items = [items[k] for k in np.argsort(xs, kind="stable")]
    pairs = align([positions[k].label for k in owner], [EMPTY if c is None else c.label for c in items])
    seen: list[list[int]] = [[] for _ in positions]  # observed slots aligned with each position's facings
    before = [-1] * len(positions)  # the last observed slot before each position's first facing
    last = -1
    for i, j in pairs:
        if i >= 0 and j >= 0:
            seen[owner[i]].append(j)
        elif i >= 0 and before[owner[i]] < 0 and not seen[owner[i]]:
            before[owner[i]] = last
        last = j if j >= 0 else last
    s_same, _ = _spacings(rc, ratio)
    narrow = float(np.quantile([c.width for c in rc], NARROW))
    want: dict[tuple[int, int], list[int]] = {}  # stretch (left slot, right slot) -> missing labels
    for k, p in enumerate(positions):
        short = p.facings - len(seen[k])
        if short <= 0 or (seen[k] and (min(seen[k]) == 0 or max(seen[k]) == len(items) - 1)):
            continue  # complete, or at a row's end: its other facings may stand beyond the photo's edge
        js = sorted(seen[k])
        cands = [(a, a + 1) for a in ([js[0] - 1, js[-1]] + js[:-1] if js else [before[k]])]
        cands = [(a, b) for a, b in cands if 0 <= a and b < len(items) and items[a] is not None and items[b] is not None]
        if cands:
            a, b = max(cands, key=lambda ab: items[ab[1]].x0 - items[ab[0]].x1)
            want.setdefault((a, b), []).extend([p.label] * short)
    row = rows.rows[r]
    out = []
    for (a, b), missing in sorted(want.items()):
        g = _stretch(row, items[a], items[b], missing, boxes, size, narrow, s_same, fill, names)
        if g is not None:
            out.append(g)
    return out


def _stretch(row, left: Column, right: Column, missing: list[int], boxes: np.ndarray, size: dict[int, tuple[float, float]],
             narrow: float, s: float, fill: float, names: list[str]) -> Optional[Gap]:
    """A gap of the ``missing`` products' facings between columns ``left`` and ``right`` when
    the free shelf holds ``fill`` of them, else None."""
    free = right.x0 - left.x1
    wh = [size.get(lab, (narrow, float("nan"))) for lab in missing]
    while wh and free - s < fill * sum(w for w, _ in wh) + (len(wh) - 1) * s:
        wh.pop()  # fewer fit: the alignment may ask for more than the stretch holds
    if not wh:
        return None
    heights = [h for _, h in wh]
    h_near = float(np.sqrt(_height(left, boxes) * _height(right, boxes)))
    spans = []
    if missing[0] == left.label or missing[len(wh) - 1] != right.label:  # beside the left one (or centred)
        x = left.x1 + s if missing[0] == left.label else left.x1 + (free - sum(w for w, _ in wh) - (len(wh) - 1) * s) / 2
        for w, _ in wh:
            spans.append((x, min(x + w, right.x0)))
            x += w + s
    else:  # beside the right one
        x = right.x0 - s
        for w, _ in reversed(wh):
            spans.append((max(x - w, left.x1), x))
            x -= w + s
        spans.reverse()
    slots = [row.band(a, b, h_near if np.isnan(h) else h) for (a, b), h in zip(spans, heights)]
    hmax = max(y2 - y1 for _, y1, _, y2 in slots)
    return Gap(row.index, row.band(left.x1, right.x0, hmax), slots, left.label, right.label, _name(names, left),
               _name(names, right))


def _height(c: Column, boxes: np.ndarray) -> float:
    return float(boxes[c.members, 3].max() - boxes[c.members, 1].min())


def _sizes(cols: list[list[Column]], boxes: np.ndarray) -> dict[int, tuple[float, float]]:
    """Median (width, height) of each product's columns over the photo."""
    per: dict[int, list[tuple[float, float]]] = {}
    for row in cols:
        for c in row:
            if c.label >= 0:
                per.setdefault(c.label, []).append((c.width, _height(c, boxes)))
    return {lab: (float(np.median([w for w, _ in v])), float(np.median([h for _, h in v]))) for lab, v in per.items()}

