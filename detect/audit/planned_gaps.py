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

The gaps the rules found between two columns are read against the plan first (the row's
columns alone aligned with its shelf): when the planogram plans facings between the two
neighbours and their products' widths (less any of the left neighbour's product at the start
or the right one's at the end: the alignment ties there) and the spacings fill the free shelf
to :data:`RESHAPE_FIT` of the narrowest, the gap holds those facings, with those products'
widths and heights, evenly spaced (the rules alone read a missing wide product as two narrow
facings, or the reverse); else it stays as the rules read it, unless the two neighbours are
one product that the plan puts in different positions (two positions of one product, or one
standing where another is planned): then the rule between different products decides (the
free shelf beyond the spacing between positions must hold a narrow product). The rules alone
take such neighbours for facings of one position and the wider spacing between positions for
a gap. The rules' gaps are aligned as one empty token each (not one per slot: their count
is what the plan is asked for), so the alignment's ties between the ends of a position fall
on the gap's side; positions are spaced unevenly, so the spacings between them may be
anything between the photo's narrowest and widest (relative to the row's height). A rules' gap at a row's end, beside a column aligned with the plan, takes the facings
planned beyond that column when the next of them is another product seen in the photo (its
width and height, the spacing between positions from the column, as many as stand
:data:`~detect.audit.gaps.END_FILL` inside the photo): the rules alone fill it with the end
product's facings. When not even the first of them stands that far inside and the photo shows
all the end column's position plans, the gap is dropped: the free shelf is the spacing
between that position and the next, whose product stands beyond the photo's edge (a stretch
the rules alone read as a missing facing of the end product whenever the spacing between
positions nears the product's width).

Rows below the photo are not searched, nor positions whose columns reach a row's end (their
other facings may stand beyond the photo's edge). Otherwise the planogram adds gaps, it
removes none: an empty stretch the rules found is empty whatever was planned there.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from detect.audit.compliance import EMPTY, align, check, facing_owners, row_slots
from detect.audit.facings import Column
from detect.audit.gaps import END_FILL, NARROW, RATIO, Gap, _name, _spacings, clip_gaps, column_height
from detect.audit.planogram import Planogram
from detect.audit.rows import Rows

RESHAPE_FIT = 0.25  # a rules' gap takes the planned facings when, with spacings in the photo's range, they fill its
# free shelf to this much of the narrowest of them
UNSEEN_RANGE = (0.8, 1.2)  # a product the photo does not show is this much of its narrowest to its widest
FILL = 0.8  # the free shelf must hold this much of the expected product (beyond the facings' spacing)


def planned_gaps(planogram: Planogram, cols: list[list[Column]], rows: Rows, gaps: list[Gap], boxes: np.ndarray,
                 names: list[str], *, ratio: float = RATIO, fill: float = FILL,
                 image_size: Optional[tuple[int, int]] = None) -> list[Gap]:
    """``gaps`` (from :func:`~detect.audit.gaps.find_gaps`) and the gaps the planogram points at
    (see the module docstring), top to bottom and left to right."""
    comp = check(planogram, row_slots(cols, gaps), names)
    shelf_of = {v.row: v.position.shelf for v in comp.verdicts if v.row >= 0}
    size = _sizes(cols, boxes)
    gaps = [_reshaped(planogram, shelf_of[g.row], cols, g, [h for h in gaps if h.row == g.row], rows, boxes, size, ratio)
            if g.row in shelf_of else g for g in gaps]
    gaps = [g for g in gaps if g is not None]
    out = list(gaps)
    for r, shelf in sorted(shelf_of.items()):
        if not rows.rows[r].cut and not rows.rows[r].above and len(cols[r]) >= 2:
            out += _row_gaps(planogram, shelf, r, rows, cols[r], [g for g in gaps if g.row == r], boxes, names, size,
                             ratio, fill)
    out.sort(key=lambda g: (g.row, g.box[0]))
    return clip_gaps(out, *image_size) if image_size is not None else out


def _reshaped(planogram: Planogram, shelf: int, cols: list[list[Column]], gap: Gap, row_gaps: list[Gap], rows: Rows,
              boxes: np.ndarray, size: dict[int, tuple[float, float]], ratio: float) -> Optional[Gap]:
    """``gap`` (a rules' gap of a row matched with planogram shelf ``shelf``; ``row_gaps`` all
    of that row's) with the facings the planogram plans between its neighbours: their count and
    their products' widths and heights, when the row's columns and gaps align both neighbours
    with the shelf (:func:`_anchors`) and the planned facings fill the free shelf
    (:func:`_best_fit`); at a row's end see :func:`_reshaped_end`. None when the neighbours are
    one product in different positions with no room for one between (the module docstring);
    else ``gap`` as it is."""
    rc = cols[gap.row]
    left = next((c for c in reversed(rc) if c.x1 <= gap.box[0] + 0.5), None)
    right = next((c for c in rc if c.x0 >= gap.box[2] - 0.5), None)
    positions = planogram.shelf(shelf)
    owner = facing_owners(positions)  # expected slot -> position
    expected = [positions[k].label for k in owner]
    where = _anchors(expected, rc, row_gaps)
    s_same, s_diff = _spacings(rc, ratio)
    if (left is None) != (right is None):
        end = left or right
        k = rc.index(end)
        a = where.get(k)
        run = _end_run(rc, k)
        return _reshaped_end(gap, rows, end, a, expected, size, s_diff,
                             whole=a is not None and run >= positions[owner[a]].facings)
    if left is None or right is None:
        return gap
    a, b = where.get(rc.index(left)), where.get(rc.index(right))
    if a is None or b is None or b <= a:
        return gap  # the alignment does not say what is missing there
    spread = _diff_range(cols, rows, ratio)
    s_range = tuple(f * rows.rows[gap.row].height for f in spread) if spread else (s_diff, s_diff, s_diff)
    best = _best_fit(expected[a + 1:b], left, right, size, s_same, s_range) if b - a >= 2 else None
    if best is None and owner[a] != owner[b] and left.label == right.label:
        narrow = float(np.quantile([c.width for c in rc], NARROW))  # two positions of one product (or one
        return gap if right.x0 - left.x1 - s_diff > narrow else None  # misplaced): the rule between positions
    if best is None:
        return gap  # the planned facings do not explain the free shelf: keep the rules' reading
    missing, widths = best
    h_near = float(np.sqrt(column_height(left, boxes) * column_height(right, boxes)))  # a product not in the photo: as the rules
    heights = [size[lab][1] if lab in size else h_near for lab in missing]
    free = right.x0 - left.x1
    widths = [w * min(1.0, free / sum(widths)) for w in widths]  # no wider than the free shelf (widths vary in a photo)
    step = (free - sum(widths)) / (len(missing) + 1)  # the rest of the shelf, evenly between them
    row, x, slots = rows.rows[gap.row], left.x1, []
    for w, h in zip(widths, heights):
        slots.append(row.band(x + step, x + step + w, h))
        x += step + w
    return Gap(gap.row, row.band(left.x1, right.x0, max(heights)), slots, gap.left, gap.right, gap.left_name,
               gap.right_name)


def _anchors(expected: list[int], rc: list[Column], row_gaps: list[Gap]) -> dict[int, int]:
    """Column index -> the expected facing it aligns with, the row's columns and one empty
    token per gap of the rules aligned with the shelf's facings: the token says where facings
    are missing without saying how many (what the plan is asked for), so the alignment's ties
    between the ends of a position fall on the side of the gap."""
    items = sorted([(c.cx, k) for k, c in enumerate(rc)] + [((g.box[0] + g.box[2]) / 2, -1) for g in row_gaps])
    observed = [rc[k].label if k >= 0 else EMPTY for _, k in items]
    return {items[j][1]: i for i, j in align(expected, observed) if i >= 0 and j >= 0 and items[j][1] >= 0}


def _end_run(rc: list[Column], k: int) -> int:
    """How many columns of column ``k``'s product stand side by side from it into the row
    (``k`` the row's first or last column)."""
    step = 1 if k == 0 else -1
    n = 0
    while 0 <= k + n * step < len(rc) and rc[k + n * step].label == rc[k].label:
        n += 1
    return n


def _reshaped_end(gap: Gap, rows: Rows, end: Column, a: Optional[int], expected: list[int],
                  size: dict[int, tuple[float, float]], s: float, whole: bool = False) -> Optional[Gap]:
    """A rules' gap at a row's end (beside column ``end``, aligned with expected facing ``a``)
    with the facings the planogram plans beyond ``end`` when the next of them is another
    product that shows elsewhere in the photo: its width and height, ``s`` from ``end``, and
    the next ones while they stand :data:`~detect.audit.gaps.END_FILL` inside the gap (the
    photo's or the shelf's edge); else ``gap`` as it is (the facings beyond may be more of
    ``end``'s own: the alignment cannot tell). None when not even the first stands inside and
    the photo shows ``whole`` of ``end``'s position (as many of its product side by side at
    the row's end as the position plans): the gap is the spacing between positions, the next
    product stands beyond the edge. A position short of facings keeps the rules' reading (the
    alignment ties on which side its missing facing stands)."""
    if a is None:
        return gap
    outward = 1 if gap.box[0] >= end.x1 - 0.5 else -1
    beyond = expected[a + 1:] if outward > 0 else expected[:a][::-1]
    if not beyond or beyond[0] == end.label or beyond[0] not in size:
        return gap
    row, slots = rows.rows[gap.row], []
    x = end.x1 if outward > 0 else end.x0
    for lab in beyond:
        if lab not in size:
            break
        w, h = size[lab]
        x0, x1 = sorted((x + outward * s, x + outward * (s + w)))
        if min(x1, gap.box[2]) - max(x0, gap.box[0]) < END_FILL * w:  # mostly beyond the edge
            break
        slots.append(row.band(max(x0, gap.box[0]), min(x1, gap.box[2]), h))
        x += outward * (s + w)
    if not slots:  # the next planned product stands beyond the edge: the free shelf is the spacing before it
        return None if whole else gap
    return Gap(gap.row, gap.box, slots, gap.left, gap.right, gap.left_name, gap.right_name)


def _best_fit(planned: list[int], left: Column, right: Column, size: dict[int, tuple[float, float]], s_same: float,
              s_diff: tuple[float, float, float]) -> Optional[tuple[list[int], list[float]]]:
    """Of the ``planned`` facings between ``left`` and ``right``, less any of the left one's
    product at the start or the right one's at the end (the alignment ties on which end of a
    position a facing is missing), the run whose widths and spacings best fill the free shelf,
    with its widths; None when none fills it to :data:`RESHAPE_FIT` of its narrowest facing.
    Spacings between facings of one product are ``s_same``, between different products
    anywhere in ``s_diff`` (lowest, median, highest: positions are spaced unevenly); of runs
    that fit, the one nearest the median spacings.
    Products the photo does not show share what the others and the spacings leave: a run
    with some is taken only when no run of seen products fits, and when that width is one of a
    product of the photo (:func:`_unseen_width`)."""
    lead = next((k for k, lab in enumerate(planned) if lab != left.label), len(planned))
    trail = next((k for k, lab in enumerate(reversed(planned)) if lab != right.label), len(planned))
    free, fits, unseen = right.x0 - left.x1, [], []
    for i in range(lead + 1):
        for j in range(trail + 1):
            run = planned[i:len(planned) - j]
            if not run:
                continue
            labs = [left.label] + run + [right.label]
            n_diff = sum(u != v for u, v in zip(labs, labs[1:]))
            rest = free - (len(labs) - 1 - n_diff) * s_same - n_diff * np.array(s_diff)  # lowest, median, highest
            if all(lab in size for lab in run):
                widths = [size[lab][0] for lab in run]
                over = max(sum(widths) - rest[0], rest[2] - sum(widths), 0.0)  # beyond the spacings' range
                fits.append((over / min(widths), abs(rest[1] - sum(widths)) / min(widths), run, widths))
            else:
                fit = _unseen_width(run, float(rest[1]), size)
                if fit is not None:
                    unseen.append((0.0, fit[0], run, [size[lab][0] if lab in size else fit[1] for lab in run]))
    good = [f for f in fits if f[0] <= RESHAPE_FIT] or unseen
    return min(good, key=lambda f: f[:2])[2:] if good else None


def _unseen_width(run: list[int], rest: float, size: dict[int, tuple[float, float]]) -> Optional[tuple[float, float]]:
    """The width each product of ``run`` that the photo does not show takes of ``rest`` (the
    free shelf less the spacings) beside the others', and how far it is from the photo's
    median product width (relative); None when it is no width of a product of the photo
    (:data:`UNSEEN_RANGE` of the narrowest to the widest)."""
    seen = [w for w, _ in size.values()]
    if not seen:
        return None
    n = sum(lab not in size for lab in run)
    w = (rest - sum(size[lab][0] for lab in run if lab in size)) / n
    lo, hi = UNSEEN_RANGE
    if not lo * min(seen) <= w <= hi * max(seen):
        return None
    med = float(np.median(seen))
    return abs(w - med) / med, w


def _diff_range(cols: list[list[Column]], rows: Rows, ratio: float) -> Optional[tuple[float, float, float]]:
    """Lowest, median and highest spacing between neighbours of different products over the
    photo, each a fraction of its row's height (the photo's rows lie at different distances
    from the camera); those that are gaps by themselves are left out (as
    :func:`~detect.audit.gaps._spacings`). None when no row has such neighbours."""
    sp = [max(0.0, b.x0 - a.x1) / row.height for row, rc in zip(rows.rows, cols) if row.height > 0
          for a, b in zip(rc, rc[1:]) if a.label != b.label and b.x0 - a.x1 <= (ratio - 1) * max(a.width, b.width)]
    return (min(sp), float(np.median(sp)), max(sp)) if sp else None


def _row_gaps(planogram: Planogram, shelf: int, r: int, rows: Rows, rc: list[Column], found: list[Gap],
              boxes: np.ndarray, names: list[str], size: dict[int, tuple[float, float]], ratio: float,
              fill: float) -> list[Gap]:
    """New gaps of row ``r`` (matched with planogram shelf ``shelf``): for each position with
    fewer facings in the row (products, other products and empty facings aligned with it)
    than planned, the free stretch beside its columns (or, for a position not seen at all,
    between its neighbours') that holds its missing facings; of several, the widest. The
    alignment alone cannot say at which end of a position a facing is missing."""
    positions = planogram.shelf(shelf)
    owner = facing_owners(positions)  # expected slot -> position
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
    h_near = float(np.sqrt(column_height(left, boxes) * column_height(right, boxes)))
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


def _sizes(cols: list[list[Column]], boxes: np.ndarray) -> dict[int, tuple[float, float]]:
    """Median (width, height) of each product's columns over the photo."""
    per: dict[int, list[tuple[float, float]]] = {}
    for row in cols:
        for c in row:
            if c.label >= 0:
                per.setdefault(c.label, []).append((c.width, column_height(c, boxes)))
    return {lab: (float(np.median([w for w, _ in v])), float(np.median([h for _, h in v]))) for lab, v in per.items()}

