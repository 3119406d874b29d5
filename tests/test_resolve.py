"""Resolve once (issue 23): a run decides its config from the data in one place,
:func:`detect.engine.resolve.resolve`, before the model is built; after it the config is
read-only, and ``--imgsz`` reaches the transforms and the default boxes from there."""

from __future__ import annotations

import numpy as np
import pytest

from detect.config import ExperimentConfig, ReadOnlyError
from detect.engine.resolve import resolve
from detect.structures import ImageRecord
from tiny_detector import tiny_config, tiny_data, tiny_eval, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _records(n: int = 6, w: int = 300, h: int = 200, folder=None) -> list[ImageRecord]:
    """``n`` photos of w x h with three boxes each (written to ``folder`` when given)."""
    boxes = np.array([[10, 10, 40, 70], [50, 20, 150, 60], [100, 100, 160, 160]], np.float32)
    out = []
    for i in range(n):
        path = f"{i}.jpg"
        if folder is not None:
            import cv2

            path = str(folder / path)
            cv2.imwrite(path, np.full((h, w, 3), 40 * i, np.uint8))
        out.append(ImageRecord(path, w, h, boxes=boxes, labels=np.array([0, 1, 0])))
    return out


def test_resolve_decides_everything_once_and_returns_a_read_only_copy():
    cfg = ExperimentConfig()
    cfg.model.pretrained = "none"
    cfg.model.ssd.fit_anchors = True
    given = cfg.to_dict()
    notes: list[str] = []
    got = resolve(cfg, ["cola", "tea"], _records(), notes.append)
    assert cfg.to_dict() == given  # the given config is not changed
    assert got.model.num_classes == 2 and got.preprocess.imgsz == 320  # 300 px photos: a multiple of 32
    assert got.preprocess.object_size > 0 and got.model.ssd.anchor_sizes is not None
    assert [n.split()[0] for n in notes] == ["imgsz", "object", "default"]
    with pytest.raises(ReadOnlyError, match="read-only"):
        got.preprocess.imgsz = 64
    with pytest.raises(ReadOnlyError):
        got.model.ssd.fit_anchors = False
    again = resolve(got, ["cola", "tea"], _records(), notes.append)  # a resumed run: nothing left to decide
    assert again.to_dict() == got.to_dict() and len(notes) == 3


def test_imgsz_reaches_the_transforms_and_the_default_boxes(tmp_path):
    from detect.engine.datasets import DataSplits
    from detect.models.build import build_resolved

    cfg = ExperimentConfig()
    cfg.model.pretrained = "none"
    cfg.model.ssd.fit_anchors = True
    cfg.preprocess.imgsz = 96  # --imgsz 96
    splits = DataSplits(["cola", "tea"], _records(folder=tmp_path), None)
    got = resolve(cfg, splits.classes, splits.train_records, lambda m: None)
    assert got.preprocess.imgsz == 96
    image, _ = splits.datasets(got).train[0]
    assert tuple(image.shape) == (3, 96, 96)  # the transforms letterbox to it
    model = build_resolved(got.model, got.preprocess)
    assert model.backbone.input_size == 96  # the network is laid out for it ...
    assert len(model.heads) == len(got.model.ssd.aspect_ratios)  # ... and the default boxes were fitted to its maps


def test_a_run_resolves_once_and_trains_the_read_only_config(tmp_path, monkeypatch):
    import detect.engine.train as T
    import detect.models.backbones as B

    calls = {"resolve": 0, "input_preprocess": 0}
    real_resolve, real_pre = T.resolve, B.input_preprocess

    def counting_resolve(*a, **kw):
        calls["resolve"] += 1
        return real_resolve(*a, **kw)

    def counting_pre(*a, **kw):
        calls["input_preprocess"] += 1
        return real_pre(*a, **kw)

    monkeypatch.setattr(T, "resolve", counting_resolve)
    monkeypatch.setattr(B, "input_preprocess", counting_pre)
    seen = []

    def model_fn(c):
        seen.append(c)
        return tiny_model(c)

    cfg = tiny_config(tmp_path / "run", epochs=2)
    res = T.train(cfg, progress=False, data_fn=tiny_data(n=8), model_fn=model_fn, eval_fn=tiny_eval)
    assert res["epochs"] == 2 and calls == {"resolve": 1, "input_preprocess": 1}
    assert len(seen) == 1 and seen[0].is_read_only and seen[0].model.num_classes == 3
    assert cfg.model.num_classes == 0 and not cfg.is_read_only  # the caller's config is left as given
    saved = ExperimentConfig.load_yaml(tmp_path / "run" / "config.yaml")
    assert saved.model.num_classes == 3 and saved.preprocess.mean == seen[0].preprocess.mean
