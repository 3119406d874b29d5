"""Evaluation math: VOC AP on hand-computed cases, the COCO tool where the protocols coincide,
maxDets up to 1000, the confusion matrix and the plots."""

from __future__ import annotations

import numpy as np
import pytest

from detect.engine import metrics as M


def gt(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    return {"boxes": boxes, "labels": np.asarray(labels, np.int64).reshape(n),
            "difficult": np.zeros(n, bool) if difficult is None else np.asarray(difficult, bool)}


def det(boxes, scores, labels):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return {"boxes": boxes, "scores": np.asarray(scores, np.float64), "labels": np.asarray(labels, np.int64)}


A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
FAR = [70, 70, 80, 80]

# 3 GTs, 4 detections ranked TP, FP, TP, TP:
#   precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1
#   all-point: envelope 1, 3/4, 3/4 over recall steps of 1/3 -> 1/3 + 1/4 + 1/4 = 5/6
#   11-point: recall >= 0, .1, .2, .3 -> 1 (4 points); >= .4 ... 1.0 -> 3/4 (7 points) -> 9.25 / 11
HAND_GT = [gt([A, B, C], [0, 0, 0])]
HAND_DET = [det([A, FAR, B, C], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])]


def test_voc_ap_hand_computed_all_point_and_11_point():
    r = M.voc_evaluate(HAND_DET, HAND_GT, num_classes=1)
    np.testing.assert_allclose(r["precision"][0], [1, 1 / 2, 2 / 3, 3 / 4])
    np.testing.assert_allclose(r["recall"][0], [1 / 3, 1 / 3, 2 / 3, 1])
    assert r["ap"][0] == pytest.approx(5 / 6, abs=1e-12)
    assert r["ap07"][0] == pytest.approx(9.25 / 11, abs=1e-12)
    assert (r["tp"][0], r["fp"][0], r["n_gt"][0], r["n_det"][0]) == (3, 1, 3, 4)
    assert r["map"] == pytest.approx(5 / 6)


def test_voc_ap_curve_functions_directly():
    # a single TP at recall 1 after one FP: precision 1/2 everywhere
    assert M.voc_ap(np.array([0.0, 1.0]), np.array([0.0, 0.5])) == pytest.approx(0.5)
    assert M.voc_ap(np.array([0.0, 1.0]), np.array([0.0, 0.5]), use_07_metric=True) == pytest.approx(0.5)
    # recall never reaches 1: missing recall counts as precision 0
    assert M.voc_ap(np.array([0.5]), np.array([1.0])) == pytest.approx(0.5)
    assert M.voc_ap(np.array([0.5]), np.array([1.0]), use_07_metric=True) == pytest.approx(6 / 11)


def test_difficult_hits_are_ignored_and_not_counted():
    # the same case plus a difficult box D, hit by a detection ranked second: it must vanish
    d_box = [60, 0, 70, 10]
    gts = [gt([A, B, C, d_box], [0, 0, 0, 0], [False, False, False, True])]
    dets = [det([A, d_box, FAR, B, C], [0.9, 0.85, 0.8, 0.7, 0.6], [0] * 5)]
    r = M.voc_evaluate(dets, gts, num_classes=1)
    assert r["n_gt"][0] == 3 and r["n_difficult"][0] == 1 and r["n_det"][0] == 5
    assert (r["tp"][0], r["fp"][0]) == (3, 1)
    assert r["ap"][0] == pytest.approx(5 / 6) and r["ap07"][0] == pytest.approx(9.25 / 11)


def test_detection_whose_best_box_is_difficult_is_ignored_even_if_a_normal_box_overlaps():
    # VOCevaldet takes the max-IoU box first: here the difficult one (IoU 1) beats A (IoU 0.6)
    a, d_box = [0, 0, 10, 10], [0, 0, 10, 6]
    assert M.box_iou_np(np.array([d_box]), np.array([a]))[0, 0] == pytest.approx(0.6)
    gts = [gt([a, d_box], [0, 0], [False, True])]
    r = M.voc_evaluate([det([d_box], [0.9], [0])], gts, num_classes=1)
    assert (r["tp"][0], r["fp"][0], r["n_gt"][0]) == (0, 0, 1)
    assert r["ap"][0] == 0.0  # a class with ground truth and nothing found scores 0


def test_duplicates_are_false_positives_and_taken_box_is_not_reassigned():
    # two detections on A: the lower one is a duplicate (FP)
    r = M.voc_evaluate([det([A, A], [0.9, 0.8], [0, 0])], [gt([A], [0])], num_classes=1)
    assert (r["tp"][0], r["fp"][0]) == (1, 1)
    assert r["ap"][0] == pytest.approx(1.0)  # the FP ranks after full recall
    # devkit rule: the second detection's best box (A) is taken -> FP, although B (IoU >= 0.5) is free
    a, b, d2 = [0, 0, 10, 10], [2, 0, 12, 10], [1, 0, 11, 10]
    iou = M.box_iou_np(np.array([d2]), np.array([a, b]))[0]
    assert iou[0] == iou[1] == pytest.approx(9 / 11)  # tie: argmax takes the first box, A
    r = M.voc_evaluate([det([a, d2], [0.9, 0.8], [0, 0])], [gt([a, b], [0, 0])], num_classes=1)
    assert (r["tp"][0], r["fp"][0]) == (1, 1)
    assert r["ap"][0] == pytest.approx(0.5)


def test_iou_threshold_is_inclusive_and_ranking_is_stable():
    half = [0, 0, 10, 5]  # IoU with A is exactly 0.5: a hit (devkit: ovmax >= minoverlap)
    r = M.voc_evaluate([det([half], [0.5], [0])], [gt([A], [0])], num_classes=1)
    assert r["tp"][0] == 1
    # equal scores: image order decides (FP in image 0 ranks before TP in image 1)
    r = M.voc_evaluate([det([FAR], [0.5], [0]), det([A], [0.5], [0])], [gt([], []), gt([A], [0])], num_classes=1)
    np.testing.assert_allclose(r["precision"][0], [0.0, 0.5])
    assert r["ap"][0] == pytest.approx(0.5)


def test_no_detections_no_ground_truth_and_the_mean():
    gts = [gt([A, B], [0, 1])]
    dets = [det([A, FAR], [0.9, 0.9], [0, 2])]  # class 1 missed; class 2 has no ground truth
    r = M.voc_evaluate(dets, gts, num_classes=3)
    assert r["ap"][0] == pytest.approx(1.0)
    assert r["ap"][1] == 0.0 and r["n_det"][1] == 0
    assert np.isnan(r["ap"][2]) and np.isnan(r["ap07"][2]) and r["n_det"][2] == 1
    assert r["map"] == pytest.approx(0.5)  # NaN class left out of the mean, as VOC does
    empty = M.voc_evaluate([det([], [], [])], [gt([], [])], num_classes=2)
    assert np.isnan(empty["map"]) and np.isnan(empty["map07"])


def test_labels_must_match_per_class():
    # a box of the wrong class is a FP for its class and a miss for the other
    r = M.voc_evaluate([det([A], [0.9], [1])], [gt([A], [0])], num_classes=2)
    assert r["ap"][0] == 0.0 and np.isnan(r["ap"][1]) and r["fp"][1] == 1


def _random_case(seed: int, n_images: int = 12, nc: int = 3):
    """Well-separated boxes on a grid (no two GTs overlap, so VOC's and COCO's matching agree),
    jittered true detections, duplicates and random false positives, no difficult boxes."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(n_images):
        cells = rng.choice(16, size=rng.integers(0, 8), replace=False)
        xy = np.stack([cells % 4 * 50 + 5, cells // 4 * 50 + 5], 1).astype(float)
        boxes = np.concatenate([xy, xy + rng.uniform(15, 30, (len(xy), 2))], 1)
        labels = rng.integers(0, nc, len(xy))
        gts.append(gt(boxes, labels))
        keep = rng.random(len(boxes)) < 0.8
        d = boxes[keep] + rng.uniform(-4, 4, (int(keep.sum()), 4))
        dl = labels[keep]
        dup = rng.random(len(d)) < 0.2
        fp_xy = rng.uniform(0, 180, (rng.integers(0, 4), 2))
        fps = np.concatenate([fp_xy, fp_xy + 20], 1)
        d_all = np.concatenate([d, d[dup] + 1, fps])
        l_all = np.concatenate([dl, dl[dup], rng.integers(0, nc, len(fps))])
        dets.append(det(d_all, rng.random(len(d_all)), l_all))
    return dets, gts, [(200, 200)] * n_images


def test_one_box_per_class_matches_coco_ap50_exactly():
    # with one ground truth per class recall jumps 0 -> 1 once, so VOC all-point AP and COCO's
    # 101-point AP both equal the envelope precision at that rank: exact agreement
    gts = [gt([A, B], [0, 1]), gt([C], [2])]
    dets = [det([FAR, A, B, B], [0.95, 0.9, 0.3, 0.8], [0, 0, 1, 1]), det([FAR, FAR, C], [0.9, 0.8, 0.7], [2, 2, 2])]
    voc = M.voc_evaluate(dets, gts, 3)
    coco = M.coco_evaluate(dets, gts, [(100, 100)] * 2, 3, max_det=100)
    np.testing.assert_allclose(voc["ap"], [0.5, 1.0, 1 / 3])
    np.testing.assert_allclose(coco["per_class_ap50"], voc["ap"], atol=1e-12)
    assert coco["ap50"] == pytest.approx(voc["map"], abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_voc_all_point_close_to_coco_101_point_at_iou_05(seed):
    # Same matching on separated boxes; the AP differs only by the interpolation: COCO samples
    # the monotone envelope at 101 recalls, VOC integrates it exactly. For a non-increasing step
    # function on [0, 1] the two differ by less than 1/100 + 1/101 < 0.02.
    dets, gts, sizes = _random_case(seed)
    voc = M.voc_evaluate(dets, gts, 3)
    coco = M.coco_evaluate(dets, gts, sizes, 3, max_det=1000)
    np.testing.assert_allclose(coco["per_class_ap50"], voc["ap"], atol=0.02)
    assert abs(coco["ap50"] - voc["map"]) < 0.02


def test_coco_max_dets_up_to_1000():
    # 1000 boxes in one image (a dense shelf), each found exactly
    yy, xx = np.divmod(np.arange(1000), 40)
    boxes = np.stack([xx * 10, yy * 10, xx * 10 + 8, yy * 10 + 8], 1).astype(float)
    g = [gt(boxes, np.zeros(1000))]
    d = [det(boxes, np.linspace(1, 0.5, 1000), np.zeros(1000))]
    full = M.coco_evaluate(d, g, [(250, 400)], 1, max_det=1000)
    assert full["max_dets"] == [1, 10, 1000]
    assert full["ap"] == pytest.approx(1.0) and full["ar"] == pytest.approx(1.0)
    # capped at 100 (pycocotools' default): recall stops at 0.1 -> 11 of 101 recall points
    capped = M.coco_evaluate(d, g, [(250, 400)], 1, max_det=100)
    assert capped["ap"] == pytest.approx(11 / 101) and capped["ar"] == pytest.approx(0.1)
    assert M.voc_evaluate(d, g, 1)["ap"][0] == pytest.approx(1.0)  # VOC has no per-image cap


def test_coco_difficult_is_ignored_and_empty_results_work():
    d_box = [60, 0, 70, 10]
    gts = [gt([A, d_box], [0, 0], [False, True])]
    with_d = M.coco_evaluate([det([A, d_box], [0.5, 0.9], [0, 0])], gts, [(100, 100)], 1)
    assert with_d["ap50"] == pytest.approx(1.0)  # the hit on the difficult box is not a FP
    none = M.coco_evaluate([det([], [], [])], gts, [(100, 100)], 2)
    assert none["ap"] == 0.0 and np.isnan(none["per_class_ap"][1])


def test_pycocotools_fallback_gives_the_same_numbers(monkeypatch):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets, gts, sizes = _random_case(7)
    fast = M.coco_evaluate(dets, gts, sizes, 3, max_det=300)
    monkeypatch.setattr(M, "_coco_api", lambda: (COCO, COCOeval))
    ref = M.coco_evaluate(dets, gts, sizes, 3, max_det=300)
    for key in ("ap", "ap50", "ap75", "ar"):
        assert fast[key] == pytest.approx(ref[key], abs=1e-9), key
    np.testing.assert_allclose(fast["per_class_ap"], ref["per_class_ap"], atol=1e-9)


def test_confusion_matrix_hand_case():
    d_box, missed = [60, 0, 70, 10], [0, 40, 10, 50]
    gts = [gt([A, B, d_box, missed], [0, 1, 1, 0], [False, False, True, False])]
    dets = [det([A, B, d_box, FAR, C], [0.9, 0.8, 0.7, 0.6, 0.1], [0, 0, 1, 1, 0])]
    cm = M.confusion_matrix(dets, gts, num_classes=2)
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = 1  # A found as class 0
    expected[1, 0] = 1  # B (class 1) predicted as class 0
    expected[0, 2] = 1  # the missed box of class 0
    expected[2, 1] = 1  # FAR: a false positive of class 1; d_box ignored; C below conf
    np.testing.assert_array_equal(cm, expected)


def test_plots_are_written(tmp_path):
    from detect.viz.plots import plot_confusion_matrix, plot_curves, plot_pr_curves

    r = M.voc_evaluate(HAND_DET + [det([], [], [])], HAND_GT + [gt([A], [1])], num_classes=3)
    names = ["cola", "chips", "none"]
    curves = {n: (r["recall"][c], r["precision"][c]) for c, n in enumerate(names)}
    pr = plot_pr_curves(curves, dict(zip(names, r["ap"])), tmp_path / "pr.png")
    cm = plot_confusion_matrix(M.confusion_matrix(HAND_DET, HAND_GT, 3), names, tmp_path / "sub" / "cm.png")
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,loss,loc_loss,voc_ap50,lr\n1,3.5,1.2,,0.01\n2,2.9,1.0,0.41,0.009\n3,2.2,0.8,0.55,0.005\n")
    curves_png = plot_curves(csv_path, tmp_path / "results.png")
    for p in (pr, cm, curves_png):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, p
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix(np.zeros((2, 2)), names, tmp_path / "bad.png")


def test_run_plots_decode_and_leave_out_empty_panels(tmp_path):
    import cv2

    from detect.viz.plots import _informative, image_mosaic, plot_confusion_matrices, plot_curves, plot_per_class_ap

    names = [f"class{i:02d}" for i in range(25)]
    rng = np.random.default_rng(0)
    ap = plot_per_class_ap({n: float(v) for n, v in zip(names, rng.random(25))} | {"none": float("nan")}, tmp_path / "ap.png")
    matrix = rng.integers(0, 20, (26, 26))
    counts, normed = plot_confusion_matrices(matrix, names, tmp_path / "cm")
    tiles = [rng.integers(0, 255, (224, 300, 3), dtype=np.uint8) for _ in range(6)]
    mosaic = image_mosaic(tiles, tmp_path / "mosaic.png", columns=4, tile=160, captions=["gt", "pred"] * 3)
    for p in (ap, counts, normed, mosaic):
        img = cv2.imread(str(p))
        assert img is not None and min(img.shape[:2]) > 200, p
    assert cv2.imread(str(mosaic)).shape == (2 * 160, 4 * 160, 3)
    assert cv2.imread(str(counts)).shape[0] > 1000  # 25 classes: big enough to read
    assert not _informative("skipped", np.zeros(3)) and not _informative("lr", np.full(3, 0.01))
    assert _informative("train_loss", np.array([2.0, 1.0])) and _informative("voc_ap50", np.array([np.nan, 0.4, 0.5]))
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,train_loss,skipped,time,voc_ap50\n1,3.5,0,10.2,0.1\n2,2.9,0,11.0,0.3\n")
    plot_curves(csv_path, tmp_path / "results.png")  # two panels (loss and AP), no error


def test_plots_draw_cjk_class_names_as_glyphs(tmp_path):
    """Class names in Chinese or Japanese are drawn with the label font (no 'Glyph missing'
    warning, which is what a font without them gives), and matplotlib's settings are unchanged."""
    import warnings

    import matplotlib

    from detect.viz import plots
    from detect.viz.draw import font_path

    if font_path() is None or plots._extra_family() is None:
        pytest.skip("no label font with CJK glyphs on this machine")
    before = list(matplotlib.rcParams["font.family"])
    names = ["可口可乐", "お茶", "chips"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning
        plots.plot_per_class_ap({n: 0.5 for n in names}, tmp_path / "ap.png")
        plots.plot_confusion_matrix(np.eye(4, dtype=np.int64), names, tmp_path / "cm.png")
    assert list(matplotlib.rcParams["font.family"]) == before
