"""Image-level context for a detector's class scores.

Shorthand: B images, K object classes, C = K + 1 logits (column 0 = background), F channels of
the deepest backbone map (with EfficientNet-Lite's conv head, the 1280 its ImageNet classifier
reads).

The deepest map averaged over the whole image gives one logit vector per image (a linear layer,
zero at the start so a new detector begins exactly as it would without it), added to the class
logits of every box of that image: what a product is, is easier to tell knowing what the
shelf or photo holds. Trained through the detection losses and, with ``context_loss``, by
:func:`image_label_loss` against the classes the image's boxes carry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImageContext(nn.Module):
    """Tensor[B, F, h, w] -> Tensor[B, C] logits (global average pool, then a linear layer)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes + 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(feature.mean((2, 3)))  # (B, F, h, w) -> (B, F) -> (B, C)


def image_label_loss(logits: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Cross entropy of image-level logits (Tensor[B, C], column 0 = background) against the
    classes present among each image's boxes, as a distribution: uniform over the classes
    present (one class: plain cross entropy), background for an image without boxes. Softmax
    with such soft targets learns multi-label image classes better than per-class BCE (Mahajan
    et al., "Exploring the Limits of Weakly Supervised Pretraining", 2018), and its gradient is on
    the scale of the detection losses'. Mean over the B images."""
    B, C = logits.shape
    present = torch.zeros(B, C, device=logits.device)
    for i, t in enumerate(targets):
        labels = t["labels"].to(logits.device).long().reshape(-1)
        present[i, labels + 1 if labels.numel() else torch.zeros(1, dtype=torch.long, device=logits.device)] = 1.0
    target = present / present.sum(1, keepdim=True)  # (B, C), rows sum to 1
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
