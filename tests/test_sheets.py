"""Sheets of val photos (detect/data/sheets.py): neighbours of different kinds, geometry, the
files and records written, an unreadable photo, and ``--val-sheets`` reaching the run's val
split (detect/engine/datasets.py: with_val_sheets)."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
from tiny_detector import tiny_model

from detect.cli import build_parser
from detect.config import ExperimentConfig
from detect.data.sheets import GREY, interleaved, tile, write_sheets
from detect.engine import train as T
from detect.engine.datasets import SHEETS, DataSplits, with_val_sheets
from detect.structures import ImageRecord


def _photo(path, w, h, colour, box, label) -> ImageRecord:
    im = np.full((h, w, 3), colour, np.uint8)
    cv2.imwrite(str(path), im)  # PNG: exact pixels
    return ImageRecord(image=str(path), width=w, height=h, boxes=np.array([box], np.float32),
                       labels=np.array([label], np.int64), difficult=np.zeros(1, bool), truncated=np.zeros(1, bool))


def test_interleaved_puts_different_kinds_side_by_side():
    recs = [ImageRecord("", 1, 1, np.zeros((1, 4), np.float32), np.array([k]), np.zeros(1, bool))
            for k in (0, 0, 0, 1, 1, 2)]
    assert [int(r.labels[0]) for r in interleaved(recs)] == [0, 1, 2, 0, 1, 0]
    shuffled = interleaved(recs, np.random.default_rng(3))
    assert sorted(id(r) for r in shuffled) == sorted(id(r) for r in recs)  # the same photos, another order


def test_tile_places_photos_top_left_of_their_cells_and_moves_their_boxes():
    images = [np.full((h, w, 3), v, np.uint8) for v, (h, w) in zip((10, 20, 30, 40, 50), ((8, 10), (10, 6), (4, 4), (10, 10), (9, 9)))]
    targets = [{"boxes": np.array([[1, 2, 3, 4]]), "labels": np.array([k]), "difficult": np.array([k == 3])}
               for k in range(5)]
    sheets, got = tile(images, targets, 2, 2)  # cell: the largest side, 10; the fifth photo is left over
    assert len(sheets) == 1 and sheets[0].shape == (20, 20, 3)
    s = sheets[0]
    assert s[0, 0, 0] == 10 and s[7, 9, 0] == 10 and s[8, 0, 0] == GREY  # photo 0: 10 wide, 8 high, grey under it
    assert s[0, 10, 0] == 20 and s[0, 16, 0] == GREY  # photo 1 at x 10: 6 wide
    assert s[10, 0, 0] == 30 and s[10, 10, 0] == 40 and s[19, 19, 0] == 40
    np.testing.assert_array_equal(got[0]["boxes"], [[1, 2, 3, 4], [11, 2, 13, 4], [1, 12, 3, 14], [11, 12, 13, 14]])
    np.testing.assert_array_equal(got[0]["labels"], [0, 1, 2, 3])
    np.testing.assert_array_equal(got[0]["difficult"], [False, False, False, True])
    with pytest.raises(ValueError, match="larger than the cell"):
        tile(images[:4], targets[:4], 2, 2, cell=9)


def test_write_sheets_writes_jpegs_and_their_records_and_greys_an_unreadable_photo(tmp_path):
    recs = [_photo(tmp_path / f"p{k}.png", 40, 30, (60 * (k % 4),) * 3, (5, 5, 25, 20), k % 4) for k in range(9)]
    (tmp_path / "p2.png").write_bytes(b"not an image")  # unreadable since its record was made
    said = []
    out = write_sheets(recs, 2, tmp_path / "sheets", said.append)
    assert len(out) == 2  # nine photos: two 2x2 sheets, one left over
    for r in out:
        im = cv2.imread(r.image)
        assert im.shape == (80, 80, 3) and (r.width, r.height) == (80, 80)
        assert r.boxes.dtype == np.float32 and len(r.boxes) == len(r.labels) == len(r.difficult)
    assert sum(len(r.boxes) for r in out) == 7  # eight photos, one box each, the unreadable one's dropped
    first = out[0]  # photos of kinds 0, 1, 2, 3 in turn: p0, p1, p2 (unreadable), p3
    np.testing.assert_array_equal(first.labels, [0, 1, 3])
    np.testing.assert_array_equal(first.boxes, [[5, 5, 25, 20], [45, 5, 65, 20], [45, 45, 65, 60]])
    im = cv2.imread(first.image)
    assert abs(int(im[50, 10, 0]) - GREY) <= 3  # p2's cell: grey
    assert len(said) == 1 and "p2.png" in said[0] and "1 val photo" in said[0]
    assert write_sheets(recs[:3], 2, tmp_path / "few", said.append) == []


def test_val_sheets_option_needs_two_or_more():
    p = build_parser()
    assert p.parse_args(["train", "--val-sheets", "3"]).val_sheets == 3
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--val-sheets", "1"])


def test_the_run_validates_on_its_photos_and_their_sheets(tmp_path):
    recs = [_photo(tmp_path / f"p{k}.png", 32, 32, (40 * (k % 3) + 20,) * 3, (4, 4, 28, 28), k % 3) for k in range(8)]
    splits = DataSplits(["a", "b", "c"], recs, recs[:8], 0)
    cfg = ExperimentConfig()
    cfg.train.out, cfg.data.val_sheets = str(tmp_path / "run"), 2
    assert with_val_sheets(splits, copy.deepcopy(cfg)) is not splits
    seen = []

    def eval_fn(model, loader, classes, device, max_det):
        seen.append([r.image for r in loader.dataset.records])
        return {"voc_ap50": 0.5, "coco_ap": 0.25}

    cfg.train.epochs, cfg.train.batch, cfg.data.workers, cfg.preprocess.imgsz = 1, 4, 0, 32
    cfg.train.device, cfg.train.amp = "cpu", False
    T.train(cfg, progress=False, data_fn=lambda c: splits, model_fn=tiny_model, eval_fn=eval_fn)
    (images,) = seen
    assert images[:8] == [r.image for r in recs]
    assert images[8:] == [str(tmp_path / "run" / SHEETS / f"sheet_{k:03d}.jpg") for k in range(2)]
    cfg.data.val_sheets = 0
    assert with_val_sheets(splits, cfg) is splits
