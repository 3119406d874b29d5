"""TIDE-style error breakdown: each error type on a hand-made case, its fix, and the measured AP
equal to the VOC evaluator's on random detections."""

from __future__ import annotations

import numpy as np
import pytest

from detect.engine.error_breakdown import classify_detections, error_breakdown, format_breakdown
from detect.engine.metrics import voc_evaluate

CLASSES = ["a", "b"]


def _gt(boxes, labels, difficult=None):
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return {"boxes": b, "labels": np.asarray(labels, np.int64),
            "difficult": np.zeros(len(b), bool) if difficult is None else np.asarray(difficult, bool)}


def _det(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "scores": np.asarray(scores, np.float64),
            "labels": np.asarray(labels, np.int64)}


BOX = [0, 0, 100, 100]


@pytest.mark.parametrize("det, kind, gains", [
    (_det([BOX], [0.9], [1]), "cls", "cls"),  # right place, wrong class
    (_det([[0, 0, 100, 30]], [0.9], [0]), "loc", "loc"),  # IoU 0.3, right class
    (_det([[0, 0, 100, 30]], [0.9], [1]), "both", None),  # IoU 0.3, wrong class: dropping it frees nothing
    (_det([[300, 300, 350, 350]], [0.9], [0]), "bkg", None),
])
def test_each_error_type_is_named_and_its_fix_measured(det, kind, gains):
    gts = [_gt([BOX], [0])]
    b = error_breakdown([det], gts, CLASSES)
    assert b["counts"][kind] == 1 and b["ap50"] == 0.0
    if gains:
        assert b["dap"][gains] == pytest.approx(1.0)  # class a: 0 -> 1 (class b has no ground truth)
        assert b["counts"]["missed"] == 0  # the box is covered by the cls/loc detection
    else:
        assert b["counts"]["missed"] == 1 and b["dap"]["missed"] == pytest.approx(0.0)  # a has no other box


def test_duplicates_background_and_missed_boxes_cost_what_their_fix_gains():
    gts = [_gt([BOX, [200, 200, 300, 300]], [0, 0])]
    # a TP, a higher-scored background box and a duplicate of the TP; the second box is missed
    dets = [_det([[300, 0, 360, 60], BOX, [0, 0, 100, 95]], [0.95, 0.9, 0.8], [0, 0, 0])]
    kind, _, taken = classify_detections(dets, gts)
    assert kind[0].tolist() == [6, 0, 2] and taken[0].tolist() == [True, False]  # bkg, tp, dupe
    b = error_breakdown(dets, gts, CLASSES)
    assert b["counts"] == {"cls": 0, "loc": 0, "both": 0, "dupe": 1, "bkg": 1, "missed": 1}
    assert b["ap50"] == pytest.approx(0.25)  # recall 0.5 at precision 0.5
    assert b["dap"]["bkg"] == pytest.approx(0.5 - 0.25)  # the TP ranks first: precision 1 up to recall 0.5
    assert b["dap"]["dupe"] == pytest.approx(0.0)  # the dupe ranks below the TP: no AP lost
    assert b["dap"]["missed"] == pytest.approx(0.5 - 0.25)  # one box of one: recall 1 at precision 1/2
    assert b["weakest"][0] == {"class": "a", "ap50": pytest.approx(0.25), "main": "bkg", "main_dap": pytest.approx(0.25)}
    assert "weakest classes: a 0.250 (bkg +0.250)" in format_breakdown(b)


def test_difficult_boxes_are_ignored_and_a_fixed_duplicate_is_dropped():
    gts = [_gt([BOX, [200, 200, 300, 300]], [0, 0], [False, True])]
    dets = [_det([BOX, [200, 200, 300, 300], [0, 0, 100, 98]], [0.9, 0.8, 0.7], [0, 0, 1])]
    b = error_breakdown(dets, gts, CLASSES)
    assert b["ap50"] == 1.0 and b["counts"]["cls"] == 1  # the b-labelled copy covers a taken box
    assert b["dap"]["cls"] == 0.0  # relabelled, it duplicates the TP and is dropped
    assert b["per_class"]["a"]["main"] == "none"  # nothing to fix: no error type is named as the main one


def test_measured_ap_equals_the_voc_evaluator():
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(30):
        n, k = rng.integers(0, 4), rng.integers(0, 8)
        xy = rng.uniform(0, 200, (n, 2))
        gts.append(_gt(np.hstack([xy, xy + rng.uniform(20, 80, (n, 2))]), rng.integers(0, 3, n), rng.random(n) < 0.1))
        xy = rng.uniform(0, 200, (k, 2))
        dets.append(_det(np.hstack([xy, xy + rng.uniform(20, 80, (k, 2))]), rng.random(k), rng.integers(0, 3, k)))
    for gt, det in zip(gts[:10], dets[:10]):  # some near-perfect detections too
        det["boxes"] = np.vstack([det["boxes"], gt["boxes"] + 2])
        det["scores"] = np.concatenate([det["scores"], rng.random(len(gt["boxes"]))])
        det["labels"] = np.concatenate([det["labels"], gt["labels"]])
    b = error_breakdown(dets, gts, ["x", "y", "z"])
    assert b["ap50"] == pytest.approx(voc_evaluate(dets, gts, 3)["map"], abs=1e-12)
    assert all(v >= -1e-9 for v in b["dap"].values())  # fixing errors never lowers AP
