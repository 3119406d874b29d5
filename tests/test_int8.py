"""INT8 inference (detect/infer/quantize.py): what is quantized, the CLI, the cache, and
detections close to FP32 with the shipped weights. Correctness only: speed is bench/infer.py's."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from _predict_helpers import CLASSES, confident_ssd_checkpoint  # noqa: E402
from detect.cli import main  # noqa: E402
from detect.errors import UsageError  # noqa: E402
from detect.infer import quantize as Q  # noqa: E402


@pytest.fixture(scope="module")
def shipped_int8(tmp_path_factory):
    """The shipped weights quantized once (32 synthetic calibration shelves) into a private cache."""
    from detect.infer.weights import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("shipped weights missing")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    path = Q.int8_model_for(None, None, limit=32)
    yield path
    mp.undo()


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a[N, 4] against b[M, 4] -> [N, M]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_only_the_network_is_quantized(shipped_int8):
    m = onnx.load(str(shipped_int8))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["quantization"])["calibration_images"] == 32 and meta["imgsz"] == "320"
    producer = {o: n for n in m.graph.node for o in n.output}
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 50 and "Pad" not in ops  # the backbone's pads went into its convs
    for n in m.graph.node:  # the box decoding and the softmax read float tensors, never a quantized one
        if n.op_type in ("Exp", "ReduceMax", "ReduceSum", "Div") and n.name.count("/") < 2:
            for i in n.input:
                assert i not in producer or producer[i].op_type != "DequantizeLinear", n.name
    assert [o.name for o in m.graph.output] == ["boxes", "scores"]


def test_int8_detections_match_fp32_with_the_shipped_weights(shipped_int8):
    from detect.data.synth import render_scene
    from detect.infer.predict import Predictor

    fp32 = Predictor(None, device="cpu", conf=0.3, slice="off")  # the network against itself: one input per photo
    int8 = Predictor(None, device="cpu", conf=0.3, onnx=shipped_int8, slice="off")
    assert int8.graph == shipped_int8 and fp32.graph is None
    matched = total = 0
    for i in range(3):  # shelves of a seed neither training nor calibration saw
        image = cv2.resize(render_scene(777, i, size=480, kind="shelf").image, (640, 480))
        a, b = fp32.predict([image])[0], int8.predict([image])[0]
        assert len(a) >= 5 and abs(len(a) - len(b)) <= max(2, len(a) // 10)
        top = a.scores.argsort()[::-1][:10]
        iou = _iou(a.boxes[top], b.boxes)
        same = iou * (a.labels[top][:, None] == b.labels[None, :])
        matched += int((same.max(1) > 0.9).sum())
        total += len(top)
        near = np.abs(a.scores[top] - b.scores[same.argmax(1)])
        assert np.median(near) < 0.05
    assert matched >= 0.9 * total, f"{matched} of the {total} top FP32 detections have an INT8 twin (same class, IoU > 0.9)"


def test_int8_model_is_cached_and_belongs_to_its_checkpoint(shipped_int8, monkeypatch, tmp_path):
    from detect.infer.predict import Predictor

    monkeypatch.setattr(Q, "export_int8", lambda *a, **k: pytest.fail("quantized again"))
    assert Q.int8_model_for(None, None, limit=32) == shipped_int8
    assert shipped_int8.parent == Q.cache_dir()
    other = confident_ssd_checkpoint(tmp_path / "ssd.pt")
    with pytest.raises(UsageError, match="exported from another model"):
        Predictor(other, device="cpu", onnx=shipped_int8)


@pytest.mark.parametrize("box_classifier", [False, True])  # the SSD's box classifier is in the quantized graph too
def test_export_int8_cli_with_an_image_folder(tmp_path, box_classifier):
    weights = confident_ssd_checkpoint(tmp_path / "ssd.pt", box_classifier=box_classifier)
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        cv2.imwrite(str(calib / f"{i}.jpg"), rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    (calib / "notes.txt").write_text("not an image")
    out = tmp_path / "m.int8.onnx"
    assert main(["export", "--weights", str(weights), "--int8", "--calib", str(calib), "--calib-images", "4", "-o", str(out)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == CLASSES and json.loads(meta["quantization"])["calibration_images"] == 4
    assert meta["calibration"].endswith("calib x4")
    # predict runs it; the checkpoint it belongs to is checked
    src = tmp_path / "img.jpg"
    cv2.imwrite(str(src), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    assert main(["predict", str(src), "--weights", str(weights), "--onnx", str(out), "--device", "cpu", "--no-save",
                 "--save-json", "--save-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "detections.jsonl").is_file()
    if box_classifier:
        nodes = [n.name for n in onnx.load(str(out)).graph.node]
        assert any(n.startswith("/box_classifier/fc1/") for n in nodes)
        assert any("QuantizeLinear" in n and "box_classifier" in n for n in nodes), "its layers are quantized"


def test_int8_usage_errors(tmp_path, capsys):
    weights = confident_ssd_checkpoint(tmp_path / "ssd.pt")
    assert main(["export", "--weights", str(weights), "--int8", "--format", "torchscript", "-o", str(tmp_path / "x.pt")]) == 2
    assert "--format onnx" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.mp4").write_bytes(b"")
    with pytest.raises(UsageError, match="no images"):
        Q.calibration_images(str(empty), 64)
    from detect.infer.predict import Predictor

    with pytest.raises(UsageError, match="not found"):
        Predictor(weights, device="cpu", onnx=tmp_path / "none.onnx")
    with pytest.raises(UsageError, match="ONNX Runtime on the CPU"):
        Predictor(weights, device="cpu", int8=True, backend="torch")
