"""Video round trip: a small synthetic MP4 through `detect predict` -> annotated MP4 + JSON lines."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from _predict_helpers import CLASSES, StandInDetector, write_video
from detect.config import Preprocess
from detect.infer.predict import Predictor
from detect.infer.predict_cli import run
from detect.infer.sources import iter_source
from detect.viz.video import VideoSink, video_info


@pytest.fixture()
def predictor() -> Predictor:
    return Predictor.from_model(StandInDetector(), Preprocess(imgsz=64), CLASSES, conf=0.3)


def test_video_round_trip(tmp_path, predictor):
    src = write_video(tmp_path / "clip.mp4", n=15, w=96, h=64, fps=12.0)
    out = tmp_path / "out"
    summary = run(predictor, str(src), out, save_json=True, save_csv=True, progress=False)
    assert summary.frames == 15 and summary.images == 0 and not summary.failed
    info = video_info(out / "clip.mp4")
    assert info == {"fps": 12.0, "width": 96, "height": 64, "frames": 15}
    rows = [json.loads(line) for line in (out / "detections.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["frame"] for r in rows] == list(range(15))
    assert all(r["source"] == str(src) and (r["width"], r["height"]) == (96, 64) for r in rows)
    assert all(sum(r["counts"].values()) == len(r["detections"]) for r in rows)
    assert summary.detections == sum(len(r["detections"]) for r in rows) > 0
    counts = (out / "counts.csv").read_text(encoding="utf-8").splitlines()
    assert len(counts) == 16
    assert not list(out.glob(".*part*")), "temporary files left behind"


def test_video_frames_match_the_drawn_detections(tmp_path, predictor):
    """The annotated video shows the input frames with boxes drawn (not blank or shifted)."""
    src = write_video(tmp_path / "c.mp4", n=3, w=96, h=64)
    run(predictor, str(src), tmp_path / "o", progress=False)
    frames_in = [f.image for f in iter_source(str(src))]
    cap = cv2.VideoCapture(str(tmp_path / "o" / "c.mp4"))
    for i, want in enumerate(frames_in):
        ok, got = cap.read()
        assert ok, f"frame {i} missing"
        drawn = predictor.draw(want, predictor.predict([want])[0])
        to_drawn = np.abs(got.astype(int) - drawn.astype(int)).mean()
        to_raw = np.abs(got.astype(int) - want.astype(int)).mean()
        assert to_drawn < 20 and to_drawn < to_raw / 2, (to_drawn, to_raw)  # mp4v is lossy at 96x64
    cap.release()


def test_corrupt_video_frames_are_skipped_and_counted(tmp_path, predictor):
    src = write_video(tmp_path / "v.mp4", n=40, w=96, h=64)
    data = np.frombuffer(src.read_bytes(), np.uint8).copy()
    # overwrite 2 kB in the middle of the stream with noise: some frames no longer decode
    a = len(data) // 3
    data[a : a + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)
    (tmp_path / "bad.mp4").write_bytes(data.tobytes())
    summary = run(predictor, str(tmp_path / "bad.mp4"), tmp_path / "o", save_json=True, progress=False)
    assert len(summary.failed) >= 1 and summary.frames >= 30
    assert summary.frames + len(summary.failed) == 40
    assert all("bad.mp4#" in f and "decode" in f for f in summary.failed)
    rows = [json.loads(line) for line in (tmp_path / "o" / "detections.jsonl").read_text().splitlines()]
    assert sorted(r["frame"] for r in rows) == list(range(40))
    unreadable = tmp_path / "junk.mp4"
    unreadable.write_bytes(b"not a video at all" * 10)
    summary = run(predictor, str(unreadable), tmp_path / "o2", save=False, progress=False)
    assert summary.frames == 0 and len(summary.failed) == 1 and "cannot open video" in summary.failed[0]


def test_video_sink_is_atomic_and_flat(tmp_path):
    sink = VideoSink(tmp_path / "a.mp4", fps=0)  # a stream reporting 0 fps gets 30
    for i in range(5):
        sink.write(np.full((32, 48, 3), i * 40, np.uint8))
        assert not (tmp_path / "a.mp4").exists(), "the final name appears only when the video is complete"
    sink.write(np.zeros((16, 16, 3), np.uint8))  # another size: resized, not a broken file
    assert sink.close() == tmp_path / "a.mp4"
    assert video_info(tmp_path / "a.mp4") == {"fps": 30.0, "width": 48, "height": 32, "frames": 6}
