"""Unique products in a video (detect/audit/track.py) on aisle-walk videos whose products'
identities are known (detect/data/synth/aisle.py), and detect audit on a video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trackers", reason="the tracker extra (pip install 'retail-detect[track]') is not installed")

from detect.audit.track import UniqueCounter  # noqa: E402
from detect.data.synth.aisle import render_aisle  # noqa: E402
from detect.structures import Detections  # noqa: E402

NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def walk():
    return render_aisle(3, 0, width=640, height=360, frames=60, bays=2, bay_size=800)


def test_aisle_walk_is_deterministic_and_knows_every_product(walk):
    again = render_aisle(3, 0, width=640, height=360, frames=60, bays=2, bay_size=800)
    f, g = walk.frame(20), again.frame(20)
    assert np.array_equal(f.image, g.image) and np.array_equal(f.boxes, g.boxes)
    assert f.image.shape == (360, 640, 3) and len(f.boxes) == len(f.instance) > 10
    assert (f.boxes[:, 0] >= 0).all() and (f.boxes[:, 2] <= 640).all()
    seen = set()
    for fr in walk.frames():
        seen |= set(fr.instance.tolist())
    assert set(walk.seen.tolist()) <= seen and walk.unique == len(walk.seen)
    assert walk.boxes_total > 5 * walk.unique  # adding every frame's boxes overcounts many times


def test_each_product_is_counted_once(walk):
    """Boxes of the products in view, moved by 2% noise, as a detector would give them: the
    count is within 5% of the true number (every frame's boxes added is many times more)."""
    rng = np.random.default_rng(0)
    counter = UniqueCounter(walk.fps, min_frames=3)
    for f in walk.frames():
        wh = np.stack([f.boxes[:, 2] - f.boxes[:, 0], f.boxes[:, 3] - f.boxes[:, 1]] * 2, 1)
        boxes = (f.boxes + rng.normal(0, 0.02, f.boxes.shape) * wh).astype(np.float32)
        ids = counter.update(Detections(boxes, np.full(len(boxes), 0.9, np.float32), f.labels, NAMES))
        assert ids.shape == (len(boxes),)
    counted = sum(counter.counts(NAMES).values())
    assert abs(counted - walk.unique) <= 0.05 * walk.unique, (counted, walk.unique)


def test_a_product_keeps_its_class_by_majority():
    c = UniqueCounter(30.0, min_frames=2)
    for k in range(6):
        box = np.array([[10 + k, 10, 50 + k, 80]], np.float32)
        c.update(Detections(box, np.array([0.9], np.float32), np.array([1 if k == 3 else 0]), NAMES))
    assert c.counts(NAMES) == {"0": 1}


class TruthPredictor:
    """Stands in for Predictor in ``detect audit``: each video frame's detections are the
    walk's true boxes of that frame (the command, its tracker and its outputs are what is tested)."""

    weights = "truth"

    def __init__(self, walk) -> None:
        self.walk, self.classes = walk, NAMES

    def stream(self, source, batch=1, max_pixels=0):
        from detect.infer.sources import iter_source

        for fr in iter_source(source, max_pixels=max_pixels):
            f = self.walk.frame(fr.frame)
            yield fr, Detections(f.boxes, np.full(len(f.boxes), 0.9, np.float32), f.labels, NAMES)


def test_detect_audit_on_a_video(tmp_path, walk, capsys, monkeypatch):
    import detect.audit.audit_cli as cli_module
    from detect.cli import main

    monkeypatch.setattr(cli_module, "Predictor", lambda *a, **k: TruthPredictor(walk))
    video = walk.write(tmp_path / "aisle.mp4")
    out = tmp_path / "out"
    rc = main(["audit", str(video), "--save-dir", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    (v,) = json.loads((out / "audit.json").read_text())["videos"]
    assert v["frames"] == 60 and v["tracker"].startswith("ByteTrack") and v["video"] == str(out / "aisle.mp4")
    assert abs(v["total"] - walk.unique) <= 0.05 * walk.unique
    assert v["total"] == sum(v["unique"].values()) and f"{v['total']} unique products in 60 frames" in text
    assert (out / "aisle.mp4").is_file() and (out / "unique.csv").is_file()
    assert not (out / "facings.csv").exists()  # no photo: no photo tables
    html = (out / "report.html").read_text()
    assert 'class="unique"' in html and "data:image/jpeg;base64," in html
