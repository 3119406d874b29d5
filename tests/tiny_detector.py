"""Tiny stand-ins for the trainer tests: a detector that honours the model contract and an
in-memory dataset, both seeded and small enough for a 2-core CI machine.

``TinyDetector`` predicts one box and class per image from pooled conv features. Its loss is a
mean over images (so a 2-process DDP step with B/2 images each equals a 1-process step with
B images). It has BN (frozen or training), biases and conv/linear weights, so the weight-decay
grouping and the EMA's buffers are exercised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detect.data.dataset import collate  # noqa: F401  (the trainer's collate; tests import it from here)
from detect.engine.datasets import TrainData


class TinyDetector(nn.Module):
    def __init__(self, num_classes: int, imgsz: int, bn: str = "frozen", width: int = 8):
        super().__init__()
        norm = FrozenBatchNorm2d if bn == "frozen" else nn.BatchNorm2d
        self.imgsz = imgsz
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), norm(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.cls = nn.Linear(width, num_classes)
        self.box = nn.Linear(width, 4)
        self.max_det = 1

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        f = self.body(images).flatten(1)  # (B, C, 1, 1) -> (B, C)
        logits, boxes = self.cls(f), torch.sigmoid(self.box(f)) * self.imgsz
        if self.training:
            labels = torch.stack([t["labels"][0] for t in targets])
            gt = torch.stack([t["boxes"][0] for t in targets])
            return {"loss_cls": F.cross_entropy(logits, labels),
                    "loss_box": F.smooth_l1_loss(boxes / self.imgsz, gt / self.imgsz)}
        scores, labels = logits.softmax(1).max(1)
        return [{"boxes": b[None], "scores": s[None], "labels": l[None]} for b, s, l in zip(boxes, scores, labels)]


class TinyDataset(torch.utils.data.Dataset):
    """``n`` images of ``imgsz`` px: a bright rectangle of class ``i % num_classes`` on noise.
    ``augment`` adds noise drawn from torch's global RNG (seeded per sample by the trainer)."""

    def __init__(self, n: int = 16, imgsz: int = 32, num_classes: int = 3, augment: bool = True, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.imgsz, self.augment = imgsz, augment
        self.images, self.targets = [], []
        for i in range(n):
            img = torch.rand(3, imgsz, imgsz, generator=g) * 0.2
            x0, y0 = (torch.randint(0, imgsz // 2, (2,), generator=g)).tolist()
            w, h = (torch.randint(4, imgsz // 2, (2,), generator=g)).tolist()
            label = i % num_classes
            img[label, y0 : y0 + h, x0 : x0 + w] = 1.0
            self.images.append(img)
            self.targets.append({
                "boxes": torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32),
                "labels": torch.tensor([label]), "difficult": torch.zeros(1, dtype=torch.bool),
                "image_id": i, "orig_size": torch.tensor([imgsz, imgsz]),
            })

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.augment:
            img = (img + 0.05 * torch.randn_like(img)).clamp(0, 1)
        return img, dict(self.targets[i])


def tiny_data(n: int = 16, imgsz: int = 32, num_classes: int = 3, val: bool = True, augment: bool = True):
    """A ``data_fn`` for :func:`detect.engine.train.train`."""

    def data_fn(cfg) -> TrainData:
        return TrainData([f"c{i}" for i in range(num_classes)], TinyDataset(n, imgsz, num_classes, augment),
                         TinyDataset(8, imgsz, num_classes, False, seed=1) if val else None, collate)

    return data_fn


def tiny_model(cfg) -> TinyDetector:
    """A ``model_fn``: builds from ``cfg.model.num_classes``, ``cfg.model.bn`` and ``cfg.preprocess.imgsz``."""
    return TinyDetector(cfg.model.num_classes, cfg.preprocess.imgsz, cfg.model.bn)


def tiny_eval(model, loader, classes, device, max_det) -> dict:
    """An ``eval_fn``: fraction of images whose top class is right, reported as voc_ap50."""
    model.eval()
    right = total = 0
    with torch.no_grad():
        for images, targets in loader:
            for det, t in zip(model(images.to(device)), targets):
                right += int(det["labels"][0].item() == t["labels"][0].item())
                total += 1
    return {"voc_ap50": right / max(total, 1), "coco_ap": 0.5 * right / max(total, 1)}


def tiny_config(out, **train):
    """An ExperimentConfig for the tiny pieces: CPU, no workers, no AMP, EMA on."""
    from detect.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.preprocess.imgsz = 32
    cfg.model.bn = "frozen"
    cfg.data.workers = 0
    cfg.train.out = str(out)
    cfg.train.device = "cpu"
    cfg.train.batch = 4
    cfg.train.epochs = 2
    cfg.train.lr = 0.05
    cfg.train.warmup_epochs = 0.5
    cfg.train.log_every = 2
    cfg.train.ema_decay = 0.9
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    """Two state dicts hold the same keys and tensors (within ``atol``)."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")


class NaNOnImage(TinyDetector):
    """Returns a NaN loss for any batch holding image 5, an inf one for image 9."""

    def forward(self, images, targets=None):
        out = super().forward(images, targets)
        if self.training:
            ids = {t["image_id"] for t in targets}
            if 5 in ids:
                out["loss_cls"] = out["loss_cls"] * float("nan")
            if 9 in ids:
                out["loss_box"] = out["loss_box"] + float("inf")
        return out
