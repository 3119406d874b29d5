"""Planogram compliance: does each planogram position hold its product, in its facings?

Each row becomes a sequence of *slots*, left to right: one per column (its product's label, -1
for a product the caller marked unknown) and one per empty facing of a gap (:data:`EMPTY`).
Each shelf of the planogram is the sequence of its positions' products, each repeated
``facings`` times. The two are aligned (Needleman-Wunsch: match +2, another product or an
empty facing where a product was expected -1, a slot too many or too few -1), so a facing too
many or too few shifts nothing after it. A slot the alignment inserts counts for the position
of the expected slot before it (after it at the start of the shelf). Per position:

- ``misplaced``: another product stands in one or more of its facings (``found`` names it);
- ``ok``: else, its product stands there in exactly its facings;
- ``missing``: else, none of it (the facings are empty);
- ``wrong_facings``: else, its product stands there in more or fewer facings (``observed``).

Shelves map to rows top to bottom (shelf ``s`` to row ``s - first shelf``); when the photo shows more or fewer rows than the planogram
has shelves, the shelf-to-row offset with the best alignment wins, and a shelf with no row is
all ``missing``. The photo's score is the fraction of positions that are ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detect.audit.facings import Column
from detect.audit.gaps import Gap
from detect.audit.planogram import Planogram, Position

EMPTY = -2  # an empty facing (a gap's slot)
MATCH, MISMATCH, INDEL = 2, -1, -1
MAX_OFFSET = 2  # a photo shows at most this many shelves more or fewer than the planogram (rows cut by its edges)
VERDICTS = ("ok", "missing", "misplaced", "wrong_facings")


@dataclass
class Verdict:
    """The verdict of one planogram position: ``status`` (one of :data:`VERDICTS`),
    ``observed`` facings of its product there, ``row`` it was matched with (-1: none),
    ``found``: names of other products standing in it."""

    position: Position
    status: str
    observed: int
    row: int
    found: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        p = self.position
        return {"shelf": p.shelf, "position": p.position, "product": p.product, "expected": p.facings,
                "observed": self.observed, "status": self.status, "row": self.row + 1 if self.row >= 0 else None, "found": self.found}


@dataclass
class Compliance:
    """Verdicts of every position and the photo's ``score`` (fraction ``ok``, in [0, 1])."""

    verdicts: list[Verdict]

    @property
    def score(self) -> float:
        return sum(v.status == "ok" for v in self.verdicts) / len(self.verdicts) if self.verdicts else 1.0

    def counts(self) -> dict[str, int]:
        return {s: sum(v.status == s for v in self.verdicts) for s in VERDICTS}

    def to_dict(self) -> dict:
        return {"score": round(self.score, 4), "counts": self.counts(), "positions": [v.to_dict() for v in self.verdicts]}


def row_slots(cols: list[list[Column]], gaps: list[Gap]) -> list[list[int]]:
    """Per row, the labels of its slots left to right (:data:`EMPTY` for a gap's facing)."""
    out = []
    for r, row in enumerate(cols):
        items = [(c.cx, c.label) for c in row]
        items += [((s[0] + s[2]) / 2, EMPTY) for g in gaps if g.row == r for s in g.slots]
        out.append([label for _, label in sorted(items)])
    return out


def align(expected: list[int], observed: list[int]) -> list[tuple[int, int]]:
    """Global alignment of two label sequences: pairs ``(i, j)`` of indices, -1 for a gap in
    that sequence (``(i, -1)``: expected slot i has no observed slot)."""
    n, m = len(expected), len(observed)
    score = np.zeros((n + 1, m + 1), np.int64)
    score[:, 0] = INDEL * np.arange(n + 1)
    score[0, :] = INDEL * np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = MATCH if expected[i - 1] == observed[j - 1] else MISMATCH
            score[i, j] = max(score[i - 1, j - 1] + sub, score[i - 1, j] + INDEL, score[i, j - 1] + INDEL)
    pairs = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and score[i, j] == score[i - 1, j - 1] + (MATCH if expected[i - 1] == observed[j - 1] else MISMATCH):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and score[i, j] == score[i - 1, j] + INDEL:
            pairs.append((i - 1, -1))
            i -= 1
        else:
            pairs.append((-1, j - 1))
            j -= 1
    return pairs[::-1]


def _shelf_verdicts(positions: list[Position], observed: list[int], row: int, names: list[str]) -> tuple[list[Verdict], int]:
    """Verdicts of one shelf's positions against one row's slots, and the alignment's score."""
    owner = [k for k, p in enumerate(positions) for _ in range(p.facings)]  # expected slot -> position
    expected = [positions[k].label for k in owner]
    pairs = align(expected, observed)
    hits = [0] * len(positions)
    others: list[list[int]] = [[] for _ in positions]
    last = owner[0] if owner else 0
    total = 0
    for i, j in pairs:
        k = owner[i] if i >= 0 else last
        if i >= 0:
            last = k
        lab = observed[j] if j >= 0 else EMPTY
        if i >= 0 and j >= 0:
            total += MATCH if expected[i] == lab else MISMATCH
        else:
            total += INDEL
        if lab == positions[k].label:
            hits[k] += 1
        elif lab >= 0 and i >= 0:  # another known product (an unsure occupant is no evidence)
            others[k].append(lab)
    out = []
    for k, p in enumerate(positions):
        found = sorted({names[l] if 0 <= l < len(names) else "unknown" for l in others[k]})
        if others[k]:
            status = "misplaced"
        elif hits[k] == p.facings:
            status = "ok"
        elif hits[k] == 0:
            status = "missing"
        else:
            status = "wrong_facings"
        out.append(Verdict(p, status, hits[k], row, found))
    return out, total


def check(planogram: Planogram, slots: list[list[int]], names: list[str]) -> Compliance:
    """Compare the rows' slots (:func:`row_slots`) with the planogram (see the module docstring)."""
    shelves = planogram.shelves
    S, R = (shelves[-1] - shelves[0] + 1 if shelves else 0), len(slots)
    best: tuple[int, list[Verdict]] | None = None
    for offset in range(max(-(S - 1), -MAX_OFFSET), min(max(R, 1), MAX_OFFSET + 1)):  # shelf k <-> row k + offset
        verdicts, total = [], 0
        for shelf in shelves:
            r = shelf - shelves[0] + offset
            positions = planogram.shelf(shelf)
            if 0 <= r < R:
                v, t = _shelf_verdicts(positions, slots[r], r, names)
            else:
                v, t = [Verdict(p, "missing", 0, -1) for p in positions], INDEL * sum(p.facings for p in positions)
            verdicts += v
            total += t
        if best is None or total > best[0] or (total == best[0] and offset == 0):
            best = (total, verdicts)
    return Compliance(best[1] if best else [])
