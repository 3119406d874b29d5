"""Sliced inference (detect/infer/slicing.py and Predictor): the window grid, the scale choice,
merging (touching products of one class stay two boxes, a product across a border becomes one),
and the learned scale stored in checkpoints and exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _predict_helpers import CLASSES
from detect.config import Preprocess
from detect.errors import UsageError
from detect.infer.predict import Predictor
from detect.infer.slicing import (SliceSettings, cut_edges, merge_slices, nmm_merge, nms_merge, parse_slice,
                                  probe_start, probe_windows, side_from_probes, slice_side, slice_windows)


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("h, w, side, overlap", [(3000, 4000, 800, 0.25), (1920, 2560, 640, 0.5), (700, 5000, 640, 0.2),
                                                 (641, 641, 640, 0.25), (1000, 1000, 333, 0.0)])
def test_windows_cover_the_photo_with_the_overlap(h, w, side, overlap):
    wins = slice_windows(h, w, side, overlap)
    assert wins.dtype == np.int64 and wins.shape[1] == 4
    assert (wins[:, 0] >= 0).all() and (wins[:, 1] >= 0).all() and (wins[:, 2] <= w).all() and (wins[:, 3] <= h).all()
    assert ((wins[:, 2] - wins[:, 0]) == min(side, w)).all() and ((wins[:, 3] - wins[:, 1]) == min(side, h)).all()
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in wins:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    for axis in (0, 1):  # neighbours along each axis share at least overlap * side
        starts = sorted(set(wins[:, axis].tolist()))
        if len(starts) > 1:
            assert max(np.diff(starts)) <= side * (1 - overlap) + 1


def test_a_photo_smaller_than_a_slice_is_one_window():
    np.testing.assert_array_equal(slice_windows(300, 500, 640, 0.25), [[0, 0, 500, 300]])
    np.testing.assert_array_equal(slice_windows(300, 900, 640, 0.25), [[0, 0, 640, 300], [260, 0, 900, 300]])


def test_probe_windows_grow_from_the_centre_to_the_whole_photo():
    p = probe_windows(3000, 4000, 320)
    assert [int(x1 - x0) for x0, _, x1, _ in p[:-1]] == [640] * 5 + [1280, 2560]
    np.testing.assert_array_equal(p[-1], [0, 0, 4000, 3000])
    assert all(abs((x0 + x1) / 2 - 2000) <= 1 and abs((y0 + y1) / 2 - 1500) <= 1 for x0, y0, x1, y1 in p[[0, 5, 6, 7]])
    assert {(int((x0 + x1) / 2), int((y0 + y1) / 2)) for x0, y0, x1, y1 in p[1:5]} == {(1000, 750), (3000, 750), (1000, 2250), (3000, 2250)}
    assert (p[:, :2] >= 0).all() and (p[:, 2] <= 4000).all() and (p[:, 3] <= 3000).all()
    np.testing.assert_array_equal(probe_windows(200, 300, 320), [[0, 0, 300, 200]])


def test_a_model_of_product_photos_is_probed_at_the_photo_scale_first():
    """groceries learned products of 116 px in a 224 input: seen from twice as far they come out
    at 58 px, which it misreads, so its probe starts with windows of the input's side."""
    assert probe_start(224, 116.0) == 224 and probe_start(320, 64.0) == 640 and probe_start(320, 0.0) == 640
    p = probe_windows(672, 672, 224, probe_start(224, 116.0))
    assert [int(x1 - x0) for x0, _, x1, _ in p] == [224] * 5 + [448, 672]
    np.testing.assert_array_equal(probe_windows(3000, 4000, 320, 640), probe_windows(3000, 4000, 320))


def test_the_slice_shows_products_at_the_learned_size():
    # products of 200 photo px, learned at 64 input px with a 320 input: windows of 1000 px
    assert slice_side(3000, 4000, 320, 64.0, 200.0) == 1000
    assert slice_side(3000, 4000, 320, 64.0, 2000.0) is None  # products that big: the whole photo is right
    assert slice_side(3000, 4000, 320, 64.0, 10.0) == 320  # never blown up beyond the input
    prior = slice_side(3000, 4000, 320, 64.0, None)  # nothing measured: a product is ~0.4% of the photo
    assert 320 < prior < 4000 and prior == round(320 * (0.004 * 12e6) ** 0.5 / 64)


def test_the_closest_confident_probe_gives_the_product_size():
    wins = np.asarray([[0, 0, 640, 640], [0, 0, 1280, 1280], [0, 0, 4000, 3000]])
    sizes = [np.full(12, 100.0), np.full(9, 180.0), np.full(5, 400.0)]  # farther views read only big products, or junk
    scores = [np.full(12, 0.8), np.full(9, 0.8), np.full(5, 0.9)]
    assert side_from_probes(sizes, scores, wins) == 100.0
    scores[0] = np.full(12, 0.1)  # the closest view unsure: the next one
    assert side_from_probes(sizes, scores, wins) == 180.0
    assert side_from_probes(sizes, [np.full(12, 0.1), np.full(9, 0.1), np.full(5, 0.1)], wins) is None
    # views of one size are pooled: two windows of 2 products each make enough together
    two = np.asarray([[0, 0, 640, 640], [640, 0, 1280, 640]])
    assert side_from_probes([np.asarray([90.0, 110.0]), np.asarray([100.0, 120.0])], [np.full(2, 0.9)] * 2, two,
                            quantile=0.5) == 105.0


def test_the_smaller_products_of_a_mixed_photo_set_the_scale():
    """Products of two sizes in one photo (small and large packs, or parts of a photo at two
    distances): the slices show the lower quartile at the learned size, so the small ones are
    not shrunk below what the model reads; the large ones come out bigger, which it reads."""
    wins = np.asarray([[0, 0, 640, 640], [0, 0, 4000, 3000]])
    sizes = [np.concatenate([np.full(6, 100.0), np.full(6, 200.0)]), np.full(3, 400.0)]
    scores = [np.full(12, 0.9), np.full(3, 0.9)]
    small = side_from_probes(sizes, scores, wins)
    assert small == 100.0 and side_from_probes(sizes, scores, wins, quantile=0.5) == 150.0
    side = slice_side(3000, 4000, 320, 64.0, small)
    assert side == 500  # the 100-px products at 64 input px; the 200-px ones at 128
    # one size of product: any quantile is that size
    assert side_from_probes([np.full(12, 100.0), np.full(3, 400.0)], scores, wins) == 100.0


def test_settings_are_checked():
    assert parse_slice("AUTO") == "auto" and parse_slice("off") == "off" and parse_slice("800") == 800
    for bad in ("big", "10", "-5"):
        with pytest.raises(ValueError, match="--slice"):
            parse_slice(bad)
    with pytest.raises(ValueError, match="overlap"):
        SliceSettings(overlap=0.95)
    with pytest.raises(ValueError, match="merge"):
        SliceSettings(merge="wbf")


# ----------------------------------------------------------------------------- merging
def _two_windows():
    """Two 600-px windows of a 1000 x 600 photo sharing x in [400, 600)."""
    return np.asarray([[0, 0, 600, 600], [400, 0, 1000, 600]])


def test_cut_edges_are_inner_window_edges_only():
    wins = _two_windows()
    boxes = np.float32([[450, 100, 600, 200], [0, 100, 80, 200], [400, 300, 520, 400]])
    owner = wins[[0, 0, 1]]
    cut = cut_edges(boxes, owner, 600, 1000)
    assert cut.tolist() == [[False, False, True, False],  # touches window 0's right edge, inside the photo
                            [False, False, False, False],  # touches the photo's own left border
                            [True, False, False, False]]


def test_touching_products_of_one_class_stay_two_boxes():
    wins = _two_windows()
    a, b = [420, 100, 500, 300], [500, 100, 580, 300]  # side by side, both inside the shared zone
    boxes = np.float32([a, b, a, b])  # each window sees both whole
    owner = wins[[0, 0, 1, 1]]
    for merge in (merge_slices, nms_merge):
        out, _, _ = merge(boxes, np.float32([0.9, 0.8, 0.85, 0.7]), np.zeros(4, np.int64), owner, 600, 1000)
        assert len(out) == 2, merge.__name__
    # SAHI's greedy IoS merge joins them once the detector's boxes overlap a little (dense shelves)
    a2, b2 = [420, 100, 505, 300], [495, 100, 580, 300]
    out, _, _ = nmm_merge(np.float32([a2, b2]), np.float32([0.9, 0.8]), np.zeros(2, np.int64), owner[:2], 600, 1000, ios=0.05)
    assert len(out) == 1
    out, _, _ = merge_slices(np.float32([a2, b2]), np.float32([0.9, 0.8]), np.zeros(2, np.int64), owner[:2], 600, 1000)
    assert len(out) == 2


def test_a_product_across_the_border_becomes_one_box():
    wins = _two_windows()
    # a wide product [300, 700): window 0 sees [300, 600) (cut right), window 1 [400, 700) (cut left)
    boxes = np.float32([[300, 100, 600, 300], [400, 102, 700, 298]])
    out, scores, labels = merge_slices(boxes, np.float32([0.9, 0.7]), np.zeros(2, np.int64), wins, 600, 1000)
    assert len(out) == 1
    np.testing.assert_allclose(out[0], [300, 100, 700, 300])
    assert scores[0] == pytest.approx(0.9)
    # plain NMS keeps both pieces (IoU 0.5)
    assert len(nms_merge(boxes, np.float32([0.9, 0.7]), np.zeros(2, np.int64), wins, 600, 1000, iou=0.6)[0]) == 2


def test_a_faint_piece_does_not_stretch_a_confident_product():
    """At a 0.01 threshold a product has faint boxes around it: a faint cut box that pairs with a
    confident piece must not stretch the union over the neighbours (a chain through faint boxes
    joined products on the 4x3 sheets); confident pieces of one product still join."""
    wins = _two_windows()
    # product [300, 700) x [100, 300): two confident pieces; a faint box of window 1, cut left,
    # overlapping the left piece across the shared zone and aligned with it, reaching far right
    boxes = np.float32([[300, 100, 600, 300], [400, 102, 700, 298], [400, 60, 950, 340]])
    out, scores, _ = merge_slices(boxes, np.float32([0.9, 0.7, 0.02]), np.zeros(3, np.int64), wins[[0, 1, 1]], 600, 1000)
    np.testing.assert_allclose(out[0], [300, 100, 700, 300])
    assert scores[0] == pytest.approx(0.9)
    assert not any(b[2] > 900 and s > 0.1 for b, s in zip(out, scores))
    # the faint box alone with the left piece: not joined either, whatever the order of the boxes
    out, scores, _ = merge_slices(boxes[[2, 0]], np.float32([0.02, 0.9]), np.zeros(2, np.int64), wins[[1, 0]], 600, 1000)
    np.testing.assert_allclose(out[0], [300, 100, 600, 300])
    # pieces the detector is about as sure of still join (0.5 of the best, PIECE_SCORE)
    out, _, _ = merge_slices(boxes[:2], np.float32([0.9, 0.46]), np.zeros(2, np.int64), wins, 600, 1000)
    np.testing.assert_allclose(out, [[300, 100, 700, 300]])


def test_chains_of_pieces_join_within_one_product_only():
    """Three windows in a row: a long product cut twice becomes one box; the seed is the best
    piece, and a chain grows through pieces scoring at least PIECE_SCORE of it."""
    from detect.infer.slicing import PIECE_SCORE, _groups_by_score

    wins = np.asarray([[0, 0, 600, 600], [400, 0, 1000, 600], [800, 0, 1400, 600]])
    boxes = np.float32([[300, 100, 600, 300], [400, 100, 1000, 300], [800, 100, 1100, 300]])
    out, _, _ = merge_slices(boxes, np.float32([0.8, 0.9, 0.85]), np.zeros(3, np.int64), wins, 600, 1400)
    np.testing.assert_allclose(out, [[300, 100, 1100, 300]])
    linked = np.asarray([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)
    assert _groups_by_score(linked, np.asarray([0.8, 0.9, 0.85]), PIECE_SCORE) == [[1, 0, 2]]
    assert _groups_by_score(linked, np.asarray([0.8, 0.9, 0.01]), PIECE_SCORE) == [[1, 0], [2]]
    assert _groups_by_score(linked, np.asarray([0.01, 0.9, 0.01]), 0.0) == [[1, 0, 2]]  # 0: any link joins


def test_one_product_seen_whole_by_two_windows_is_placed_by_both():
    """Two windows' boxes of one product: one box, at their score-weighted mean; a faint box
    (under half the kept score) does not move it; plain NMS keeps the best box as it is."""
    wins = _two_windows()
    boxes = np.float32([[420, 100, 520, 300], [440, 100, 540, 300], [450, 90, 560, 310]])
    owner, labels = wins[[0, 1, 1]], np.zeros(3, np.int64)
    out, scores, _ = merge_slices(boxes, np.float32([0.6, 0.9, 0.05]), labels, owner, 600, 1000)
    np.testing.assert_allclose(out[0], [432, 100, 532, 300], atol=1e-3)  # (0.6 * 420 + 0.9 * 440) / 1.5
    assert scores[0] == pytest.approx(0.9) and out.dtype == np.float32
    np.testing.assert_allclose(nms_merge(boxes, np.float32([0.6, 0.9, 0.05]), labels, owner, 600, 1000)[0][0],
                               [440, 100, 540, 300])
    # touching products of one class are not averaged into each other
    a, b = [420, 100, 500, 300], [500, 100, 580, 300]
    out, _, _ = merge_slices(np.float32([a, b, a, b]), np.float32([0.9, 0.8, 0.85, 0.7]), np.zeros(4, np.int64),
                             wins[[0, 0, 1, 1]], 600, 1000)
    np.testing.assert_allclose(sorted(out.tolist()), [a, b])


def test_a_piece_is_dropped_when_the_other_window_saw_the_whole_product():
    wins = _two_windows()
    # product [540, 680) inside window 1, cut by window 0's right edge at 600
    boxes = np.float32([[540, 100, 600, 300], [540, 100, 680, 300]])
    out, _, _ = merge_slices(boxes, np.float32([0.95, 0.8]), np.zeros(2, np.int64), wins, 600, 1000)
    np.testing.assert_allclose(out, [[540, 100, 680, 300]])


def test_pieces_of_other_classes_are_not_joined_and_neighbours_not_fused():
    wins = _two_windows()
    boxes = np.float32([[300, 100, 600, 300], [400, 100, 700, 300]])
    out, _, labels = merge_slices(boxes, np.float32([0.9, 0.7]), np.asarray([0, 1]), wins, 600, 1000)
    assert sorted(labels.tolist()) == [0, 1]
    # the piece of product B cut by window 0 and the piece of its left neighbour A cut by window 1
    # do not overlap: they stay apart
    boxes = np.float32([[560, 100, 600, 300], [400, 100, 560, 300]])
    out, _, _ = merge_slices(boxes, np.float32([0.9, 0.9]), np.zeros(2, np.int64), wins, 600, 1000)
    assert len(out) == 2


def test_many_detections_merge():
    rng = np.random.default_rng(0)
    wins = slice_windows(3000, 4000, 800, 0.25)
    xy = rng.uniform(0, 3800, (3000, 2)) * [1, 0.7]
    boxes = np.concatenate([xy, xy + rng.uniform(40, 200, (3000, 2))], 1).astype(np.float32)
    owner = wins[rng.integers(len(wins), size=3000)]
    out, s, lab = merge_slices(boxes, rng.random(3000).astype(np.float32), rng.integers(10, size=3000), owner, 3000, 4000)
    assert 1000 <= len(out) <= 3000 and np.all(np.diff(s) <= 0)


# ----------------------------------------------------------------------------- in Predictor
class Squares(torch.nn.Module):
    """Eval-mode stand-in: a box around every bright 8-connected blob of the input, at its
    pixels (scores 0.9, class 0): a perfect detector at any scale, for checking geometry."""

    def __init__(self):
        super().__init__()
        self.score_thresh, self.nms_thresh, self.max_det = 0.01, 0.45, 1000
        self.calls = []

    @staticmethod
    def blobs(im: torch.Tensor, min_side: int = 0) -> torch.Tensor:
        """Boxes float[N, 4] around the bright blobs of one input [3, S, S], both sides >= ``min_side``."""
        import cv2

        mask = (im[0] > 0.9).numpy().astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        return torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:] if min(w, h) >= min_side],
                            dtype=torch.float32).reshape(-1, 4)

    def forward(self, images):
        self.calls.append(len(images))
        out = []
        for im in images:
            b = self.blobs(im)
            out.append({"boxes": b, "scores": torch.full((len(b),), 0.9), "labels": torch.zeros(len(b), dtype=torch.int64)})
        return out


def _shelf(h=1200, w=1600, side=40, gap=20):
    img = np.zeros((h, w, 3), np.uint8)
    truth = []
    for y in range(10, h - side, side + gap):
        for x in range(10, w - side, side + gap):
            img[y:y + side, x:x + side] = 255
            truth.append([x, y, x + side, y + side])
    return img, np.float32(truth)


def test_predictor_slices_a_big_photo_and_maps_back():
    img, truth = _shelf()
    p = Predictor.from_model(Squares(), Preprocess(imgsz=64, object_size=16.0), CLASSES, conf=0.3, fuse=False,
                             backend="torch", slice=256, overlap=0.25, slice_batch=7)
    (d,) = p.predict([img])
    assert len(d) == len(truth)
    from detect.boxes import box_iou

    iou = box_iou(torch.from_numpy(d.boxes), torch.from_numpy(truth))
    assert float(iou.max(1).values.min()) > 0.8  # every box on a product (resize rounding allowed)
    assert max(p.model.calls) <= 7  # slices go through in batches of slice_batch
    whole = Predictor.from_model(Squares(), Preprocess(imgsz=64), CLASSES, conf=0.3, fuse=False, backend="torch")
    assert len(whole.predict([img])[0]) < len(truth)  # squeezed to 64 px the products merge and vanish


def test_the_full_frame_pass_finds_products_larger_than_a_window():
    img = np.zeros((1200, 1600, 3), np.uint8)
    truth = np.float32([[100, 100, 600, 700], [700, 300, 1300, 900], [1350, 50, 1550, 1150]])
    for x0, y0, x1, y1 in truth.astype(int):
        img[y0:y1, x0:x1] = 255
    kw = dict(conf=0.3, fuse=False, backend="torch", slice=256, overlap=0.25)
    (d,) = Predictor.from_model(Squares(), Preprocess(imgsz=64), CLASSES, full_frame=True, **kw).predict([img])
    from detect.boxes import box_iou

    assert len(d) == 3 and float(box_iou(torch.from_numpy(truth), torch.from_numpy(d.boxes)).max(1).values.min()) > 0.9
    (pieces,) = Predictor.from_model(Squares(), Preprocess(imgsz=64), CLASSES, **kw).predict([img])
    assert len(pieces) >= 3  # without it each is seen in pieces (joined across borders where they meet)


def test_auto_measures_the_products_and_slices_at_the_learned_scale():
    img, truth = _shelf()  # products of 40 px; the model learned 16 input px at 64: windows of 160
    p = Predictor.from_model(Squares(), Preprocess(imgsz=64, object_size=16.0), CLASSES, conf=0.3, fuse=False,
                             backend="torch", slice="auto")
    (side,) = p.slice_sides([img])
    assert 120 <= side <= 200
    assert p.slice_sides([img[:90, :90]]) == [None]  # small enough to read whole
    given = Predictor.from_model(Squares(), Preprocess(imgsz=64, object_size=16.0), CLASSES, slice="auto",
                                 object_size=80.0, fuse=False, backend="torch")
    assert given.slice_sides([img]) == [320]
    with pytest.raises(UsageError, match="overlap"):
        Predictor.from_model(Squares(), Preprocess(imgsz=64), CLASSES, overlap=2.0)


def test_scale_is_stored_in_checkpoints_and_exports(tmp_path):
    from detect.config import ExperimentConfig, ModelConfig
    from detect.engine.checkpoint import load_model, save_checkpoint
    from detect.models.build import build_model

    cfg = ExperimentConfig(model=ModelConfig(name="ssd", pretrained="none", num_classes=3),
                           preprocess=Preprocess(imgsz=64, object_size=21.5))
    model = build_model(cfg.model, cfg.preprocess)
    path = tmp_path / "w.pt"
    save_checkpoint(path, config=cfg.to_dict(), classes=["a", "b", "c"], model=model.state_dict())
    _, got, _ = load_model(path, "cpu")
    assert got.preprocess.object_size == 21.5 and got.preprocess.resize == "letterbox"
    pytest.importorskip("onnxruntime")
    from detect.infer.export import export_onnx, load_exportable
    from detect.models.onnx_ssd import OnnxSSD

    wrapper, meta = load_exportable(path)
    onnx = export_onnx(wrapper, meta, tmp_path / "w.onnx")
    m = OnnxSSD(onnx)
    assert m.preprocess.object_size == 21.5 and m.preprocess.resize == "letterbox"


def test_old_checkpoints_stretch_and_know_no_scale():
    from detect.engine.checkpoint import load_model
    from detect.infer.weights import DEFAULT_WEIGHTS

    _, cfg, _ = load_model(DEFAULT_WEIGHTS, "cpu")
    if cfg.preprocess.object_size == 0.0:  # the shipped weights from before letterboxing
        assert cfg.preprocess.resize == "stretch"


def test_val_slices_large_photos_and_scores_them_in_original_pixels(tmp_path):
    import argparse

    import cv2

    from detect.engine.evaluate import compute_metrics
    from detect.infer.val_cli import needs_slicing, sliced_collector
    from detect.structures import ImageRecord

    img, truth = _shelf(600, 800)
    cv2.imwrite(str(tmp_path / "shelf.png"), img)
    rec = ImageRecord(image=str(tmp_path / "shelf.png"), width=800, height=600, boxes=truth,
                      labels=np.zeros(len(truth), np.int64), difficult=np.zeros(len(truth), bool),
                      truncated=np.zeros(len(truth), bool), annotation="")
    cfg = __import__("detect.config", fromlist=["ExperimentConfig"]).ExperimentConfig(preprocess=Preprocess(imgsz=64, object_size=16.0))
    args = argparse.Namespace(slice=200, overlap=0.25, full_frame=False, object_size=None, merge="cut")
    assert needs_slicing([rec], 64, 200) and not needs_slicing([rec], 64, "off")
    got = sliced_collector(args)(Squares(), cfg, CLASSES, [rec], torch.device("cpu"), 1000)
    assert len(got["dets"][0]["boxes"]) == len(truth)
    m, _ = compute_metrics(got["dets"], got["gts"], got["sizes"], CLASSES[:1], max_det=300)
    assert m["voc_ap50"] > 0.99
    off = argparse.Namespace(slice="off", overlap=0.25, full_frame=False, object_size=None, merge="cut")
    assert sliced_collector(off)(Squares(), cfg, CLASSES, [rec], torch.device("cpu"), 1000) is None


def test_a_photo_the_model_reads_whole_costs_one_pass():
    """auto probes a large photo in one batch (centre crops and the whole photo); when its
    products come out at about the learned size read whole, the probe's whole view is the
    answer: no second run."""
    img = np.zeros((480, 640, 3), np.uint8)
    for x in range(20, 560, 130):
        img[150:250, x:x + 100] = 255  # 100-px products: 10 input px at 64, the size the model learned
    model = Squares()
    p = Predictor.from_model(model, Preprocess(imgsz=64, object_size=10.0), CLASSES, conf=0.3, fuse=False,
                             backend="torch", slice="auto")
    (d,) = p.predict([img])
    assert len(model.calls) == 1 and len(d) == 5


def test_probes_and_slices_of_a_batch_run_slice_batch_at_a_time():
    """Three large photos in one predict: their probe views and slices go through the network
    at most ``slice_batch`` per call (the probe took all photos' views in one call), with the
    same detections as one big call."""
    img, _ = _shelf(600, 800)
    found, calls = [], []
    for batch in (64, 3):
        model = Squares()
        p = Predictor.from_model(model, Preprocess(imgsz=64, object_size=10.0), CLASSES, conf=0.3, fuse=False,
                                 backend="torch", slice="auto", slice_batch=batch)
        found.append(p.predict([img, img[:500], img[:, :700]]))
        calls.append(model.calls)
    assert len(calls[0]) == 2 and min(calls[0]) > 3  # the probe views, then the slices
    assert max(calls[1]) <= 3 and len(calls[1]) == sum(-(-n // 3) for n in calls[0])
    for a, b in zip(*found):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores) and len(a) > 10
