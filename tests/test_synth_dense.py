"""Dense store shelves (detect/data/synth/dense.py): layout, truth, determinism, the dataset writer."""

import json

import numpy as np
import pytest

from detect.boxes import box_iou
from detect.data.synth.dataset import render_dataset
from detect.data.synth.dense import GAP_RATE, GAP_SEEN, _in_photo, _uncovered, render_dense, truth_json
from detect.data.formats.voc import parse_voc

import torch


@pytest.fixture(scope="module")
def scene():
    return render_dense(5, 2, 1200)


def test_same_seed_same_bytes_other_index_other_scene(scene):
    again = render_dense(5, 2, 1200)
    assert np.array_equal(scene.image, again.image) and np.array_equal(scene.boxes, again.boxes)
    assert not np.array_equal(render_dense(5, 3, 1200).boxes[:5], scene.boxes[:5])


def test_a_store_shelf_is_dense_and_mixed(scene):
    H, W = scene.image.shape[:2]
    assert (H, W) == (900, 1200)
    assert 60 <= len(scene.boxes) <= 400
    assert len(np.unique(scene.labels)) >= 8  # many kinds in one photo
    b = scene.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 3] <= H).all()
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (H * W)
    assert 0.0005 < np.median(area) < 0.02  # each product a small part of the photo
    assert len(scene.rows) >= 5


def test_truth_joins_boxes_to_the_planogram(scene):
    plan = {(p.shelf, p.position): p for p in scene.planogram}
    for i in range(len(scene.boxes)):
        p = plan[(int(scene.shelf[i]), int(scene.position[i]))]
        assert 0 <= scene.facing[i] < p.facings
        if i in set(scene.misplaced.tolist()):
            assert scene.labels[i] != p.label
        else:
            assert scene.labels[i] == p.label
    assert len(set(scene.instance.tolist())) == len(scene.instance)  # one id per product
    # shelves top to bottom: base lines go down the photo
    left = [r[0][1] for r in scene.rows]
    assert left == sorted(left)


def test_gaps_are_empty_facings(scene):
    assert len(scene.gaps) >= 1
    iou = box_iou(torch.from_numpy(scene.gaps), torch.from_numpy(scene.boxes))
    assert float(iou.max()) < 0.3  # nothing stands where a facing was left empty
    facings = sum(p.facings for p in scene.planogram)
    assert len(scene.gap_where) <= 4 * GAP_RATE * facings + 3


def test_a_gap_half_out_of_the_photo_or_covered_is_difficult():
    """How much of an empty facing shows: the part inside the photo (after the camera's
    warp), and the part of its width no neighbour covers (a product wider than its facing)."""
    shift = np.array([[1, 0, -50], [0, 1, 0], [0, 0, 1]], np.float64)  # the canvas moved 50 px left
    assert _in_photo(np.eye(3), [10, 10, 110, 60], 200, 100) == pytest.approx(1.0)
    assert _in_photo(shift, [0, 10, 100, 60], 200, 100) == pytest.approx(0.5)
    assert _in_photo(shift, [0, 10, 40, 60], 200, 100) == 0.0
    items = [(0, 1, 0, 0, 110, 50), (1, 1, 160, 0, 260, 50), (2, 1, 120, 60, 180, 90)]  # label, area, x0, y0, x1, y1
    shelf = np.array([0, 0, 1])
    assert _uncovered([100, 0, 200, 50], items, shelf, 0) == pytest.approx(0.5)  # 10 px left, 40 right; not item 2 (shelf 1)
    assert _uncovered([100, 0, 200, 50], items, shelf, 1) == pytest.approx(0.4)  # on shelf 1 only item 2 counts
    t = truth_json(render_dense(5, 2, 1200), "x.jpg")
    assert t["gaps"] and all(0.0 <= g["seen"] <= 1.0 and g["difficult"] == (g["seen"] < GAP_SEEN) for g in t["gaps"])


def test_truth_json_and_dataset_writer(tmp_path):
    summary = render_dataset(tmp_path / "d", 2, seed=1, size=800, dense=True)
    assert summary["dense"] and summary["scenes"] == {"dense": 2}
    truth = json.loads((tmp_path / "d/truth/000001.json").read_text())
    assert {"planogram", "rows", "products", "gaps", "misplaced"} <= set(truth)
    rec, problems = parse_voc(tmp_path / "d/Annotations/000001.xml", truth["classes"])
    assert not problems and len(rec.boxes) == len(truth["products"])
    # the VOC boxes are the truth's boxes (VOC stores integers)
    assert np.abs(np.asarray(rec.boxes) - np.asarray([p["box"] for p in truth["products"]])).max() <= 1.0
    scene = render_dense(1, 1, 800)
    assert truth == json.loads(json.dumps(truth_json(scene, "000001.jpg")))
    for m in truth["misplaced"]:
        assert m["product"] != m["expected"]


def test_too_small_is_refused():
    with pytest.raises(ValueError, match="at least 256"):
        render_dense(0, 0, 100)
