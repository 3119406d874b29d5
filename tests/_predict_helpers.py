"""Helpers for the inference tests: a tiny stand-in detector that follows the model contract
(eval: ``model(Tensor[B, 3, S, S] in [0, 1]) -> list[dict(boxes, scores, labels)]``), tiny
checkpoints, and synthetic images and videos written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

CLASSES = ["cola", "可口可乐", "お茶"]


class StandInDetector(nn.Module):
    """Conv-BN-ReLU x2 and a 1x1 head on a stride-8 grid: per cell K+1 logits and 4 box
    deltas around a fixed square anchor; softmax, decode, one batched NMS. Random weights,
    but deterministic and with real BatchNorm statistics, so folding is exercised."""

    def __init__(self, num_classes: int = len(CLASSES), imgsz: int = 64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.imgsz, self.k = imgsz, num_classes
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.head = nn.Conv2d(16, num_classes + 1 + 4, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        self.score_thresh, self.nms_thresh, self.max_det = 0.01, 0.45, 100

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.head(self.body(images - 0.5))  # (B, K+5, h, w)
        B, C, h, w = y.shape
        y = y.permute(0, 2, 3, 1).reshape(B, h * w, C)  # (B, K+5, h, w) -> (B, h*w, K+5)
        scores = y[..., : self.k + 1].softmax(-1)[..., 1:]  # (B, A, K), background dropped
        stride = self.imgsz / w
        ys, xs = torch.meshgrid(torch.arange(h, device=y.device), torch.arange(w, device=y.device), indexing="ij")
        ctr = torch.stack([xs, ys], -1).reshape(-1, 2).to(y.dtype) * stride + stride / 2  # (A, 2)
        d = y[..., self.k + 1 :]
        cxy = ctr + d[..., :2].tanh() * stride
        wh = 2 * stride * d[..., 2:].clamp(-2, 2).exp()
        boxes = torch.cat([cxy - wh / 2, cxy + wh / 2], -1).clamp(0, self.imgsz)  # (B, A, 4)
        return boxes, scores

    def forward(self, images: torch.Tensor):
        boxes, scores = self.raw(images)
        out = []
        for b, s in zip(boxes, scores):
            A, K = s.shape
            s, b = s.reshape(-1), b[:, None].expand(A, K, 4).reshape(-1, 4)  # (A, K) -> (A*K,)
            labels = torch.arange(K, device=s.device).repeat(A)
            keep = s > self.score_thresh
            s, b, labels = s[keep], b[keep], labels[keep]
            keep = batched_nms(b, s, labels, self.nms_thresh)[: self.max_det]
            out.append({"boxes": b[keep], "scores": s[keep], "labels": labels[keep]})
        return out


def confident_ssd_checkpoint(path: Path, imgsz: int = 64, box_classifier: bool = False) -> Path:
    """A tiny SSD checkpoint whose scores differ from box to box. A freshly initialised SSD
    scores every box alike (to the last bit of float32), so which of them survive NMS and the
    max_det cut would depend on rounding; this one has calibrated BatchNorm statistics (so each
    location's activations differ) and confident heads."""
    from detect.config import ExperimentConfig, ModelConfig, Preprocess, SSDConfig
    from detect.engine.checkpoint import save_checkpoint
    from detect.models.build import build_model

    cfg = ExperimentConfig(model=ModelConfig(name="ssd", pretrained="none", bn="train", num_classes=len(CLASSES),
                                             ssd=SSDConfig(box_classifier=box_classifier)),
                           preprocess=Preprocess(imgsz=imgsz))
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.preprocess)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():  # trained-looking BN statistics (activations keep their scale through
        for m in bns:      # every block, so each location scores differently) and confident heads
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(4):
            model.features(torch.rand(8, 3, imgsz, imgsz))
        for m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
        for h in model.heads:
            h[-1].weight.normal_(0, 2.0 / h[-1].in_channels ** 0.5)
    save_checkpoint(path, config=cfg.to_dict(), classes=CLASSES, model=model.eval().state_dict())
    return path


def write_video(path: Path, n: int, w: int = 96, h: int = 64, fps: float = 10.0) -> Path:
    """A small MP4 of moving coloured rectangles."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(synthetic_image(w, h, i))
    vw.release()
    return path


def synthetic_image(w: int = 96, h: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 200, np.uint8)
    for _ in range(3):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(img, (x, y), (x + 18, y + 18), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return img
