"""The second look: a product classifier of square crops around detections.

Why: a detector's image-level context (:mod:`detect.models.context`) tells look-alike packages
apart on a one-product photo, but on a shelf or a mosaic a window holds several product kinds
and the context tells the wrong one. A classifier that sees only the crop around one detection
cannot be misled by its neighbours, which is the retail two-stage design (a detector for where,
a classifier of crops for which product). Its class probability is fused with the detector's
score at inference (:mod:`detect.infer.second_look`).

The network is an ImageNet-pretrained backbone (its deepest map, with EfficientNet-Lite's 1x1
conv head: the 1280 channels its ImageNet classifier reads), global average pooling, dropout
and one linear layer. It takes uint8 RGB crops (Tensor[B, S, S, 3], as :mod:`detect.data.crops`
cuts them) and normalises them itself, so a caller never repeats the backbone's mean/std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from detect.models.backbones import build_backbone, pretrained_info

KIND = "crop_classifier"  # the checkpoint's "kind": a detector's checkpoint has none


@dataclass
class CropClassifierConfig:
    """What is saved with the weights and rebuilds the network."""

    backbone: str = "efficientnet_lite0"
    size: int = 128  # crop side in pixels (products of groceries photos are ~116 px)
    expand: float = 1.0  # window side / the box's longer side at inference (detect.data.crops)
    dropout: float = 0.2
    num_classes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CropClassifierConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class CropClassifier(nn.Module):
    """uint8 Tensor[B, S, S, 3] RGB crops -> Tensor[B, K] class logits."""

    def __init__(self, cfg: CropClassifierConfig, pretrained: str = "imagenet") -> None:
        super().__init__()
        if cfg.num_classes < 1:
            raise ValueError(f"a crop classifier needs at least one class, got {cfg.num_classes}")
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, pretrained, bn="train", out_strides=(32,), conv_head=True,
                                       input_size=max(cfg.size, 64))  # only where the maps are measured
        info = pretrained_info(cfg.backbone)
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).mul(255.0).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).mul(255.0).view(1, 3, 1, 1), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.backbone.channels[-1], cfg.num_classes)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float().contiguous()  # (B, S, S, 3) uint8 -> (B, 3, S, S), NCHW memory (NHWC backward is slow on CPU)
        x = (x - self.mean) / self.std
        deep = self.backbone(x)[-1]  # (B, F, S/32, S/32)
        return self.fc(self.dropout(deep.mean((2, 3))))  # (B, F) -> (B, K)
