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

Shelves map to rows top to bottom, in order: rows the planogram does not know (cut by the
photo's edge, or made of false detections) are skipped and shelves out of the photo are all
``missing``, whichever matching aligns best (:func:`check`). The photo's score is the
fraction of positions that are ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detect.audit.facings import Column
from detect.audit.gaps import Gap
from detect.audit.planogram import Planogram, Position

EMPTY = -2  # an empty facing (a gap's slot)
MATCH, MISMATCH, INDEL = 2, -1, -1
MAX_OFFSET = 2  # a shelf is looked for this many rows (plus the difference in counts) around its own index
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


def facing_owners(positions: list[Position]) -> list[int]:
    """A shelf's expected facings, left to right, as the index of the position each belongs to."""
    return [k for k, p in enumerate(positions) for _ in range(p.facings)]


def _shelf_verdicts(positions: list[Position], observed: list[int], row: int, names: list[str]) -> tuple[list[Verdict], int]:
    """Verdicts of one shelf's positions against one row's slots, and the alignment's score."""
    owner = facing_owners(positions)  # expected slot -> position
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
    """Compare the rows' slots (:func:`row_slots`) with the planogram (see the module docstring).

    Shelves are matched to rows in order by dynamic programming over (shelf, row): a shelf
    takes the next row, or is out of the photo (all its positions missing), or a row is
    skipped (a row the planogram does not know, such as one made of false detections); the
    matching with the best total alignment score wins. Shelf k is tried only on rows within
    :data:`MAX_OFFSET` (plus the difference in counts) of row k."""
    shelves = planogram.shelves
    S, R = len(shelves), len(slots)
    band = MAX_OFFSET + abs(R - S)
    gone = [([Verdict(p, "missing", 0, -1) for p in planogram.shelf(sh)], INDEL * sum(p.facings for p in planogram.shelf(sh)))
            for sh in shelves]
    NEG = float("-inf")
    best = np.full((S + 1, R + 1), NEG)
    best[0, :] = 0.0  # rows above the first shelf are skipped for free
    back: dict[tuple[int, int], tuple[str, tuple[list[Verdict], int] | None]] = {}
    for k in range(1, S + 1):
        for r in range(0, R + 1):
            cands = []
            if r > 0 and abs((r - 1) - (k - 1)) <= band:
                v = _shelf_verdicts(planogram.shelf(shelves[k - 1]), slots[r - 1], r - 1, names)
                cands.append((best[k - 1, r - 1] + v[1], "match", v))
            cands.append((best[k - 1, r] + gone[k - 1][1], "gone", gone[k - 1]))
            if r > 0:
                cands.append((best[k, r - 1], "skip", None))
            score, how, v = max(cands, key=lambda c: c[0])  # ties: the first (a match before the others)
            best[k, r] = score
            back[(k, r)] = (how, v)
    verdicts: list[list[Verdict]] = []
    k, r = S, R
    while k > 0:
        how, v = back[(k, r)]
        if how == "skip":
            r -= 1
            continue
        verdicts.append(v[0])
        k, r = (k - 1, r - 1) if how == "match" else (k - 1, r)
    return Compliance([x for shelf in reversed(verdicts) for x in shelf])
