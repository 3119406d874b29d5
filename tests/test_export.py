"""Export: ONNX with a dynamic batch axis matches PyTorch (batch 1 and 3); TorchScript too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _predict_helpers import CLASSES, confident_ssd_checkpoint
from detect.cli import main
from detect.infer import export as E


@pytest.fixture(scope="module")
def ssd_weights(tmp_path_factory):
    return confident_ssd_checkpoint(tmp_path_factory.mktemp("w") / "ssd.pt")


def _reference(weights, x):
    """PyTorch outputs of the unfused model for the same images, and the score threshold used.

    The threshold leaves about 100 candidate (box, class) pairs per image (few enough that no
    top-k or max_det cut falls among equal scores) and sits in the middle of a gap between the
    model's scores, so ONNX Runtime's rounding (up to ``SCORE_ATOL``) cannot move a candidate
    across it."""
    from detect.engine.checkpoint import load_model

    model, _, _ = load_model(str(weights), "cpu")
    with torch.no_grad():
        boxes, scores = E.ExportableSSD(model.eval())(x)
        ranked = torch.unique(scores.flatten()).flip(0)  # distinct scores, descending
        b = x.shape[0]
        near = ranked[50 * b: 150 * b]
        gaps = near[:-1] - near[1:]
        i = int(torch.argmax(gaps))
        assert gaps[i] > 4 * E.SCORE_ATOL, "no clean threshold"
        model.score_thresh = conf = float(near[i] + near[i + 1]) / 2
        return (boxes, scores), model(x), conf


def _rows(d: dict) -> np.ndarray:
    r = torch.cat([d["scores"][:, None], d["labels"][:, None].float(), d["boxes"]], 1).numpy()
    return r[np.lexsort(np.round(r, 2).T[::-1])]


def _onnx_runs(weights, tmp_path, seed: int):
    """``detect export`` of ``weights`` to ONNX, then for batches of 1 and 3 seeded images:
    (ONNX Runtime's boxes and scores, :func:`_reference`'s outputs, the batch size)."""
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(weights), "--format", "onnx", "-o", str(out)]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    for batch in (1, 3):
        x = torch.rand(batch, 3, 64, 64, generator=g)
        yield sess.run(["boxes", "scores"], {"images": x.numpy()}), _reference(weights, x), batch


def test_onnx_matches_pytorch_at_batch_1_and_3(tmp_path, ssd_weights):
    onnx = pytest.importorskip("onnx")
    for (boxes, scores), ((rb, rs), dets, conf), batch in _onnx_runs(ssd_weights, tmp_path, seed=1):
        if batch == 1:
            meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
            assert json.loads(meta["classes"]) == CLASSES and meta["imgsz"] == "64"
        assert boxes.shape == tuple(rb.shape) and scores.shape == tuple(rs.shape) and boxes.shape[0] == batch
        np.testing.assert_allclose(scores, rs.numpy(), atol=E.SCORE_ATOL, rtol=0)
        np.testing.assert_allclose(boxes, rb.numpy(), atol=E.BOX_ATOL, rtol=0)
        # the documented postprocess on the ONNX outputs gives the model's own detections
        mine = E.postprocess(boxes, scores, conf=conf, iou=0.45, max_det=300)
        for a, b in zip(mine, dets):
            assert 0 < len(a["boxes"]) == len(b["boxes"]) < 300
            ra, rb_ = _rows(a), _rows(b)  # sorted by (score, label, box)
            np.testing.assert_allclose(ra[:, :2], rb_[:, :2], atol=1e-4, rtol=0)
            # a random model scores many boxes exactly alike, and NMS may keep either of two equal
            # boxes: compare boxes where the score is unique
            sc = np.round(rb_[:, 0], 5)
            vals, counts = np.unique(sc, return_counts=True)
            unique = np.isin(sc, vals[counts == 1])
            assert unique.sum() >= 10
            np.testing.assert_allclose(ra[unique, 2:], rb_[unique, 2:], atol=1e-2, rtol=0)


def test_onnx_keeps_the_box_classifier(tmp_path):
    """The SSD's box classifier is part of its export head: ONNX Runtime gives PyTorch's scores
    (only the 100 most object-like rows of each image non-zero) at batch 1 and 3."""
    weights = confident_ssd_checkpoint(tmp_path / "ssd.pt", box_classifier=True)
    for (boxes, scores), ((rb, rs), _, _), _ in _onnx_runs(weights, tmp_path, seed=3):
        assert ((scores.sum(-1) > 0).sum(1) == 100).all()
        np.testing.assert_allclose(scores, rs.numpy(), atol=E.SCORE_ATOL, rtol=0)
        np.testing.assert_allclose(boxes, rb.numpy(), atol=E.BOX_ATOL, rtol=0)


def test_torchscript_export(tmp_path, ssd_weights):
    out = tmp_path / "m.torchscript"
    assert main(["export", "--weights", str(ssd_weights), "--format", "torchscript", "-o", str(out)]) == 0
    files = {"meta.json": ""}
    ts = torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["meta.json"])["imgsz"] == "64"
    x = torch.rand(3, 3, 64, 64)
    (rb, rs), _, _ = _reference(ssd_weights, x)
    b, s = ts(x)
    torch.testing.assert_close(s, rs, atol=E.SCORE_ATOL, rtol=0)
    torch.testing.assert_close(b, rb, atol=E.BOX_ATOL, rtol=0)


def test_export_errors(tmp_path, capsys):
    assert main(["export", "--weights", str(tmp_path / "none.pt"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "not found" in capsys.readouterr().err


def test_export_writes_beside_the_weights_never_over_them_and_prints_no_warnings(tmp_path, ssd_weights, capfd):
    """`detect export --weights w.pt -o w.pt` replaced the checkpoint with the ONNX file (exit 0);
    without -o the file goes beside the weights; tracing printed TracerWarnings and more."""
    import shutil
    import warnings

    pytest.importorskip("onnx")
    w = tmp_path / "w.pt"
    shutil.copy(ssd_weights, w)
    before = w.read_bytes()
    assert main(["export", "--weights", str(w), "-o", str(w)]) == 2
    assert w.read_bytes() == before and f"{w} is one of the inputs" in capfd.readouterr().err
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".torchscript")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["export", "--weights", str(w), "--format", fmt]) == 0
        assert (tmp_path / f"w{suffix}").is_file() and w.read_bytes() == before
        out, err = capfd.readouterr()
        assert not [str(c.message) for c in caught] and "Warning" not in err, (caught, err)
        assert f"-> {tmp_path / f'w{suffix}'}" in out


def test_predict_and_val_take_the_exported_onnx_file(tmp_path, ssd_weights, capsys):
    """`detect export` writes an .onnx file that `detect predict` and `detect val` refused with a
    pickle error; they run it like the checkpoint, with the same detections and metrics."""
    import cv2

    from _predict_helpers import synthetic_image
    from dataset_fixtures import image, text, voc_xml

    pytest.importorskip("onnxruntime")
    onnx_file = tmp_path / "ssd.onnx"
    assert main(["export", "--weights", str(ssd_weights), "-o", str(onnx_file)]) == 0
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f"{i}.png"), synthetic_image(seed=i))
    data = tmp_path / "data"  # VOC split folders with the model's classes
    for split in ("train", "valid"):
        for i, name in enumerate(CLASSES):
            image(data / split / f"{i}.jpg", seed=i)
            text(data / split / f"{i}.xml", voc_xml(f"{i}.jpg", [(name, (4 + i, 4, 40, 30))]))
    results = {}
    for w in (ssd_weights, onnx_file):
        out = tmp_path / f"out-{w.suffix}"
        assert main(["predict", str(src), "--weights", str(w), "--save-dir", str(out), "--save-json", "--conf", "0.05",
                     "--device", "cpu", "--no-progress"]) == 0
        rows = [json.loads(line) for line in (out / "detections.jsonl").read_text(encoding="utf-8").splitlines()]
        assert main(["val", "--weights", str(w), "--data", str(data), "--split", "valid", "--device", "cpu", "--workers", "0",
                     "--json", str(out / "val.json")]) == 0
        results[w.suffix] = rows, json.loads((out / "val.json").read_text())
    (pt_rows, pt_val), (onnx_rows, onnx_val) = results[".pt"], results[".onnx"]
    for a, b in zip(pt_rows, onnx_rows):
        assert len(a["detections"]) == len(b["detections"]) > 0
        np.testing.assert_allclose([d["score"] for d in a["detections"]], [d["score"] for d in b["detections"]], atol=1e-3)
    assert onnx_val["images"] == pt_val["images"] == len(CLASSES)
    assert onnx_val["voc_ap50"] == pytest.approx(pt_val["voc_ap50"], abs=1e-3)
    capsys.readouterr()
    # it runs on ONNX Runtime only, and it is no checkpoint to export or train from
    assert main(["predict", str(src), "--weights", str(onnx_file), "--backend", "torch", "--save-dir", str(tmp_path / "o")]) == 2
    assert f"{onnx_file} is an ONNX model: it runs on ONNX Runtime" in capsys.readouterr().err
    assert main(["export", "--weights", str(onnx_file), "-o", str(tmp_path / "again.onnx")]) == 2
    assert f"{onnx_file} is an ONNX model already" in capsys.readouterr().err
    notes = tmp_path / "x.txt"
    notes.write_text("my notes\n")
    for argv in (["predict", str(src), "--save-dir", str(tmp_path / "o")], ["val", "--data", str(data), "--split", "valid"]):
        assert main([*argv, "--weights", str(notes)]) == 2
        assert f"{notes} is a text file, not a checkpoint" in capsys.readouterr().err
    # --int8 / --onnx take the checkpoint: an exported graph as --weights is named, not silently run in FP32
    assert main(["predict", str(src), "--weights", str(onnx_file), "--int8", "--device", "cpu", "--save-dir", str(tmp_path / "o")]) == 2
    assert f"{onnx_file} is an exported graph already: --int8 and --onnx take the .pt checkpoint" in capsys.readouterr().err
    # without -o, --int8 writes beside the weights as w.int8.onnx
    w = tmp_path / "w.pt"
    w.write_bytes(ssd_weights.read_bytes())
    assert main(["export", "--weights", str(w), "--int8", "--calib-images", "2"]) == 0
    assert (tmp_path / "w.int8.onnx").is_file() and not (tmp_path / "w.onnx").exists()
