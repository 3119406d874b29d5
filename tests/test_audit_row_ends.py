"""Shelf rules at the ends of a row and at the photo's edges, on hand-made boxes
(detect/audit/rows.py mark_cut, gaps.py clip_gaps, planned_gaps.py): a row whose products
stand mostly above the photo, empty facings mostly outside the photo, and the free shelf
at a row's end that is only the spacing before the next planned position."""

from __future__ import annotations

import numpy as np
import pytest

from detect.audit.audit import audit_detections
from detect.audit.gaps import Gap, clip_gaps
from detect.audit.planogram import build_planogram
from detect.structures import Detections
from _audit_layout import positions_row  # tests/ is on the path under pytest

NAMES = ["cola", "chips", "tea"]


def row_boxes(base: float, n: int, *, w: float = 40, h: float = 100, s: float = 5, x0: float = 0, skip=(), top=None):
    """n products w wide and h high, s apart, on y = base; ``skip``: indices left out;
    ``top``: boxes cut at this y (the photo's top edge)."""
    out = []
    for k in range(n):
        if k in skip:
            continue
        x = x0 + k * (w + s)
        out.append([x, base - h if top is None else max(top, base - h), x + w, base])
    return out


def audit(boxes, labels, W, H, **kw):
    det = Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32),
                     np.asarray(labels, np.int64), NAMES)
    return audit_detections(det, W, H, **kw)


def test_a_row_whose_products_stand_above_the_photo_has_no_gaps():
    """The top shelf's products are 100 high and their base 15 px under the photo's top edge:
    only their feet show (boxes 15 high), and of those two are missing in the middle and two
    at the right end, where taller products may stand unseen. Its row is above the photo, no
    gap is reported there; the rows below still have theirs, and its products still count."""
    top = row_boxes(15, 13, skip=(5, 6, 11, 12), top=0)
    mid = row_boxes(135, 13, skip=(4,))
    low = row_boxes(255, 13)
    res = audit(top + mid + low, [0] * (len(top) + len(mid) + len(low)), 585, 300, shelf_edges="image")
    assert [r.above for r in res.rows.rows] == [True, False, False]
    assert [r.cut for r in res.rows.rows] == [False, False, False]
    assert [(g.row, g.facings) for g in res.gaps] == [(1, 1)]
    assert res.to_dict()["rows"][0]["above_photo"] is True and res.to_dict()["rows"][1]["above_photo"] is False
    assert [(f.row, f.facings) for f in res.facings] == [(0, 9), (1, 12), (2, 13)]


def test_a_top_row_mostly_in_the_photo_keeps_its_gaps():
    """The top shelf's products show 70 of their 100 px (cut by the top edge): enough to see
    them, and to see that one is missing. Not above the photo: its gap is found."""
    top = row_boxes(70, 13, skip=(5,), top=0)
    mid = row_boxes(190, 13)
    res = audit(top + mid, [0] * (len(top) + len(mid)), 585, 300, shelf_edges="image")
    assert [r.above for r in res.rows.rows] == [False, False]
    assert [(g.row, g.facings) for g in res.gaps] == [(0, 1)]


def test_a_row_with_no_other_row_to_compare_is_not_above_the_photo():
    """One row, cut by the top edge: nothing says how tall its products are, so it is searched
    as usual (a missing facing between two is a gap)."""
    res = audit(row_boxes(20, 8, skip=(3,), top=0), [0] * 7, 400, 300)
    assert not res.rows.rows[0].above and [g.facings for g in res.gaps] == [1]


def test_empty_facings_mostly_outside_the_photo_are_dropped():
    """clip_gaps: a slot half or more inside the photo is clipped to it; one less than half
    inside (the shelf of a tilted row leaving the photo) or wholly outside is dropped, and a
    gap left with no slot is dropped."""
    g1 = Gap(0, (-20, 10, 100, 110), [(-20, 10, 20, 110), (-50, 10, -10, 110), (30, -60, 70, 40), (60, 10, 100, 110)])
    g2 = Gap(1, (0, 380, 80, 480), [(0, 420, 40, 480), (40, 410, 80, 470)])
    out = clip_gaps([g1, g2], 300, 400)
    assert len(out) == 1
    assert out[0].slots == [(0.0, 10, 20, 110), (60, 10, 100, 110)]
    assert out[0].box == (0.0, 10, 100, 110)


def test_a_tilted_row_leaving_the_photo_has_no_slot_outside_it():
    """The top shelf rises to the left (its base 0.1 px up a pixel) and its products (60 high)
    leave the photo through the top edge: the rules' end gap over the empty stretch at the left
    holds no empty facing less than half inside the photo."""
    boxes, labels = [], []
    for k in range(7):
        x = 300 + k * 45
        base = 10 + 0.1 * (x + 20)
        boxes.append([x, max(0.0, base - 60), x + 40, base])
        labels.append(0)
    mid = row_boxes(300, 14)
    low = row_boxes(420, 14)
    res = audit(boxes + mid + low, labels + [0] * 28, 630, 450, shelf_edges="image")
    assert not res.rows.rows[0].above
    end = [g for g in res.gaps if g.row == 0]
    assert len(end) == 1 and end[0].right_name == "cola" and end[0].left_name == ""
    row, h = res.rows.rows[0], boxes[0][3] - boxes[0][1]  # slots as high as the end product's box
    for x1, y1, x2, y2 in end[0].slots:
        inside = max(row.base_y(x1), row.base_y(x2))  # the slot's band reaches h above the lower end
        assert y1 >= 0 and y2 <= inside + 0.5 and y2 - y1 >= 0.5 * (inside - min(row.base_y(x1), row.base_y(x2)) + h)
    assert min(s[0] for s in end[0].slots) > 60  # those at the left, mostly above the photo, are gone
    assert max(s[2] for s in end[0].slots) <= 300


SPEC = [(0, 2, 60, 30), (2, 2, 60, 30), (1, 3, 30, 40), (2, 1, 60, 30)]


def _run(boxes, labels, plan, W, planned):
    det = Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), np.asarray(labels), NAMES)
    return audit_detections(det, W, 400, build_planogram(plan, NAMES, {}, "test"), shelf_edges="image", planned=planned)


def test_the_spacing_before_a_planned_product_beyond_the_edge_is_no_gap():
    """The photo ends 40 after the last chips (30 wide), just the spacing (40) before the tea
    the planogram puts next: the rules alone read a missing chips there (40 holds 0.7 of a
    chips). The planogram says the next facing is a tea (60 wide in this photo), which would
    stand beyond the edge: no gap; the chips position is whole."""
    boxes, labels, plan = positions_row(SPEC)
    last = max(b[2] for b, lab in zip(boxes, labels) if lab == 1)
    keep = [k for k, b in enumerate(boxes) if b[2] <= last]
    boxes, labels = [boxes[k] for k in keep], [labels[k] for k in keep]
    W = int(last + 40)
    assert [(g.facings, g.left_name, g.right_name) for g in _run(boxes, labels, plan, W, False).gaps] == [(1, "chips", "")]
    res = _run(boxes, labels, plan, W, True)
    assert res.gaps == []
    assert [v.status for v in res.compliance.verdicts][:3] == ["ok", "ok", "ok"]


def test_a_planned_product_that_would_stand_inside_the_photo_is_still_a_gap():
    """The same shelf, the photo 120 after the last chips: a tea (60) fits beyond the spacing
    between positions (30 in this photo as a rule), inside the photo: one gap of a tea's
    width, the tea is missing."""
    boxes, labels, plan = positions_row(SPEC, skip={(3, 0)})
    last = max(b[2] for b, lab in zip(boxes, labels) if lab == 1)
    res = _run(boxes, labels, plan, int(last + 120), True)
    assert [(g.facings, g.left_name, g.right_name) for g in res.gaps] == [(1, "chips", "")]
    assert res.gaps[0].slots[0][0] == pytest.approx(last + 30, abs=0.5) and \
        res.gaps[0].slots[0][2] - res.gaps[0].slots[0][0] == pytest.approx(60, abs=0.5)


def test_a_position_short_of_a_facing_at_the_row_end_keeps_the_rules_gap():
    """As above (the tea before the chips 20 from them), but the last chips is gone too: the
    photo ends 40 after the second chips. The plan's three chips are not all in view, so the
    missing one may stand in that stretch (the alignment cannot say on which side): the rules'
    chips facing stays."""
    boxes, labels, plan = positions_row([SPEC[0], (2, 2, 60, 20)] + SPEC[2:])
    chips = [b for b, lab in zip(boxes, labels) if lab == 1]
    last = chips[1][2]
    keep = [k for k, b in enumerate(boxes) if b[2] <= last]
    boxes, labels = [boxes[k] for k in keep], [labels[k] for k in keep]
    W = int(last + 40)
    rules = _run(boxes, labels, plan, W, False).gaps
    assert [(g.facings, g.left_name, g.right_name) for g in rules] == [(1, "chips", "")]
    res = _run(boxes, labels, plan, W, True)
    assert [(g.facings, g.left_name, g.right_name) for g in res.gaps] == [(1, "chips", "")]
    assert np.allclose(res.gaps[0].slots, rules[0].slots)


def test_a_top_row_of_short_products_some_cut_is_not_above_the_photo():
    """The top shelf holds short products (60 high, wholly in view, one missing) on the left
    and tall ones (100 high, cut to 70 by the top edge) on the right, the shelves below 140
    high products: its boxes are low next to the others', but its own whole products say how
    tall they are, and the cut ones show more than half: not above the photo, its gap found."""
    short = row_boxes(70, 7, h=60, skip=(3,))
    tall = row_boxes(70, 6, h=100, x0=7 * 45, top=0)
    mid = row_boxes(230, 13, h=140)
    low = row_boxes(390, 13, h=140)
    res = audit(short + tall + mid + low, [1] * len(short) + [0] * (len(tall) + 26), 585, 420, shelf_edges="image")
    assert [r.above for r in res.rows.rows] == [False, False, False]
    assert [(g.row, g.facings, g.left_name, g.right_name) for g in res.gaps] == [(0, 1, "chips", "chips")]
