"""Dense store shelves (detect/data/synth/dense.py): layout, truth, determinism, the dataset writer."""

import json

import numpy as np
import pytest

from detect.boxes import box_iou
from detect.data.synth.dataset import render_dataset
from detect.data.synth.dense import GAP_RATE, render_dense, truth_json
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
