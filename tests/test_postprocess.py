"""SSD postprocessing (detect/models/postprocess.py, pure functions): decoding and one offset
NMS for the whole batch equal torchvision's per-image batched_nms, and NMS in image chunks
equals one call. The model's eval contract is test_ssd.py."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms

from detect.models import postprocess as pp


def random_head(B: int, N: int, C: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, N, C, generator=g) * 3
    codes = torch.randn(B, N, 4, generator=g) * 0.5
    xy = torch.rand(N, 2, generator=g) * 100
    anchors = torch.cat([xy, xy + 5 + torch.rand(N, 2, generator=g) * 40], 1)
    return logits, codes, anchors


@pytest.mark.parametrize("thresh", [0.05, 0.6])  # top-k path / sparse path (all candidates fit)
def test_postprocess_matches_per_image_nms_with_one_call(monkeypatch, thresh):
    B, N, C = 3, 400, 5
    logits, codes, anchors = random_head(B, N, C)
    calls = []
    real_nms = pp.nms
    monkeypatch.setattr(pp, "nms", lambda *a: calls.append(1) or real_nms(*a))
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    boxes, scores = pp.decode_outputs(logits, codes, anchors, coder.weights, coder.bbox_xform_clip, (128, 128))
    dets = pp.select_detections(boxes, scores, thresh, 0.5, pre_nms_topk=300, max_det=50)
    assert len(calls) == 1 and len(dets) == B

    for b in range(B):  # reference: this image alone, torchvision's batched_nms over classes
        scores = logits[b].softmax(-1)[:, 1:]
        s, idx = scores.flatten().topk(300)
        boxes = coder.decode_single(codes[b][idx // (C - 1)], anchors[idx // (C - 1)]).clamp(0, 128)
        labels = idx % (C - 1)
        ok = (s > thresh) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        assert 0 < int(ok.sum()) < (300 if thresh > 0.5 else 10**6)
        keep = batched_nms(boxes[ok], s[ok], labels[ok], 0.5)[:50]
        assert len(dets[b]["boxes"]) <= 50
        assert torch.allclose(dets[b]["scores"], s[ok][keep])
        assert torch.equal(dets[b]["labels"], labels[ok][keep])
        assert torch.allclose(dets[b]["boxes"], boxes[ok][keep], atol=1e-4)


def test_postprocess_chunks_and_max_det_1000():
    B, N, C = 4, 3000, 3
    logits, codes, anchors = random_head(B, N, C, seed=1)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    args = (*pp.decode_outputs(logits, codes, anchors, coder.weights, coder.bbox_xform_clip, (160, 160)), 0.0, 0.9)
    whole = pp.select_detections(*args, pre_nms_topk=3000, max_det=1000)
    chunked = pp.select_detections(*args, pre_nms_topk=3000, max_det=1000, max_nms_boxes=5000)
    assert all(len(d["boxes"]) == 1000 for d in whole)  # 0.9 IoU leaves plenty: capped at max_det
    for a, b in zip(whole, chunked):
        assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"])
    assert all(math.isclose(float(d["scores"][0]), float(d["scores"].max())) for d in whole)
