"""Gaps the planogram points at, on hand-made boxes (detect/audit/planned_gaps.py): a missing
facing where positions stand close, at the end of its position, a missing wide product, two
positions of one product, a row-end gap read as the next planned product, a position of a
product the photo does not show."""

from __future__ import annotations

import numpy as np
import pytest

from _audit_layout import NAMES, positions_row  # tests/ is on the path under pytest
from detect.audit.audit import audit_detections
from detect.structures import Detections


# cola 60 wide, chips 30, tea 60; positions 20-40 apart (30 as a rule)
SPEC = [(0, 3, 60, 40), (1, 3, 30, 20), (2, 3, 60, 30), (0, 2, 60, 40), (1, 3, 30, 30), (2, 2, 60, 20), (0, 2, 60, 30)]


def _audit_with_plan(boxes, labels, plan, planned=True):
    from detect.audit.planogram import build_planogram

    det = Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), np.asarray(labels), NAMES)
    return audit_detections(det, 1200, 400, build_planogram(plan, NAMES, {}, "test"), planned=planned)


def test_the_planogram_finds_a_missing_facing_where_positions_stand_close():
    """The last chips facing of position 1 is gone and tea stands 20 after it: the stretch
    (4 + 30 + 20) is within the spacing between positions and a narrow product (30 + 30),
    so the rules alone see no gap. The planogram expects three chips there: a gap of one chips
    facing beside the other two, as wide and high as the photo's chips."""
    boxes, labels, plan = positions_row(SPEC, skip={(1, 2)})
    assert _audit_with_plan(boxes, labels, plan, planned=False).gaps == []
    res = _audit_with_plan(boxes, labels, plan)
    assert [(g.facings, g.left_name, g.right_name) for g in res.gaps] == [(1, "chips", "tea")]
    x0 = 3 * 64 + 40 - 4 + 2 * 34  # the third chips facing's place
    assert np.allclose(res.gaps[0].slots[0], (x0, 200, x0 + 30, 300), atol=0.5)
    assert [v.status for v in res.compliance.verdicts][1] == "wrong_facings"


def test_the_planogram_puts_a_missing_facing_at_the_end_of_its_position_with_room():
    """The first chips facing of position 4 is gone (cola 20 before it, too close for the
    rules alone): of the two ends of the position the stretch before it holds the facing best,
    so the gap is there, beside the chips. A position short of a facing where its neighbours
    leave no room for one (the tea of position 5 planned with three facings, two standing)
    has no gap."""
    spec = list(SPEC)
    spec[3] = (0, 2, 60, 20)
    boxes, labels, plan = positions_row(spec, skip={(4, 0)})
    assert _audit_with_plan(boxes, labels, plan, planned=False).gaps == []
    plan[5][1]["facings"] = 3
    res = _audit_with_plan(boxes, labels, plan)
    assert [(g.facings, g.left_name, g.right_name) for g in res.gaps] == [(1, "cola", "chips")]
    first = [b for b, l in zip(boxes, labels) if l == 1][3]  # the first chips standing at position 4
    x1, _, x2, _ = res.gaps[0].slots[0]
    assert x2 == pytest.approx(first[0] - 4, abs=0.5) and x2 - x1 == pytest.approx(30, abs=0.5)


def test_the_planogram_adds_no_gap_to_a_position_at_the_row_end():
    """The first position plans three cola, the photo shows two (the third may stand beyond
    its left edge) and 55 of shelf after them: room for most of a cola, yet no gap, since the
    planogram cannot say on which side of the edge the missing facing stands."""
    spec = list(SPEC)
    spec[0] = (0, 2, 60, 55)
    boxes, labels, plan = positions_row(spec)
    plan[0][1]["facings"] = 3
    res = _audit_with_plan(boxes, labels, plan)
    assert res.gaps == [] and res.compliance.verdicts[0].status == "wrong_facings"


def test_the_planogram_reads_a_missing_wide_product_as_one_facing_of_its_width():
    """A tea 100 wide (its only facing) is gone between two chips positions (30 wide, 30
    apart): the rules alone cut the 160 of free shelf into five chips-wide slots; the planogram
    plans one tea there, whose width (the other tea's in the photo) and spacings fill the
    stretch: one gap of one tea facing, 100 wide, centred."""
    spec = [(0, 2, 60, 30), (1, 2, 30, 30), (2, 1, 100, 30), (1, 2, 30, 30), (2, 2, 100, 30), (0, 2, 60, 30)]
    boxes, labels, plan = positions_row(spec, skip={(2, 0)})
    assert [g.facings for g in _audit_with_plan(boxes, labels, plan, planned=False).gaps] == [5]
    res = _audit_with_plan(boxes, labels, plan)
    assert [(g.facings, g.left_name, g.right_name) for g in res.gaps] == [(1, "chips", "chips")]
    x0 = 2 * 64 + 30 - 4 + 2 * 34 - 4 + 30  # after cola, the first chips position and the spacings
    assert np.allclose(res.gaps[0].slots[0], (x0, 200, x0 + 100, 300), atol=0.5)
    assert [v.status for v in res.compliance.verdicts] == ["ok", "ok", "missing", "ok", "ok", "ok"]


def test_the_planogram_reads_two_positions_of_one_product_by_the_rule_between_positions():
    """Two chips positions stand 45 apart, wider than chips facings (4) by more than half a
    chips: a gap to the rules alone, which take the two for facings of one position. The
    planogram says they are two positions with nothing between: the spacing is judged as one
    between positions (30 as a rule), and 15 more holds no narrow product: no gap."""
    spec = [(0, 2, 60, 30), (1, 3, 30, 45), (1, 2, 30, 30), (2, 2, 60, 30), (0, 2, 60, 30)]
    boxes, labels, plan = positions_row(spec)
    assert [(g.facings, g.left_name, g.right_name) for g in _audit_with_plan(boxes, labels, plan, planned=False).gaps] \
        == [(1, "chips", "chips")]
    res = _audit_with_plan(boxes, labels, plan)
    assert res.gaps == [] and all(v.status == "ok" for v in res.compliance.verdicts)


def test_the_planogram_reads_a_row_end_gap_as_the_next_planned_product():
    """The last position (one tea, 60 wide) is gone and the photo ends 100 after the last
    chips: the rules alone fill the stretch with three chips-wide facings beside the chips.
    The planogram plans a tea after the chips (another product, seen elsewhere in the photo):
    one facing of its width, the spacing between positions (30) from the chips."""
    from detect.audit.planogram import build_planogram

    spec = [(0, 2, 60, 30), (2, 2, 60, 30), (1, 3, 30, 30), (2, 1, 60, 30)]
    boxes, labels, plan = positions_row(spec, skip={(3, 0)})
    det = Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), np.asarray(labels), NAMES)
    run = lambda planned: audit_detections(det, 506, 400, build_planogram(plan, NAMES, {}, "test"),  # noqa: E731
                                           shelf_edges="image", planned=planned)
    assert [(g.facings, g.left_name, g.right_name) for g in run(False).gaps] == [(3, "chips", "")]
    res = run(True)
    assert [(g.facings, g.left_name, g.right_name) for g in res.gaps] == [(1, "chips", "")]
    assert np.allclose(res.gaps[0].slots[0], (436, 200, 496, 300), atol=0.5)


def test_the_planogram_reads_a_missing_position_of_a_product_the_photo_does_not_show():
    """The only tea (50 wide, 35 from the chips on either side: more than the photo's spacings
    between positions, 20-30) is gone: the rules alone cut the 120 of free shelf into four
    chips-wide slots. The planogram plans one tea there; the photo shows none, so it takes what
    the spacings leave (120 - 2 x 30 = 60, a width of a product of this photo): one slot as
    high as its neighbours, centred."""
    spec = [(0, 2, 60, 30), (1, 2, 30, 35), (2, 1, 50, 35), (1, 2, 30, 20), (0, 2, 60, 30), (1, 2, 30, 30)]
    boxes, labels, plan = positions_row(spec, skip={(2, 0)})
    assert [g.facings for g in _audit_with_plan(boxes, labels, plan, planned=False).gaps] == [4]
    res = _audit_with_plan(boxes, labels, plan)
    assert [(g.facings, g.left_name, g.right_name) for g in res.gaps] == [(1, "chips", "chips")]
    assert np.allclose(res.gaps[0].slots[0], (248, 200, 308, 300), atol=0.5)
    assert [v.status for v in res.compliance.verdicts][2] == "missing"



def test_neighbours_of_one_product_in_positions_a_planned_product_cannot_stand_between():
    """The planogram plans a tea (100 wide) between two chips positions that stand 45 apart:
    no tea fits there (the photo moved on from the plan), and the rules alone see a gap in the
    chips' wide spacing. The neighbours are in different positions: the rule between positions
    decides (15 beyond their spacing holds no narrow product), no gap; the tea is missing."""
    boxes, labels, _ = positions_row([(0, 2, 60, 30), (1, 2, 30, 45), (1, 2, 30, 30), (2, 2, 100, 30)])
    _, _, plan = positions_row([(0, 2, 60, 30), (1, 2, 30, 45), (2, 1, 100, 45), (1, 2, 30, 30), (2, 2, 100, 30)])
    assert [(g.left_name, g.right_name) for g in _audit_with_plan(boxes, labels, plan, planned=False).gaps] \
        == [("chips", "chips")]
    res = _audit_with_plan(boxes, labels, plan)
    assert res.gaps == [] and res.compliance.verdicts[2].status == "missing"
