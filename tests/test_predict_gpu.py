"""GPU inference (skipped without CUDA): device-side preprocessing and fp16 agree with the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _predict_helpers import CLASSES, StandInDetector, synthetic_image
from detect.config import Preprocess
from detect.infer.predict import Predictor

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("half", [False, True])
def test_cuda_matches_cpu(half):
    images = [synthetic_image(96, 64, seed=s) for s in range(10)]  # >= 8: the pinned-buffer upload path
    cpu = Predictor.from_model(StandInDetector(), Preprocess(imgsz=64), CLASSES, conf=0.3, backend="torch").predict(images)
    gpu = Predictor.from_model(StandInDetector(), Preprocess(imgsz=64), CLASSES, device="cuda", half=half, conf=0.3).predict(images)
    stol, btol = (0.02, 3.0) if half else (1e-3, 0.5)
    for a, b in zip(gpu, cpu):
        assert len(b) > 0 and abs(len(a) - len(b)) <= max(2, len(b) // 10)
        # every confident GPU box has a CPU twin: cv2.resize (CPU) and F.interpolate (GPU) are
        # both bilinear without antialias, so inputs match up to rounding
        n = min(len(a), 10)
        score_ok = np.abs(a.scores[:n, None] - b.scores[None, :]) < stol
        box_ok = np.abs(a.boxes[:n, None, :] - b.boxes[None, :, :]).max(-1) < btol
        same_label = a.labels[:n, None] == b.labels[None, :]
        assert (score_ok & box_ok & same_label).any(1).all()


def test_cuda_large_batch_reuses_the_pinned_buffer():
    p = Predictor.from_model(StandInDetector(), Preprocess(imgsz=64), CLASSES, device="cuda", half=True, conf=0.3)
    images = [synthetic_image(96, 64, seed=s) for s in range(64)]
    first = p.predict(images)
    again = p.predict(images)  # the pinned buffer is reused: results must not change
    assert [len(d) for d in first] == [len(d) for d in again]
    torch.cuda.synchronize()


def test_shipped_weights_fold_batchnorm_on_cuda():
    """Every BatchNorm is folded on a GPU too (the TF32 check once refused them all there, and
    unfolded BatchNorm was half of the network's time at batch 256)."""
    p = Predictor(device="cuda", half=True)
    assert p.fused > 0
