"""`detect train`'s validation of large photos: a val split of photos larger than the model needs
is scored every epoch (and in the run's final report) through `detect val`'s sliced collector, at
the object size the run learned, with the live model left as it was; splits of small photos and
`--slice off` keep the batched loader."""

from __future__ import annotations

import argparse
import csv
import json

import cv2
import numpy as np
import pytest
import torch

from _predict_helpers import CLASSES
from test_slicing import Squares, _shelf

from detect.config import ExperimentConfig, Preprocess
from detect.engine import run_eval as V
from detect.infer.val_cli import sliced_collector
from detect.structures import ImageRecord


def _slice_args(mode="auto") -> argparse.Namespace:
    return argparse.Namespace(slice=mode, overlap=0.25, full_frame=False, object_size=None, merge="cut")


def _record(path, img, truth) -> ImageRecord:
    cv2.imwrite(str(path), img)
    n = len(truth)
    return ImageRecord(image=str(path), width=img.shape[1], height=img.shape[0], boxes=truth, labels=np.zeros(n, np.int64),
                       difficult=np.zeros(n, bool), truncated=np.zeros(n, bool), annotation="")


class _Loader:
    """What :func:`detect.engine.run_eval.collect_split` reads of a val loader: its dataset's records."""

    def __init__(self, records):
        self.dataset = argparse.Namespace(records=records)


@pytest.fixture
def batched(monkeypatch):
    """Replaces the batched loader's :func:`~detect.engine.evaluate.collect`: the calls it got."""
    calls = []
    monkeypatch.setattr("detect.engine.evaluate.collect", lambda *a, **k: calls.append(a) or {"batched": True})
    return calls


def test_large_val_photos_take_the_sliced_path_small_ones_and_off_the_batched_loader(tmp_path, batched):
    cfg = ExperimentConfig(preprocess=Preprocess(imgsz=64, object_size=16.0))
    img, truth = _shelf(600, 800)
    large = [_record(tmp_path / "shelf.png", img, truth)]
    small = [_record(tmp_path / "small.png", img[:96, :96], truth[(truth[:, 2] <= 96) & (truth[:, 3] <= 96)])]
    sliced = sliced_collector(_slice_args(), live=True)
    got = V.collect_split(Squares(), _Loader(large), CLASSES, torch.device("cpu"), 1000, False, cfg, sliced)
    assert not batched and got["sliced"] == {"slice": "auto", "object_size": 16.0}
    assert len(got["dets"][0]["boxes"]) == len(truth)
    for records, collect_fn in ((small, sliced), (large, sliced_collector(_slice_args("off"), live=True)), (large, None)):
        assert V.collect_split(Squares(), _Loader(records), CLASSES, torch.device("cpu"), 1000, False, cfg, collect_fn) == {"batched": True}
    file_proposals = Squares()
    file_proposals.proposal_source = "file"  # a Fast R-CNN on a proposal file's boxes, made for whole photos
    assert V.collect_split(file_proposals, _Loader(large), CLASSES, torch.device("cpu"), 1000, False, cfg, sliced) == {"batched": True}
    assert len(batched) == 4


def test_the_live_model_keeps_its_mode_and_postprocess_and_is_neither_folded_nor_exported(tmp_path, monkeypatch):
    """The model under training goes into a PyTorch Predictor as it is (no BatchNorm folding, no
    ONNX export: its weights change every epoch) and comes back in train mode with its settings;
    an image gone since the cache was built is skipped and named, as the batched loader does."""
    from detect.infer.predict import Predictor

    kwargs = []
    real = Predictor.from_model.__func__
    monkeypatch.setattr(Predictor, "from_model", classmethod(lambda cls, *a, **k: kwargs.append(k) or real(cls, *a, **k)))
    img, truth = _shelf(600, 800)
    model = Squares().train()
    model.score_thresh, model.max_det = 0.05, 123
    cfg = ExperimentConfig(preprocess=Preprocess(imgsz=64, object_size=16.0))
    records = [_record(tmp_path / "gone.png", img, truth), _record(tmp_path / "s.png", img, truth)]
    (tmp_path / "gone.png").unlink()
    got = sliced_collector(_slice_args(), live=True)(model, cfg, CLASSES, records, torch.device("cpu"), 1000)
    assert len(got["dets"]) == len(got["gts"]) == 1 and len(got["dets"][0]["boxes"]) == len(truth) and got["image_ids"] == [1]
    assert len(got["unreadable"]) == 1 and "gone.png" in got["unreadable"][0]
    assert kwargs[0]["backend"] == "torch" and kwargs[0]["fuse"] is False and kwargs[0]["conf"] == 0.05
    assert model.training and (model.score_thresh, model.nms_thresh, model.max_det) == (0.05, 0.45, 123)


@pytest.fixture(scope="module")
def large_shelves(tmp_path_factory):
    """A tiny `detect synth` dataset of 192-px shelves: larger than a 64-px model needs."""
    from detect.data.synth import render_dataset

    out = tmp_path_factory.mktemp("synth") / "shelves"
    render_dataset(out, 8, seed=3, size=192, splits=(0.75, 0.25, 0.0))
    return out


def test_a_run_on_large_val_photos_scores_them_as_detect_val_does(large_shelves, tmp_path, capsys):
    """A 1-epoch SSD (random backbone, 64 px) through `detect train` on 192-px shelves: its val
    is sliced at the object size the run learned, the epoch's score, best.pt's report and
    `detect val` on best.pt agree; with `--slice off` the batched loader reads them whole."""
    from detect.cli import main
    from detect.engine.checkpoint import load_checkpoint

    base = ["--data", str(large_shelves), "--imgsz", "64", "--epochs", "1", "--batch", "3", "--workers", "0",
            "--pretrained", "none", "--device", "cpu", "--seed", "0", "--no-progress"]
    out = tmp_path / "run"
    assert main(["train", *base, "--out", str(out)]) == 0
    assert "sliced as detect val does (--slice auto, learned object size" in capsys.readouterr().out
    report = json.loads((out / "val.json").read_text())
    learned = load_checkpoint(out / "best.pt")["config"]["preprocess"]["object_size"]
    assert learned > 0 and report["sliced"] == {"slice": "auto", "object_size": learned}
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert float(row["voc_ap50"]) == pytest.approx(report["voc_ap50"], abs=1e-9)  # best.pt is the EMA the epoch scored
    assert main(["val", "--weights", str(out / "best.pt"), "--data", str(large_shelves), "--device", "cpu",
                 "--workers", "0", "--json", str(tmp_path / "val.json")]) == 0
    val = json.loads((tmp_path / "val.json").read_text())
    assert val["sliced"] == report["sliced"] and val["images"] == report["images"] == 2
    for k in ("voc_ap50", "coco_ap", "coco_ar"):
        assert val[k] == pytest.approx(report[k], abs=2e-3), k  # ONNX Runtime (detect val) vs PyTorch (training)

    off = tmp_path / "off"
    assert main(["train", *base, "--out", str(off), "--slice", "off"]) == 0  # today's evaluation: the photos read whole
    assert "sliced as detect val does" not in capsys.readouterr().out
    assert json.loads((off / "val.json").read_text())["sliced"] is None
