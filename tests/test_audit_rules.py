"""Shelf rules on hand-made boxes (detect/audit/rows.py, facings.py, gaps.py): a tilted row,
rows under perspective, an empty row, one product, gaps inside and at the ends of a row,
stacked products, products lying down or not sure."""

from __future__ import annotations

import numpy as np
import pytest

from detect.audit.audit import audit_detections
from detect.audit.facings import columns, facings, share_of_shelf
from detect.audit.gaps import find_gaps
from detect.audit.rows import distinct, find_rows, stacked_on
from detect.structures import Detections

NAMES = ["cola", "chips", "tea"]


def shelf_row(base: float, n: int, *, w: float = 40, h: float = 100, s: float = 5, slope: float = 0.0, x0: float = 0,
              skip=(), labels=None) -> tuple[list[list[float]], list[int]]:
    """n products of width w and height h, s apart, standing on the line y = base + slope * x;
    the indices in ``skip`` are left out (empty facings)."""
    boxes, labs = [], []
    for k in range(n):
        if k in skip:
            continue
        x = x0 + k * (w + s)
        yb = base + slope * (x + w / 2)
        boxes.append([x, yb - h, x + w, yb])
        labs.append(0 if labels is None else labels[k])
    return boxes, labs


def run(boxes, labels):
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    l = np.asarray(labels, np.int64)
    rows = find_rows(b)
    cols = columns(b, l, rows)
    return b, l, rows, cols, find_gaps(cols, rows, b, NAMES)


def test_tilted_rows_under_perspective_are_found_whole():
    """Three rows, each with its own tilt (a keystone: the rows converge), the photo tilted by
    up to 8 degrees: every row found, top to bottom, its base line the products' bottoms."""
    boxes, labels = [], []
    for base, slope in ((200, 0.14), (400, 0.10), (600, 0.06)):
        b, l = shelf_row(base, 14, slope=slope)
        boxes += b
        labels += l
    b, _, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 3
    assert [len(c) for c in cols] == [14, 14, 14]
    assert list(rows.row_of) == [0] * 14 + [1] * 14 + [2] * 14
    for row, slope in zip(rows.rows, (0.14, 0.10, 0.06)):
        assert row.slope == pytest.approx(slope, abs=1e-3)
        assert np.allclose(row.base_y((b[row.members, 0] + b[row.members, 2]) / 2), b[row.members, 3], atol=0.5)
    assert gaps == []


def test_one_product_is_one_row_with_one_facing():
    b, l, rows, cols, gaps = run([[10, 20, 50, 120]], [2])
    assert len(rows) == 1 and rows.rows[0].base_y(30) == pytest.approx(120)
    assert facings(cols, l, NAMES) == [facings(cols, l, NAMES)[0]]
    f = facings(cols, l, NAMES)[0]
    assert (f.row, f.name, f.facings, f.units) == (0, "tea", 1, 1)
    assert gaps == []


def test_no_boxes_no_rows():
    b, l, rows, cols, gaps = run(np.zeros((0, 4)), [])
    assert len(rows) == 0 and cols == [] and gaps == []


def test_stacked_products_are_one_row_and_one_facing():
    """Chocolate bars three high and a box on a box: all in the row of the boxes they rest on,
    one facing per column, every unit counted."""
    boxes, labels = shelf_row(300, 6, h=100, labels=[0, 0, 1, 1, 1, 2])
    x = 6 * 45
    for k in range(3):  # a stack of three flat bars (30 high) on the shelf
        boxes.append([x, 300 - 30 * (k + 1), x + 40, 300 - 30 * k])
        labels.append(1)
    boxes.append([0, 100, 40, 200])  # on top of the first cola: a second unit of that facing
    labels.append(0)
    b, l, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 1
    assert set(rows.row_of) == {0}
    assert rows.stacked.sum() == 3  # two bars on bars, the cola on the cola
    got = {f.name: (f.facings, f.units) for f in facings(cols, l, NAMES)}
    assert got == {"cola": (2, 3), "chips": (4, 6), "tea": (1, 1)}
    assert gaps == []


def test_a_stack_of_flat_bars_on_a_tilted_shelf_is_one_row():
    """Bars 120 wide and 40 high, three high, on a shelf tilted by 0.08: each bar's box is
    ~10 px taller than the bar, so the boxes of a stack overlap by that much. The stacks still
    rest on their lowest bar: one row of the shelf, no row of floating bars, no gaps."""
    slope, base = 0.08, 400.0
    boxes, labels = shelf_row(base, 6, w=50, h=150, slope=slope)
    for x in (6 * 55, 6 * 55 + 125):  # two stacks beside the bottles
        yb = base + slope * (x + 60)
        for k in range(3):
            lo, hi = yb - 40 * k, yb - 40 * (k + 1)  # the bar's bottom and top at its centre
            boxes.append([x, hi - slope * 60, x + 120, lo + slope * 60])  # the tilted bar's axis-aligned box
            labels.append(1)
    b, l, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 1 and set(rows.row_of) == {0}
    assert rows.stacked.sum() == 4
    assert {f.name: (f.facings, f.units) for f in facings(cols, l, NAMES)} == {"cola": (6, 6), "chips": (2, 6)}
    assert gaps == []
    assert stacked_on(b[6:9]).tolist() == [-1, -1, -1]  # without the tilt the overlap is too much for a stack
    assert stacked_on(b[6:9], slope=slope).tolist() == [-1, 0, 1]


def test_stacked_on_names_the_support():
    b = np.array([[0, 50, 40, 100], [0, 0, 40, 50], [100, 0, 140, 100]], np.float32)
    assert list(stacked_on(b)) == [-1, 0, -1]


def test_gaps_inside_and_at_both_ends_of_a_row():
    """Row 1 spans the shelf; row 2 misses its first product, two in the middle and its last:
    three gaps, with their neighbours and the right number of empty facings."""
    top, tl = shelf_row(200, 12, labels=[0] * 12)
    bottom, bl = shelf_row(400, 12, skip=(0, 5, 6, 11), labels=[1] * 5 + [2] * 7)
    b, l, rows, cols, gaps = run(top + bottom, tl + bl)
    assert len(rows) == 2
    got = [(g.row, g.facings, g.left_name, g.right_name) for g in gaps]
    assert got == [(1, 1, "", "chips"), (1, 2, "chips", "tea"), (1, 1, "tea", "")]
    mid = gaps[1]
    assert mid.box[0] == pytest.approx(4 * 45 + 40) and mid.box[2] == pytest.approx(7 * 45)
    x1, y1, x2, y2 = mid.slots[0]
    assert y2 == pytest.approx(400) and y2 - y1 == pytest.approx(100)  # standing on the base, product high
    assert x1 >= 4 * 45 + 40 and x2 <= 6 * 45 + 40


def test_normal_spacing_and_mixed_widths_are_not_gaps():
    """Wide and narrow products side by side, spaced a little unevenly: no gap."""
    rng = np.random.default_rng(0)
    boxes, x = [], 0.0
    for k in range(20):
        w = 30.0 if k % 3 else 70.0
        boxes.append([x, 100, x + w, 200])
        x += w + rng.uniform(2, 9)
    b, l, rows, cols, gaps = run(boxes, [0] * 20)
    assert len(cols[0]) == 20 and gaps == []


def test_a_product_lying_down_or_unsure_is_not_a_gap():
    """A bottle lying on its side fills the place of two standing ones: no gap there; an
    unsure detection (an occupant, under conf) also closes the gap but counts as no facing."""
    boxes, labels = shelf_row(300, 10)
    lying = [5 * 45, 300 - 38, 5 * 45 + 85, 300]  # where products 5 and 6 stood
    del boxes[5:7], labels[5:7]
    det = Detections(np.asarray(boxes + [lying], np.float32), np.full(9, 0.9, np.float32), np.asarray(labels + [0]), NAMES)
    res = audit_detections(det, 600, 400)
    assert res.gaps == [] and len(res.rows) == 1
    scores = np.full(9, 0.9, np.float32)
    scores[-1] = 0.15  # not sure: an occupant
    det = Detections(det.boxes, scores, det.labels, NAMES)
    res = audit_detections(det, 600, 400, conf=0.25)
    assert res.gaps == []
    assert [(f.name, f.facings) for f in res.facings] == [("cola", 8)]
    gone = Detections(det.boxes[:-1], scores[:-1], det.labels[:-1], NAMES)  # nothing there at all: a gap of 2
    assert [g.facings for g in audit_detections(gone, 600, 400).gaps] == [2]


def test_an_empty_row_between_rows_is_one_long_gap():
    """Four shelves, the third emptied: the spacing of the others puts an empty row there,
    and the whole row is a gap of as many facings as the others hold."""
    boxes, labels = [], []
    for base in (200, 350, 650):
        b, l = shelf_row(base, 10)
        boxes += b
        labels += l
    b, l, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 4 and [r.empty for r in rows.rows] == [False, False, True, False]
    assert rows.rows[2].base_y(200) == pytest.approx(500, abs=1)
    assert [(g.row, g.facings) for g in gaps] == [(2, 10)]


def test_shelf_edges_at_the_image_make_end_gaps():
    boxes, labels = shelf_row(300, 8, x0=90)  # the first two places, and the right end, empty
    det = Detections(np.asarray(boxes, np.float32), np.ones(8, np.float32), np.asarray(labels), NAMES)
    assert audit_detections(det, 450, 400).gaps == []  # the shelf ends where its products do
    gaps = audit_detections(det, 450 + 90, 400, shelf_edges="image").gaps
    assert [(g.facings, g.left_name, g.right_name) for g in gaps] == [(2, "", "cola"), (2, "cola", "")]


def test_share_of_shelf_by_facings_and_width():
    boxes, labels = shelf_row(200, 4, w=40, labels=[0, 0, 0, 1])
    wide, wl = shelf_row(200, 1, w=120, x0=4 * 45, labels=[1])
    b, l, rows, cols, _ = run(boxes + wide, labels + wl)
    share = {s.name: s for s in share_of_shelf(facings(cols, l, NAMES))}
    assert share["cola"].by_facings == pytest.approx(0.6) and share["chips"].by_facings == pytest.approx(0.4)
    assert share["cola"].by_width == pytest.approx(120 / 280) and share["chips"].by_width == pytest.approx(160 / 280)


def test_a_row_below_the_photo_has_no_gaps():
    """The bottom shelf's products are cut by the photo's lower edge (only their tops show): a
    hole there may be a product too hidden to detect, so that row reports no gap."""
    top, tl = shelf_row(200, 10)
    cut = [[x1, 330, x2, 400] for x1, _, x2, _ in shelf_row(430, 10, skip=(4, 5))[0]]  # base at 430, photo ends at 400
    det = Detections(np.asarray(top + cut, np.float32), np.ones(18, np.float32), np.zeros(18, np.int64), NAMES)
    res = audit_detections(det, 450, 400)
    assert [r.cut for r in res.rows.rows] == [False, True]
    assert res.gaps == [] and res.to_dict()["rows"][1]["below_photo"] is True
    assert [(f.row, f.facings) for f in res.facings] == [(0, 10), (1, 8)]  # its products still count


def test_a_stack_whose_lowest_unit_is_hidden_joins_the_row_below():
    """Two short boxes resting on nothing visible, a short way above a row's base: they are
    the top of a stack in that row, not a shelf of their own."""
    boxes, labels = shelf_row(400, 10, h=150)
    boxes += [[10 * 45, 320, 10 * 45 + 40, 360], [10 * 45, 280, 10 * 45 + 40, 320]]  # base of the row at 400
    labels += [1, 1]
    b, l, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 1 and set(rows.row_of) == {0}
    assert [(f.name, f.facings, f.units) for f in facings(cols, l, NAMES)] == [("chips", 1, 2), ("cola", 10, 10)]


def test_one_product_read_twice_is_one_product():
    """A bottle read as two classes, and its top half read again (unsure) by another slice:
    one product, one facing. Neighbours touching, and a stack, stay."""
    boxes, labels = shelf_row(300, 5)
    scores = [0.9] * 5
    boxes += [[46, 201, 84, 299], [45, 200, 85, 250], [180, 120, 220, 200]]  # bottle 1 again, its top half, one on bottle 4
    labels += [2, 0, 1]
    scores += [0.6, 0.15, 0.9]
    keep = distinct(np.asarray(boxes, np.float32), np.asarray(scores), np.asarray(scores) >= 0.25)
    assert keep.tolist() == [True] * 5 + [False, False, True]
    det = Detections(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(labels), NAMES)
    res = audit_detections(det, 300, 400, conf=0.25)
    assert len(res.detections) == 6 and res.gaps == []
    assert [(f.name, f.facings, f.units) for f in res.facings] == [("cola", 5, 5)]  # tea and the top half gone


def test_an_unsure_box_below_a_product_does_not_hide_it():
    """An unsure box (an occupant) whose bottom lies a little lower than the product's in the
    same column: the column is still the product's facing."""
    boxes, labels = shelf_row(300, 4)
    boxes.append([46, 150, 84, 303])
    labels.append(1)
    det = Detections(np.asarray(boxes, np.float32), np.asarray([0.9] * 4 + [0.2], np.float32), np.asarray(labels), NAMES)
    res = audit_detections(det, 300, 400, conf=0.25)
    assert [(f.name, f.facings) for f in res.facings] == [("cola", 4)] and res.gaps == []


def test_a_bottom_row_whose_boxes_stop_short_of_the_edge_is_below_the_photo():
    top, _ = shelf_row(200, 8)
    cut = [[x1, 340, x2, 397 - (k % 3)] for k, (x1, _, x2, _) in enumerate(shelf_row(430, 8, skip=(3, 4))[0])]  # 1-5 px short
    det = Detections(np.asarray(top + cut, np.float32), np.ones(14, np.float32), np.zeros(14, np.int64), NAMES)
    res = audit_detections(det, 400, 400)
    assert [r.cut for r in res.rows.rows] == [False, True] and res.gaps == []


def test_bars_on_an_unseen_stack_are_not_a_shelf_between_shelves():
    """Four shelves 250 px apart; on the second, two bars lie 110 px above the base (their
    stack's lower units were not detected): more than the row's product band, less than half
    a shelf's spacing: they are the top of a stack of that shelf, not a shelf of their own."""
    boxes, labels = [], []
    for base in (200, 450, 700, 950):
        b, l = shelf_row(base, 10 if base == 450 else 15, h=120)  # the second shelf's right end: the bars
        boxes += b
        labels += l
    boxes += [[10 * 45, 450 - 150, 10 * 45 + 100, 450 - 110], [10 * 45 + 110, 450 - 150, 10 * 45 + 210, 450 - 110]]
    labels += [1, 1]
    b, l, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 4 and rows.row_of[-2:].tolist() == [1, 1]
    assert gaps == []


def test_a_shelf_just_above_a_row_cut_by_the_photo_stays_a_row():
    """Three shelves 250 px apart, then the tops of a fourth's products, cut by the photo's
    bottom edge 80 px under the third's base (their boxes end at the edge, a line close
    below it): the third shelf, as long as the photo, is not folded into the cut row."""
    boxes, labels = [], []
    for base in (200, 450, 700):
        b, l = shelf_row(base, 12, h=120)
        boxes += b
        labels += l
    boxes += [[x1, 730, x2, 780] for x1, _, x2, _ in shelf_row(900, 14, w=35, h=120)[0]]
    labels += [1] * 14
    det = Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), np.asarray(labels), NAMES)
    res = audit_detections(det, 600, 780)
    assert len(res.rows) == 4 and [r.cut for r in res.rows.rows] == [False, False, False, True]
    assert [(f.row, f.facings) for f in res.facings] == [(0, 12), (1, 12), (2, 12), (3, 14)]


def test_a_gap_between_a_tall_and_a_short_product_is_between_their_heights():
    """Bottles (160 high) then cans (40 high) with an empty facing between them: which of the
    two is missing is unknown without a planogram, so the slot is as high as the geometric
    mean of theirs (an IoU of at least 0.5 with either product's facing)."""
    boxes, labels = shelf_row(300, 5, h=160, labels=[0] * 5)
    cans, cl = shelf_row(300, 6, h=40, x0=6 * 45 + 10, labels=[1] * 6)
    b, l, rows, cols, gaps = run(boxes + cans, labels + cl)
    assert [(g.facings, g.left_name, g.right_name) for g in gaps] == [(1, "cola", "chips")]
    x1, y1, x2, y2 = gaps[0].slots[0]
    assert y2 == pytest.approx(300) and y2 - y1 == pytest.approx(80)


def test_between_two_products_a_gap_must_hold_a_narrow_product_of_the_row():
    """Cans (30 wide) and cereal boxes (90 wide) on one row, positions 25 apart: an empty
    stretch where one can stood between two boxes is a gap (though it holds only a third of
    a box); a spacing of 45 between two positions is not (a can would not fit)."""
    boxes, labels, x = [], [], 0.0
    for w, lab, gap_after in ((90, 0, 0), (90, 0, 30 + 25), (90, 1, 0), (90, 1, 20), (30, 2, 0), (30, 2, 0), (30, 2, 0),
                              (30, 2, 40), (90, 0, 0), (30, 2, 20), (30, 1, 0)):
        boxes.append([x, 100, x + w, 200])
        labels.append(lab)
        x += w + 5 + gap_after
    b, l, rows, cols, gaps = run(boxes, labels)
    assert [(g.facings, g.left_name, g.right_name) for g in gaps] == [(1, "cola", "chips")]
    x1, _, x2, _ = gaps[0].slots[0]
    assert 185 <= x1 and x2 <= 245 and x2 - x1 >= 15


def test_a_tilted_shelf_above_a_row_cut_by_the_photo_is_not_merged_with_it():
    """Three shelves tilted down to the right (0.08), under the lowest one the tops of a row cut
    by the photo's bottom edge on the left half (boxes 35 high ending at the edge, below the
    shelf's base where they stand). At the photo's centre the shelf's base line is under half
    a product's height above the cut row's flat line, but where the cut row's products are
    the two lines are 50-85 px apart: two rows, the lower one below the photo."""
    boxes, labels = [], []
    for base in (155, 315, 475):
        b, l = shelf_row(base, 22, slope=0.08, labels=[0] * 22)
        boxes += b
        labels += l
    boxes += [[x1, 525, x2, 560] for x1, _, x2, _ in shelf_row(600, 10, labels=[1] * 10)[0]]
    labels += [1] * 10
    det = Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), np.asarray(labels), NAMES)
    res = audit_detections(det, 1000, 560)
    assert len(res.rows) == 4 and [r.cut for r in res.rows.rows] == [False, False, False, True]
    assert res.rows.row_of.tolist() == [0] * 22 + [1] * 22 + [2] * 22 + [3] * 10
    assert res.rows.rows[2].slope == pytest.approx(0.08, abs=1e-3)
    assert [(f.row, f.name, f.facings) for f in res.facings] == [(0, "cola", 22), (1, "cola", 22), (2, "cola", 22), (3, "chips", 10)]
    assert res.gaps == []


def test_a_few_boxes_just_below_a_shelf_are_not_a_shelf_of_their_own():
    """Three shelves 250 px apart; 60 px under the second one's base two boxes end (the tops of
    two tall products of the third shelf, read only in part by a detector). Shelves are spaced
    alike: a short row less than half the usual spacing below the row above is not a shelf
    (its products would reach through the shelf above), so the boxes join the row below, and
    the detector's partial reading adds no row of empty facings across the photo."""
    boxes, labels = [], []
    for base in (200, 450, 700):
        b, l = shelf_row(base, 15, labels=[0] * 15)
        boxes += b
        labels += l
    boxes += [[90, 440, 130, 510], [315, 450, 355, 510]]
    labels += [2, 2]
    b, l, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 3 and rows.row_of[-2:].tolist() == [2, 2]
    assert gaps == [] and [len(c) for c in cols] == [15, 15, 15]


def test_a_few_boxes_spread_over_a_shelf_close_above_the_next_are_no_shelf():
    """Four shelves 250 px apart; four bars (40 high) spread along the whole length of the
    last one end 115 px above its base (the top units of stacks whose lower units a detector
    missed). They span the shelf but are four boxes where a shelf holds fifteen: a row that
    sparse, less than half the usual spacing above the next, is no shelf of its own, so they
    join the row below and make no row of empty facings between them."""
    boxes, labels = [], []
    for base in (200, 450, 700, 950):
        b, l = shelf_row(base, 15, labels=[0] * 15)
        boxes += b
        labels += l
    boxes += [[45 * k, 795, 45 * k + 40, 835] for k in (0, 4, 9, 14)]  # on top of products 0, 4, 9, 14
    labels += [1] * 4
    b, l, rows, cols, gaps = run(boxes, labels)
    assert len(rows) == 4 and rows.row_of[-4:].tolist() == [3] * 4
    assert gaps == [] and [len(c) for c in cols] == [15, 15, 15, 15]


def test_a_row_with_a_lone_box_keeps_its_own_tilt():
    """Two rows tilted down to the right (0.06: the photo's tilt), the third, under
    perspective, up (-0.02), and one box 30 px below its line just after its right end (a
    detector's loose box): too few to fit a tilt, the lone box's line takes the photo's, yet
    it is a fragment of the third row. That row's base line is fitted through all its boxes,
    so it keeps its own tilt, not the mean of its fragments' lines."""
    boxes = []
    for base, slope in ((200, 0.06), (450, 0.06), (700, -0.02)):
        boxes += shelf_row(base, 15, slope=slope)[0]
    x = 15 * 45.0
    y = 700 - 0.02 * (x + 20) + 30
    boxes.append([x, y - 100, x + 40, y])
    b, l, rows, cols, gaps = run(boxes, [0] * len(boxes))
    assert len(rows) == 3 and rows.row_of[-1] == 2
    assert rows.rows[2].slope == pytest.approx(-0.02, abs=1e-3)
    assert np.allclose(rows.rows[2].base_y((b[30:45, 0] + b[30:45, 2]) / 2), b[30:45, 3], atol=0.5)
