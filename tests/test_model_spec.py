"""The table of detectors (detect/models/specs.py): a new detector is one module plus one row.

``TinyRowDetector`` below stands for that module, and one ``ModelSpec`` row registers it; the
trainer, checkpoint loading, ``detect predict``'s Predictor and ``detect train --model`` then take
it with no other change. Also: the SSD's own settings live in ``model.ssd``, and configs and
checkpoints that hold them flat under ``model`` still load.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detect.config import ExperimentConfig, ModelConfig, Preprocess
from detect.models import specs
from detect.models.specs import ModelSpec
from tiny_detector import tiny_config, tiny_data, tiny_eval

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyRowDetector(nn.Module):
    """The model contract in a few lines: ``model(images, targets) -> dict of losses`` in train
    mode, ``model(images) -> list[{"boxes", "scores", "labels"}]`` (input pixels) in eval mode,
    with the postprocess settings ``set_postprocess`` changes."""

    spec_name = "tiny_row"  # its row below

    def __init__(self, cfg: ModelConfig, preprocess: Preprocess) -> None:
        super().__init__()
        self.imgsz = preprocess.imgsz
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.cls = nn.Linear(8, cfg.num_classes)
        self.box = nn.Linear(8, 4)
        self.score_thresh, self.nms_thresh, self.max_det = cfg.score_thresh, cfg.nms_thresh, cfg.max_det

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        f = self.body(images - self.mean).flatten(1)  # (B, 8, 1, 1) -> (B, 8)
        logits = self.cls(f)
        xy = torch.sigmoid(self.box(f)) * self.imgsz  # (B, 4): two corners, sorted below
        boxes = torch.cat([torch.minimum(xy[:, :2], xy[:, 2:]), torch.maximum(xy[:, :2], xy[:, 2:]) + 1], 1)
        if self.training:
            labels = torch.stack([t["labels"][0] for t in targets])
            gt = torch.stack([t["boxes"][0] for t in targets])
            return {"loss_cls": F.cross_entropy(logits, labels), "loss_box": F.l1_loss(boxes / self.imgsz, gt / self.imgsz)}
        scores, labels = logits.softmax(1).max(1)
        return [{"boxes": b[None][s > self.score_thresh], "scores": s[None][s > self.score_thresh],
                 "labels": k[None][s > self.score_thresh]} for b, s, k in zip(boxes, scores, labels)]


def build_tiny_row(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> TinyRowDetector:
    return TinyRowDetector(cfg, preprocess)


@pytest.fixture
def tiny_row(monkeypatch):
    """The one row: the detector above, nothing fitted, no export head, no image context."""
    row = ModelSpec("tiny_row", build_tiny_row)
    monkeypatch.setitem(specs.MODEL_SPECS, "tiny_row", row)
    return row


def test_a_new_detector_is_one_module_and_one_row(tiny_row, tmp_path):
    from detect.cli import build_parser
    from detect.engine.checkpoint import load_model
    from detect.engine.train import train
    from detect.infer.predict import Predictor

    args = build_parser("train").parse_args(["train", "--model", "tiny_row", "--data", "d"])  # --model takes the row
    assert args.model == "tiny_row"
    cfg = tiny_config(tmp_path / "run", epochs=1)
    cfg.model.name = "tiny_row"
    res = train(cfg, progress=False, data_fn=tiny_data(n=8), eval_fn=tiny_eval)  # built through the row
    assert res["epochs"] == 1 and res["best"] is not None

    model, loaded, classes = load_model(res["best"])  # rebuilt through the row
    assert isinstance(model, TinyRowDetector) and loaded.model.name == "tiny_row" and classes == ["c0", "c1", "c2"]
    pred = Predictor(res["best"], device="cpu", conf=0.0)  # no export head: PyTorch, never ONNX Runtime
    assert pred.backend == "torch"
    det = pred.predict([np.full((24, 30, 3), 128, np.uint8)])[0]  # smaller than imgsz: one input, no slices
    assert len(det.boxes) == 1 and det.boxes.shape[-1] == 4 and 0 <= int(det.labels[0]) < 3


def test_the_rows_decide_build_export_and_auto_context(tiny_row):
    from detect.infer.export import ExportableSSD, has_export_head
    from detect.models.build import build_model
    from detect.models.specs import model_spec, spec_of_model

    with pytest.raises(ValueError, match=r"unknown model 'yolo'.*'ssd', 'fast_rcnn', 'tiny_row'"):
        model_spec("yolo")
    model = build_model(ModelConfig(name="tiny_row", num_classes=2, pretrained="none"), Preprocess(imgsz=32))
    assert spec_of_model(model) is tiny_row and not has_export_head(model)
    with pytest.raises(TypeError, match="cannot be exported"):
        ExportableSSD(model)
    assert tiny_row.concrete(ModelConfig(context="auto")).context == "none"
    assert specs.MODEL_SPECS["ssd"].concrete(ModelConfig(context="auto", context_loss=None)).context_loss == 1.0


def test_ssd_settings_have_their_section_and_old_files_still_load(tmp_path):
    from detect.engine.checkpoint import stored_config

    flat = {"model": {"name": "ssd", "anchor_sizes": [0.1, 0.2, 0.3], "box_loss": "giou", "fit_anchors": True}}
    for cfg in (ExperimentConfig.from_dict(flat), stored_config({"config": flat, "model": {}})):
        assert (cfg.model.ssd.anchor_sizes, cfg.model.ssd.box_loss, cfg.model.ssd.fit_anchors) == ([0.1, 0.2, 0.3], "giou", True)
        assert "anchor_sizes" not in cfg.to_dict()["model"] and cfg.to_dict()["model"]["ssd"]["box_loss"] == "giou"
