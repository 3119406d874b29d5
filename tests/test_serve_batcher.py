"""The serve batcher with a recording stand-in for the Predictor: batches fill up to
``max_batch`` within ``max_wait``, one batch holds one key, a full queue says busy, closing
fails what still waits, an error in ``predict`` reaches every request of its batch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from detect.serve.batcher import Batcher, Busy, Closed, Key, filter_detections
from detect.structures import Detections


class Recorder:
    """``predict(images) -> one detection per image`` whose score is the image's first pixel / 255."""

    classes = ["a", "b"]

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.model = type("M", (), {"nms_thresh": 0.45, "score_thresh": 0.05, "max_det": 100})()
        self.batches: list[tuple[int, float]] = []
        self.delay, self.fail = delay, fail
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a batch reaches predict (the worker holds it)

    def predict(self, images):
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("model exploded")
        time.sleep(self.delay)
        self.batches.append((len(images), self.model.nms_thresh))
        return [Detections(np.array([[0, 0, 1, 1]], np.float32), np.array([im[0, 0, 0] / 255], np.float32),
                           np.array([1]), self.classes) for im in images]


def image(v: int) -> np.ndarray:
    return np.full((4, 4, 3), v, np.uint8)


def test_batches_fill_up_and_answer_in_order():
    rec = Recorder()
    rec.gate.clear()  # hold the first batch so the rest queue up behind it
    b = Batcher(rec, max_batch=4, max_wait=0.05)
    try:
        futures = [b.submit(image(i), Key(0.45)) for i in range(9)]
        time.sleep(0.1)
        rec.gate.set()
        results = [f.result(10) for f in futures]
        assert [round(float(r.detections.scores[0]) * 255) for r in results] == list(range(9))
        assert sum(n for n, _ in rec.batches) == 9 and max(n for n, _ in rec.batches) == 4
        assert all(r.batch_size >= 1 and r.queue_s >= 0 and r.infer_s >= 0 for r in results)
    finally:
        b.close()


def test_one_key_per_batch_and_iou_set_on_the_model():
    rec = Recorder()
    rec.gate.clear()
    b = Batcher(rec, max_batch=8, max_wait=0.05)
    try:
        keys = [Key(0.45), Key(0.3), Key(0.3), Key(0.45), Key(0.3)]
        futures = [b.submit(image(i), k) for i, k in enumerate(keys)]
        rec.gate.set()
        for f in futures:
            f.result(10)
        assert sum(n for n, _ in rec.batches) == 5
        # every batch ran with its own key's IoU on the model
        assert {iou for _, iou in rec.batches} == {0.45, 0.3} and len(rec.batches) >= 2
    finally:
        b.close()


def test_max_batch_one_is_no_batching():
    rec = Recorder()
    b = Batcher(rec, max_batch=1, max_wait=0.05)
    try:
        for f in [b.submit(image(i), Key(0.45)) for i in range(5)]:
            assert f.result(10).batch_size == 1
        assert [n for n, _ in rec.batches] == [1] * 5
    finally:
        b.close()


def test_busy_closed_and_errors():
    rec = Recorder()
    rec.gate.clear()
    b = Batcher(rec, max_batch=1, max_wait=0.0, max_queue=2)
    first = b.submit(image(1), Key(0.45))
    assert rec.entered.wait(10)  # the worker holds `first` (not a sleep: a loaded machine is slow); two more fill the queue
    waiting = [b.submit(image(2), Key(0.45)), b.submit(image(3), Key(0.45))]
    with pytest.raises(Busy):
        b.submit(image(4), Key(0.45))
    rec.gate.set()
    first.result(10)
    b.close()
    with pytest.raises(Closed):
        b.submit(image(5), Key(0.45))
    for f in waiting:  # answered or failed with Closed, never left hanging
        try:
            f.result(1)
        except Closed:
            pass
    bad = Batcher(Recorder(fail=True), max_batch=4, max_wait=0.01)
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            bad.submit(image(1), Key(0.45)).result(10)
    finally:
        bad.close()


def test_filter_detections():
    det = Detections(np.arange(16, dtype=np.float32).reshape(4, 4), np.array([0.9, 0.7, 0.5, 0.2], np.float32),
                     np.array([0, 1, 0, 1]), ["a", "b"])
    assert filter_detections(det, 0.6, 10, None).scores.tolist() == pytest.approx([0.9, 0.7])
    assert filter_detections(det, 0.0, 10, np.array([1])).labels.tolist() == [1, 1]
    out = filter_detections(det, 0.0, 2, np.array([0]))
    assert out.labels.tolist() == [0, 0] and out.boxes.shape == (2, 4) and out.classes == ["a", "b"]
