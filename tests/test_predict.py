"""Inference: Predictor API, sources, BN folding, `detect predict` outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from _predict_helpers import CLASSES, StandInDetector, confident_ssd_checkpoint, synthetic_image
from detect.cli import main
from detect.config import ExperimentConfig, ModelConfig, Preprocess
from detect.infer import sources as S
from detect.infer.fuse import fuse_conv_bn
from detect.infer.predict import Predictor
from detect.infer.weights import DEFAULT_WEIGHTS


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny SSD checkpoint (random weights, 64 px input) written by the checkpoint module."""
    build = pytest.importorskip("detect.models.build", reason="SSD model not written yet")
    from detect.engine.checkpoint import save_checkpoint

    cfg = ExperimentConfig(model=ModelConfig(name="ssd", pretrained="none", num_classes=len(CLASSES)), preprocess=Preprocess(imgsz=64))
    torch.manual_seed(0)
    model = build.build_model(cfg.model, cfg.preprocess)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, config=cfg.to_dict(), classes=CLASSES, model=model.state_dict())
    return path


@pytest.fixture()
def standin() -> Predictor:
    return Predictor.from_model(StandInDetector(), Preprocess(imgsz=64, resize="stretch"), CLASSES, conf=0.3)


class FixedBoxes(torch.nn.Module):
    """Eval-mode detector that finds one box at fixed input pixels in every image."""

    def __init__(self, box=(8.0, 8.0, 40.0, 24.0)):
        super().__init__()
        self.box = torch.tensor([box])
        self.score_thresh, self.nms_thresh, self.max_det = 0.01, 0.45, 100

    def forward(self, images):
        return [{"boxes": self.box.clone(), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])} for _ in images]


@pytest.mark.parametrize("resize, h, w, expected", [
    ("letterbox", 100, 200, [25, 25, 125, 75]),  # 200 -> 64: the image fills 64 x 32, one factor (200/64, 100/32)
    ("letterbox", 200, 100, [25, 25, 125, 75]),
    ("stretch", 100, 200, [25, 12.5, 125, 37.5]),  # (200/64, 100/64)
])
def test_input_pixels_map_back_by_the_resize_mode(resize, h, w, expected):
    p = Predictor.from_model(FixedBoxes(), Preprocess(imgsz=64, resize=resize), CLASSES, conf=0.3, fuse=False, backend="torch")
    (d,) = p.predict([np.zeros((h, w, 3), np.uint8)])
    np.testing.assert_allclose(d.boxes[0], np.minimum(expected, [w, h, w, h]), atol=1e-3)


def test_letterboxed_input_is_padded_right_and_bottom():
    p = Predictor.from_model(FixedBoxes(), Preprocess(imgsz=64), CLASSES, fuse=False, backend="torch")
    x = p.preprocess([np.full((100, 200, 3), 255, np.uint8)])
    assert x.shape == (1, 3, 64, 64)
    assert torch.all(x[0, :, :32] == 1.0) and torch.allclose(x[0, :, 32:], torch.tensor(114 / 255))


# ----------------------------------------------------------------------------- Predictor
def test_boxes_come_back_in_original_pixels(standin):
    img = synthetic_image(64, 64)
    # 3x wider, 2x taller: linear resizing back to 64 x 64 gives exactly img again
    big = cv2.resize(img, (192, 128), interpolation=cv2.INTER_NEAREST)
    a, b = standin.predict([img, big])
    assert len(a) > 0 and len(a) == len(b)
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    assert np.all(b.boxes[:, [0, 2]] <= 192) and np.all(b.boxes[:, [1, 3]] <= 128) and np.all(b.boxes >= 0)
    np.testing.assert_allclose(b.boxes, a.boxes * [3, 2, 3, 2], atol=1.0)  # same detections, scaled
    assert np.all(np.diff(a.scores) <= 0) and np.all(a.scores >= 0.3)
    assert a.names == [CLASSES[i] for i in a.labels]
    assert sum(a.counts().values()) == len(a)


def test_class_filter_and_validation():
    p = Predictor.from_model(StandInDetector(), Preprocess(imgsz=64), CLASSES, conf=0.05, keep=["cola", "2"])
    dets = p.predict([synthetic_image(seed=s) for s in range(3)])
    assert all(set(d.labels.tolist()) <= {0, 2} for d in dets)
    with pytest.raises(ValueError, match="unknown class 'fanta'"):
        Predictor.from_model(StandInDetector(), Preprocess(imgsz=64), CLASSES, keep=["fanta"])
    with pytest.raises(ValueError, match="BGR uint8"):
        p.predict([np.zeros((8, 8), np.uint8)])
    assert p.predict([]) == []


def test_folding_keeps_outputs_and_finds_every_pair():
    m = StandInDetector().eval()
    x = torch.rand(2, 3, 64, 64)
    fused, n = fuse_conv_bn(m, x)
    assert n == 3
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in fused.modules())
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules()), "the input model must stay untouched"
    (b0, s0), (b1, s1) = m.raw(x), fused.raw(x)
    torch.testing.assert_close(s1, s0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b1, b0, atol=1e-3, rtol=1e-4)


def test_large_batches_are_copied_in_threads_in_order(monkeypatch):
    import detect.infer.predict as P

    monkeypatch.setattr(P.os, "cpu_count", lambda: 4)
    images = [np.full((6, 5, 3), i, np.uint8) for i in range(4 * P._COPY_MIN + 3)]
    host = np.zeros((len(images), 6, 5, 3), np.uint8)
    P._copy_into(host, images)
    assert P._COPY_POOL is not None  # the threaded path ran
    assert [int(h[0, 0, 0]) for h in host] == list(range(len(images))) and all((h == h[0, 0, 0]).all() for h in host)


def test_folding_check_runs_float32_in_full_precision(monkeypatch):
    """cuDNN's default TF32 float32 convolutions (10-bit mantissa) made every fold fail its check
    on a GPU; the check turns TF32 off while it runs, and restores the settings after."""
    import detect.infer.fuse as fuse

    seen = []
    real = fuse._feature_maps
    monkeypatch.setattr(fuse, "_feature_maps", lambda m, x: seen.append(
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)) or real(m, x))
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        _, n = fuse_conv_bn(StandInDetector().eval(), torch.rand(1, 3, 32, 32))
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    assert n == 3 and seen == [(False, False)] * 2


def test_folding_refuses_a_conv_whose_output_is_also_used_elsewhere():
    class Residual(torch.nn.Module):  # y = bn(conv(x)) + conv(x): folding bn would change the sum
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(0.5)

        def forward(self, x):
            c = self.conv(x)
            return self.bn(c) + c

    m = Residual().eval()
    out, n = fuse_conv_bn(m, torch.rand(1, 3, 8, 8))
    assert n == 0 and out is m


def test_stream_batches_and_reports_bad_items(tmp_path, standin):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), synthetic_image(seed=i))
    (tmp_path / "2.png").write_bytes(b"\x89PNG garbage")
    got = list(standin.stream(str(tmp_path), batch=2))
    assert [Path(f.path).name for f, _ in got] == [f"{i}.png" for i in range(5)]
    assert [d is None for _, d in got] == [False, False, True, False, False]
    assert "not a readable image" in got[2][0].error


def test_sources_kinds(tmp_path):
    img = synthetic_image()
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "b.png"), img)
    (tmp_path / "list.txt").write_text("a.jpg\n# comment\nsub/b.png\n")
    assert [Path(f).name for f in S.expand(str(tmp_path))[0]] == ["a.jpg", "b.png"]  # recursive, sorted
    assert [Path(f).name for f in S.expand(str(tmp_path / "list.txt"))[0]] == ["a.jpg", "b.png"]
    assert [Path(f).name for f in S.expand(str(tmp_path / "**" / "*.png"))[0]] == ["b.png"]
    assert S.is_stream("0") and S.is_stream("rtsp://cam/1") and not S.is_stream(str(tmp_path))
    with pytest.raises(S.SourceError, match="no such file"):
        S.iter_source(str(tmp_path / "missing.jpg"))
    with pytest.raises(S.SourceError, match="no file matches"):
        S.iter_source(str(tmp_path / "*.gif"))
    gray = tmp_path / "g.png"
    cv2.imwrite(str(gray), np.zeros((5, 7), np.uint8))
    im, err = S.read_image(str(gray))
    assert err is None and im.shape == (5, 7, 3)


def test_prefetch_propagates_errors_and_stops_early():
    def gen():
        yield 1
        yield 2
        raise RuntimeError("decoder died")

    it = S.prefetch(gen(), depth=1)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(RuntimeError, match="decoder died"):
        next(it)
    endless = S.prefetch(iter(int, 1), depth=2)  # never ends: closing must stop the thread
    assert next(endless) == 0
    endless.close()


# ----------------------------------------------------------------------------- detect predict
def test_folder_with_one_corrupt_image_exits_1(tmp_path, tiny_weights, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"ok{i}.jpg"), synthetic_image(seed=i))
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    rc = main(["predict", str(src), "--weights", str(tiny_weights), "--save-dir", str(out), "--save-json", "--save-csv",
               "--conf", "0.01", "--no-progress", "--device", "cpu"])
    assert rc == 1
    err = capsys.readouterr()
    assert "broken.jpg" in err.err + err.out
    assert sorted(p.name for p in out.glob("*.jpg")) == ["ok0.jpg", "ok1.jpg", "ok2.jpg"]
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4 and sum("error" in r for r in lines) == 1
    good = [r for r in lines if "error" not in r]
    assert all(r["width"] == 96 and r["height"] == 64 and sum(r["counts"].values()) == len(r["detections"]) for r in good)
    header = (out / "counts.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["source", "frame", "total", *CLASSES]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 3 and summary["failed"] == 1


def test_save_dir_that_holds_the_inputs_is_refused(tmp_path, tiny_weights, capsys):
    """`detect predict DIR --save-dir DIR` replaced the photos with annotated copies (exit 0)."""
    src = tmp_path / "imgs"
    (src / "aisle").mkdir(parents=True)
    cv2.imwrite(str(src / "aisle" / "a.jpg"), synthetic_image())
    cv2.imwrite(str(src / "b.png"), synthetic_image(seed=1))
    (tmp_path / "list.txt").write_text("imgs/b.png\n")
    before = {p: p.read_bytes() for p in src.rglob("*.*")}
    for source, save_dir, named in [(src, src, src / "aisle" / "a.jpg"),  # the folder itself
                                    (src / "aisle", src / "aisle", src / "aisle" / "a.jpg"),
                                    (tmp_path / "list.txt", src, src / "b.png"),  # a list: outputs by file name
                                    (src / "b.png", src, src / "b.png")]:
        rc = main(["predict", str(source), "--weights", str(tiny_weights), "--save-dir", str(save_dir), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and f"--save-dir {save_dir} holds the input images" in err and str(named) in err, err
    assert {p: p.read_bytes() for p in src.rglob("*.*")} == before


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (RGB) and whose pixel data is one byte: a
    decoder would allocate width * height * 3 bytes before finding out."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_images_above_the_pixel_limit_are_skipped_before_decoding(tmp_path, tiny_weights, capsys, monkeypatch):
    """A 1.2 MB PNG of 20000 x 20000 was decoded at 3.55 GB: the header is read first, the image
    named and skipped, the others run, exit 1 (like any unreadable image)."""
    src = tmp_path / "imgs"
    src.mkdir()
    cv2.imwrite(str(src / "ok.jpg"), synthetic_image())
    (src / "bomb.png").write_bytes(_png_header(20000, 20000))
    (src / "big.png").write_bytes(_png_header(12000, 9000))  # above Pillow's limit, below twice it: it gives the size
    (src / "huge.png").write_bytes(_png_header(100000, 100000))  # above twice Pillow's limit: it gives no size
    decoded = []
    real = S.cv2.imdecode
    monkeypatch.setattr(S.cv2, "imdecode", lambda data, flags: decoded.append(len(data)) or real(data, flags))
    out = tmp_path / "out"
    rc = main(["predict", str(src), "--weights", str(tiny_weights), "--save-dir", str(out), "--no-progress", "--device", "cpu"])
    err = "".join(capsys.readouterr())
    assert rc == 1 and len(decoded) == 1 and (out / "ok.jpg").is_file()
    assert f"{src / 'bomb.png'}: image of 400.0 megapixels, above the limit of 89.5 (--max-pixels); not decoded" in err
    assert f"{src / 'big.png'}: image of 12000x9000 = 108.0 megapixels, above the limit of 89.5" in err
    assert f"{src / 'huge.png'}: image of 10000.0 megapixels, above the limit of 89.5" in err
    # an option raises the limit (and a small one refuses ordinary photos)
    rc = main(["predict", str(src / "ok.jpg"), "--weights", str(tiny_weights), "--save-dir", str(out), "--no-progress",
               "--device", "cpu", "--max-pixels", "1000"])
    assert rc == 1 and "image of 96x64 = 0.0061 megapixels, above the limit of 0.001" in "".join(capsys.readouterr())


def test_missing_source_exits_2(tmp_path, tiny_weights, capsys):
    rc = main(["predict", str(tmp_path / "nope"), "--weights", str(tiny_weights), "--save-dir", str(tmp_path / "o")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_missing_and_foreign_weights_exit_2_with_a_clear_message(tmp_path, capsys):
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), synthetic_image())
    rc = main(["predict", str(img), "--weights", str(tmp_path / "none.pt"), "--save-dir", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    foreign = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)  # a bare state dict of some other model
    rc = main(["predict", str(img), "--weights", str(foreign), "--save-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a retail-detect checkpoint" in err, err


def test_checkpoint_predictor_matches_its_settings(tiny_weights):
    p = Predictor(tiny_weights, device="cpu", conf=0.02, iou=0.5, max_det=7, backend="torch")
    assert p.classes == CLASSES and p.imgsz == 64 and p.fused > 0 and p.backend == "torch"
    dets = p.predict([synthetic_image(seed=s) for s in range(2)])
    assert all(len(d) <= 7 and (d.scores >= 0.02).all() for d in dets)


def test_onnxruntime_backend_gives_the_same_detections(tmp_path):
    """ONNX Runtime runs the export head (softmax and decode included), PyTorch the same head
    unfused: scores agree to 1e-4, so the model must score its boxes apart by more than that."""
    pytest.importorskip("onnxruntime")
    weights = confident_ssd_checkpoint(tmp_path / "ssd.pt")
    images = [synthetic_image(seed=s) for s in range(3)]
    ref = Predictor(weights, device="cpu", conf=0.05, backend="torch", fuse=False).predict(images)
    p = Predictor(weights, device="cpu", conf=0.05)
    assert p.backend == "onnxruntime"  # the CPU default when onnxruntime is installed
    for a, b in zip(p.predict(images), ref):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        same = np.abs(a.scores[:, None] - b.scores[None, :]) < 1e-4  # equal scores may swap places
        close = np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]).max(-1) < 0.05
        assert (same & close).any(1).all()


def test_shipped_weights_find_products_on_fresh_synthetic_shelves():
    """The default weights detect the products of shelves rendered now (not seen in training)."""
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_WEIGHTS} yet")
    from detect.data.synth import render_scene
    from detect.engine.metrics import box_iou_np

    p = Predictor(device="cpu", conf=0.3)
    hits = total = 0
    for i in range(4):
        scene = render_scene(987654, i, size=480, kind="shelf")
        det = p.predict([scene.image])[0]
        keep = ~scene.difficult
        gt, gl = scene.boxes[keep], scene.labels[keep]
        total += len(gt)
        if len(det) and len(gt):
            iou = box_iou_np(gt, det.boxes)
            same = gl[:, None] == det.labels[None, :]
            hits += int(((iou >= 0.5) & same).any(1).sum())
    assert total > 0 and hits / total >= 0.6, f"recall@0.5 {hits}/{total}"


def test_demo_renders_detects_and_saves(tmp_path, tiny_weights, monkeypatch, capsys):
    import detect.infer.weights as W

    monkeypatch.setattr(W, "DEFAULT_WEIGHTS", tiny_weights)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--images", "2", "--device", "cpu"]) == 0
    saved = sorted((tmp_path / "demo").glob("*.jpg"))
    assert [p.name for p in saved] == ["shelf_00.jpg", "shelf_01.jpg", "store_shelf.jpg"]
    assert cv2.imread(str(saved[0])).shape[1] == 480
    assert cv2.imread(str(saved[2])).shape[:2] == (3000, 4000)  # one 12-megapixel store shelf, sliced
    out = capsys.readouterr().out
    assert str(tmp_path / "demo") in out and "the store shelf: 4000x3000, sliced at" in out
    monkeypatch.setattr(W, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    assert main(["demo", "--out", str(tmp_path / "d2")]) == 2
    assert "shipped weights" in capsys.readouterr().err


def test_show_without_display_says_so_and_goes_on(tmp_path, standin, monkeypatch, capsys):
    from detect.infer.predict_cli import run

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_image())
    summary = run(standin, str(tmp_path / "a.png"), tmp_path / "o", show=True, progress=False)
    assert summary.images == 1 and "--show: no display" in capsys.readouterr().err


def test_unreachable_stream_and_missing_webcam_are_reported_not_fatal(standin):
    for source, what in (("rtsp://127.0.0.1:9/none", "cannot open stream"), ("7", "cannot open webcam 7")):
        items = list(standin.stream(source))
        assert len(items) == 1 and items[0][1] is None and what in items[0][0].error


def test_video_files_are_batched_and_threads_are_set(tmp_path, capsys):
    """--batch 0 batches a video file's frames (VIDEO_BATCH), never still images or a live
    stream; ONNX Runtime gets exactly the threads asked for, an exported file too."""
    pytest.importorskip("onnxruntime")
    from detect.infer.predict_cli import VIDEO_BATCH, predict_batch
    from detect.models.onnx_ssd import default_threads

    assert VIDEO_BATCH > 1
    assert predict_batch((["a.jpg", "b.png"], None)) == 1
    assert predict_batch((["a.mkv", "clip.MP4"], None)) == VIDEO_BATCH
    assert predict_batch((["a.jpg", "clip.mp4"], None)) == 1  # a mixed folder: its photos are never batched
    assert predict_batch(None) == 1  # a stream
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert f"(0: {VIDEO_BATCH} frames when the source is video files" in " ".join(capsys.readouterr().out.split())
    assert default_threads() == torch.get_num_threads()

    weights = confident_ssd_checkpoint(tmp_path / "ssd.pt")
    for n in (1, 2):
        p = Predictor(weights, device="cpu", threads=n)
        assert p.backend == "onnxruntime"
        assert p.runner.session.get_session_options().intra_op_num_threads == n
    onnx = tmp_path / "ssd.onnx"
    assert main(["export", "--weights", str(weights), "-o", str(onnx)]) == 0
    p = Predictor(onnx, device="cpu", threads=2)
    assert p.model.session.get_session_options().intra_op_num_threads == 2
    assert len(p.predict([synthetic_image(seed=0)])) == 1


def test_onnx_runtime_path_runs_torch_on_one_thread_and_restores_it(tmp_path, monkeypatch):
    """Torch's ops around an ONNX Runtime run stay on the calling thread (its OpenMP threads
    spun on the cores ONNX Runtime's threads needed), and torch's setting is back afterwards."""
    pytest.importorskip("onnxruntime")
    weights = confident_ssd_checkpoint(tmp_path / "ssd.pt")
    p = Predictor(weights, device="cpu", threads=2)
    seen = []
    run = p.runner.__call__
    monkeypatch.setattr(p, "runner", lambda x: seen.append(torch.get_num_threads()) or run(x))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(p.predict([synthetic_image(seed=0)])) == 1
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_batch_postprocess_maps_filters_and_sorts_each_image(standin):
    """The whole batch is mapped as one set of rows: each image's boxes scaled from S x S to its
    own size and clipped to it, unwanted classes dropped, rows sorted by score within the image;
    an image with no detection stays in its place."""
    g = torch.Generator().manual_seed(0)
    S = standin.imgsz
    sizes = [(48, 64), (100, 30), (64, 64), (7, 200)]
    counts = [5, 0, 3, 6]
    outputs = [{"boxes": torch.rand(n, 4, generator=g) * (S + 20) - 10, "scores": torch.rand(n, generator=g),
                "labels": torch.randint(0, len(CLASSES), (n,), generator=g)} for n in counts]
    for keep in (None, [0, 2]):
        standin._keep_t = torch.as_tensor(keep) if keep is not None else None
        dets = standin._postprocess(outputs, sizes)
        assert len(dets) == len(sizes)
        for d, o, (h, w) in zip(dets, outputs, sizes):
            m = np.isin(o["labels"].numpy(), keep) if keep is not None else np.ones(len(o["labels"]), bool)
            scale = np.array([w, h, w, h], np.float32) / S
            want = np.minimum(np.maximum(o["boxes"].numpy()[m] * scale, 0), scale * S)
            order = np.argsort(-o["scores"].numpy()[m], kind="stable")
            np.testing.assert_allclose(d.boxes, want[order], rtol=1e-6, atol=1e-4)
            np.testing.assert_array_equal(d.scores, o["scores"].numpy()[m][order])
            np.testing.assert_array_equal(d.labels, o["labels"].numpy()[m][order])
    standin._keep_t = None
