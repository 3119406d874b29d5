"""The second pass over sliced photos (detect/infer/recentre.py): windows centred on the
detections, their views replacing what they find, and the rule that turns it on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _predict_helpers import CLASSES
from test_slicing import Squares
from detect.config import Preprocess
from detect.errors import UsageError
from detect.infer.predict import Predictor
from detect.infer.recentre import GRID, centred_windows, merge_recentred, recentre_on


# ----------------------------------------------------------------------------- the rule
def test_auto_recentres_models_of_large_products_only():
    assert recentre_on("auto", 224, 115.5)  # groceries: one product a photo, half the input
    assert not recentre_on("auto", 320, 64.0)  # the shipped store-shelf weights: a fifth
    assert not recentre_on("auto", 224, 0.0)  # an older checkpoint that knows no scale
    assert recentre_on("on", 320, 64.0) and not recentre_on("off", 224, 115.5)
    with pytest.raises(ValueError, match="recentre"):
        recentre_on("yes", 224, 100.0)


# ----------------------------------------------------------------------------- windows
def test_windows_are_centred_on_the_boxes_and_kept_inside_the_photo():
    boxes = np.float32([[400, 300, 500, 420],  # inside: centred (450, 360)
                        [0, 0, 40, 40],  # at the top-left corner: shifted in
                        [950, 700, 1000, 750]])  # at the bottom-right corner
    wins, owner = centred_windows(boxes, 224, 760, 1000)
    assert wins.shape == (3, 4) and sorted(owner.tolist()) == [0, 1, 2]
    w = {tuple(b): tuple(wins[o]) for b, o in zip(boxes.astype(int).tolist(), owner)}
    x0, y0, x1, y1 = w[(400, 300, 500, 420)]
    assert (x1 - x0, y1 - y0) == (224, 224)
    assert abs((x0 + x1) / 2 - 450) <= 224 / GRID and abs((y0 + y1) / 2 - 360) <= 224 / GRID  # snapped, near the centre
    assert w[(0, 0, 40, 40)] == (0, 0, 224, 224)
    assert w[(950, 700, 1000, 750)] == (776, 536, 1000, 760)
    for x0, y0, x1, y1 in wins:  # every window holds its box whole
        assert 0 <= x0 and 0 <= y0 and x1 <= 1000 and y1 <= 760


def test_hypotheses_of_one_product_share_a_window_and_small_photos_are_one_window():
    boxes = np.float32([[100, 100, 200, 200], [101, 99, 202, 201], [600, 100, 700, 200]])  # two classes' views of one product
    wins, owner = centred_windows(boxes, 224, 400, 900)
    assert len(wins) == 2 and owner[0] == owner[1] != owner[2]
    small, _ = centred_windows(np.float32([[10, 10, 50, 50]]), 224, 120, 150)
    assert small.tolist() == [[0, 0, 150, 120]]  # a photo smaller than the side: the photo
    empty, owner = centred_windows(np.zeros((0, 4), np.float32), 224, 400, 400)
    assert empty.shape == (0, 4) and owner.shape == (0,)


# ----------------------------------------------------------------------------- the merge
def _view(boxes, scores, labels):
    return np.float32(boxes).reshape(-1, 4), np.float32(scores), np.int64(labels)


def test_a_centred_view_replaces_the_detection_it_finds_even_of_another_class():
    boxes = np.float32([[100, 100, 200, 220], [400, 100, 500, 220]])
    scores, labels = np.float32([0.6, 0.05]), np.int64([1, 0])  # the first read with the wrong class; the second faint
    src, owner = np.int64([0]), np.int64([0])  # only the first was confident enough for a view
    views = [_view([[98, 102, 201, 218], [190, 100, 260, 220]], [0.95, 0.9], [2, 0])]  # its view: class 2, and a
    b, s, lab = merge_recentred(boxes, scores, labels, src, owner, views)  # neighbour it was not centred on
    assert lab.tolist() == [2, 0] and s.tolist() == pytest.approx([0.95, 0.05])
    assert b[0].tolist() == [98, 102, 201, 218]  # the view's box and class, not the grid's
    assert b[1].tolist() == [400, 100, 500, 220]  # not re-read: as it was; the neighbour's box is not taken


def test_a_detection_its_view_does_not_find_stays():
    boxes, scores, labels = np.float32([[100, 100, 200, 200]]), np.float32([0.4]), np.int64([0])
    for view in (_view([], [], []), _view([[300, 300, 380, 380]], [0.9], [0])):  # nothing, or something elsewhere
        b, s, lab = merge_recentred(boxes, scores, labels, np.int64([0]), np.int64([0]), [view])
        assert b.tolist() == boxes.tolist() and s.tolist() == pytest.approx([0.4]) and lab.tolist() == [0]


def test_a_view_speaks_for_its_place_the_grids_faint_hypotheses_there_go():
    boxes = np.float32([[100, 100, 200, 220],  # the confident detection, re-read
                        [104, 98, 203, 222],  # a faint hypothesis of another class at the same place
                        [102, 104, 198, 214],  # and one of the view's own class
                        [400, 100, 500, 220]])  # a faint one elsewhere
    scores, labels = np.float32([0.6, 0.08, 0.05, 0.07]), np.int64([1, 3, 2, 4])
    views = [_view([[98, 102, 201, 218]], [0.95], [2])]
    b, s, lab = merge_recentred(boxes, scores, labels, np.int64([0]), np.int64([0]), views)
    assert lab.tolist() == [2, 4] and s.tolist() == pytest.approx([0.95, 0.07])
    assert b[1].tolist() == [400, 100, 500, 220]
    # with cover above every overlap the grid's hypotheses stay (the merge before this rule)
    b, s, lab = merge_recentred(boxes, scores, labels, np.int64([0]), np.int64([0]), views, cover=1.01)
    assert sorted(lab.tolist()) == [2, 3, 4]  # class 2's faint box falls to NMS under the view's


def test_two_views_of_one_product_become_one_box_and_touching_products_stay_two():
    boxes = np.float32([[100, 100, 200, 200], [200, 100, 300, 200]])  # two touching products of class 0
    scores, labels = np.float32([0.5, 0.5]), np.int64([0, 0])
    views = [_view([[101, 100, 200, 200], [200, 101, 300, 200]], [0.9, 0.7], [0, 0]),  # each window sees both
             _view([[100, 100, 199, 200], [200, 100, 301, 200]], [0.6, 0.95], [0, 0])]
    b, s, lab = merge_recentred(boxes, scores, labels, np.int64([0, 1]), np.int64([0, 1]), views)
    assert len(b) == 2 and s.tolist() == pytest.approx([0.95, 0.9])
    assert sorted(b[:, 0].tolist()) == [101, 200]


# ----------------------------------------------------------------------------- in Predictor
class CentredReader(Squares):
    """Eval-mode stand-in for a model of product photos: a box around every bright blob of the
    input at least 12 px wide and tall (a real detector does not read slivers); class 0 at 0.9
    when the blob lies whole in the input's middle half, else class 1 at 0.5 (a product cut, or
    off-centre beside others: the class it reads there is wrong)."""

    def forward(self, images):
        self.calls.append(len(images))
        out = []
        for im in images:
            S = im.shape[-1]
            b = self.blobs(im, min_side=12)
            c = (b[:, :2] + b[:, 2:]) / 2
            mid = ((c > S / 4) & (c < 3 * S / 4)).all(1) & (b[:, :2] > 0).all(1) & (b[:, 2:] < S).all(1)
            out.append({"boxes": b, "scores": torch.where(mid, 0.9, 0.5), "labels": (~mid).long()})
        return out


def _photos_grid(h=480, w=640, side=60, step=100):
    img = np.zeros((h, w, 3), np.uint8)
    truth = []
    for y in range(20, h - side, step):
        for x in range(20, w - side, step):
            img[y:y + side, x:x + side] = 255
            truth.append([x, y, x + side, y + side])
    return img, np.float32(truth)


@pytest.mark.parametrize("mode, object_size", [("on", 10.0), ("auto", 32.0)])
def test_predictor_rereads_every_product_centred(mode, object_size):
    img, truth = _photos_grid()
    kw = dict(conf=0.3, fuse=False, backend="torch", slice=128, overlap=0.25)
    off = Predictor.from_model(CentredReader(), Preprocess(imgsz=64, object_size=object_size), CLASSES,
                               recentre="off", **kw)
    (grid,) = off.predict([img])
    assert (grid.labels == 1).sum() > 0  # the grid's windows show some products cut or off-centre
    model = CentredReader()
    p = Predictor.from_model(model, Preprocess(imgsz=64, object_size=object_size), CLASSES, recentre=mode, **kw)
    assert p.recentre
    (d,) = p.predict([img])
    from detect.boxes import box_iou

    assert len(d) == len(truth) and (d.labels == 0).all() and np.allclose(d.scores, 0.9)
    assert float(box_iou(torch.from_numpy(d.boxes), torch.from_numpy(truth)).max(1).values.min()) > 0.8
    extra = sum(model.calls) - sum(off.model.calls)  # the centred windows: one a product, or two where a product's
    assert len(truth) <= extra <= 2 * len(truth)  # two classes' boxes were not centred alike


def test_recentre_is_off_for_store_shelf_models_and_photos_read_whole():
    img, _ = _photos_grid()
    model = CentredReader()
    p = Predictor.from_model(model, Preprocess(imgsz=64, object_size=12.0), CLASSES, conf=0.3, fuse=False,
                             backend="torch", slice=128)
    assert not p.recentre  # auto, products a fifth of the input
    on = Predictor.from_model(CentredReader(), Preprocess(imgsz=64, object_size=32.0), CLASSES, conf=0.3, fuse=False,
                              backend="torch", slice="off")
    on.predict([img])
    assert on.recentre and len(on.model.calls) == 1  # nothing sliced: no second pass
    with pytest.raises(UsageError, match="recentre"):
        Predictor.from_model(CentredReader(), Preprocess(imgsz=64), CLASSES, recentre="yes")


def test_the_shipped_store_shelf_weights_do_not_recentre():
    """A 12-MP shelf holds ~400 products in ~48 slices: re-centring would be ~10x the work
    (bench/dense.py part c's targets are measured without it)."""
    p = Predictor(device="cpu", backend="torch")
    assert not p.recentre and p.object_size < 0.3 * p.imgsz
