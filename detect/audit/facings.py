"""Facings per product per row, and share of shelf.

A *facing* is one product standing at the front of the shelf, seen from the aisle: one column
of a row. Boxes of one row that overlap horizontally (by ``STACK_OVERLAP`` of the narrower one)
form one column: products stacked on each other, or one peeking above or behind another, are
one facing (a planogram's "facings high" and "deep" are not counted). A column's product is
the one standing on the shelf, its lowest box (of a product: a box the caller marks unknown,
label -1, names the column only when it holds nothing else); ``units`` counts every box of
the product.

Share of shelf per product: its facings over all facings, and its columns' width over the
width of all columns (the share of the shelf's length it holds), over the rows of a photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detect.audit.rows import STACK_OVERLAP, Rows


@dataclass
class Column:
    """One facing: ``row``, extent ``x0``..``x1``, ``label`` of its lowest box, ``members``
    (int64[M] box indices, lowest first)."""

    row: int
    x0: float
    x1: float
    label: int
    members: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2


def columns(boxes: np.ndarray, labels: np.ndarray, rows: Rows, overlap: float = STACK_OVERLAP) -> list[list[Column]]:
    """The columns of each row (``[row][column]``, left to right)."""
    out = []
    for row in rows.rows:
        idx = row.members[np.argsort((boxes[row.members, 0] + boxes[row.members, 2]) / 2, kind="stable")]
        groups: list[list[int]] = []
        for i in idx:  # by centre: a box joins the column it overlaps enough, else starts one
            x1, x2 = boxes[i, 0], boxes[i, 2]
            for g in groups[-3:][::-1]:
                gx1, gx2 = boxes[g, 0].min(), boxes[g, 2].max()
                narrow = min(x2 - x1, min(boxes[g, 2] - boxes[g, 0]))
                if min(x2, gx2) - max(x1, gx1) >= overlap * narrow:
                    g.append(int(i))
                    break
            else:
                groups.append([int(i)])
        cols = []
        for g in groups:
            m = np.asarray(g, np.int64)
            m = m[np.argsort(-boxes[m, 3], kind="stable")]  # lowest first
            known = m[labels[m] >= 0]  # an unsure box over (or just below) a product does not hide it
            cols.append(Column(row.index, float(boxes[m, 0].min()), float(boxes[m, 2].max()),
                               int(labels[known[0]] if len(known) else labels[m[0]]), m))
        cols.sort(key=lambda c: c.cx)
        out.append(cols)
    return out


@dataclass(frozen=True)
class Facing:
    """Facings of one product on one row: ``facings`` columns, ``units`` boxes, ``width`` pixels."""

    row: int
    label: int
    name: str
    facings: int
    units: int
    width: float


def facings(cols: list[list[Column]], labels: np.ndarray, names: list[str]) -> list[Facing]:
    """One :class:`Facing` per (row, product) present, by row then product name."""
    out = []
    for r, row in enumerate(cols):
        per: dict[int, list[Column]] = {}
        for c in row:
            per.setdefault(c.label, []).append(c)
        for label, cs in sorted(per.items(), key=lambda kv: _name(names, kv[0])):
            units = sum(int(np.count_nonzero(labels[c.members] == label)) for c in cs)
            out.append(Facing(r, label, _name(names, label), len(cs), units, float(sum(c.width for c in cs))))
    return out


@dataclass(frozen=True)
class Share:
    """Share of shelf of one product: ``facings`` and ``width`` (pixels) summed over the rows,
    and their fractions of all products' (``by_facings``, ``by_width``, in [0, 1])."""

    label: int
    name: str
    facings: int
    width: float
    by_facings: float
    by_width: float


def share_of_shelf(table: list[Facing]) -> list[Share]:
    """Share of shelf per product, largest by facings first."""
    total_f = sum(f.facings for f in table)
    total_w = sum(f.width for f in table)
    per: dict[int, list[Facing]] = {}
    for f in table:
        per.setdefault(f.label, []).append(f)
    out = []
    for label, fs in per.items():
        n, w = sum(f.facings for f in fs), sum(f.width for f in fs)
        out.append(Share(label, fs[0].name, n, w, n / total_f if total_f else 0.0, w / total_w if total_w else 0.0))
    return sorted(out, key=lambda s: (-s.facings, -s.width, s.name))


def _name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)
