"""Image-level context for a detector's class scores.

Shorthand: B images, K object classes, C = K + 1 logits (column 0 = background), F channels of
the deepest backbone map (with EfficientNet-Lite's conv head, the 1280 its ImageNet classifier
reads).

The deepest map averaged over the whole image gives one logit vector per image (a linear layer,
zero at the start so a new detector begins exactly as it would without it), and a term derived
from it is added to the class logits of every box of that image: what a product is, is easier
to tell knowing what the shelf or photo holds. Two ways (``mode``):

- ``add``: the K + 1 context logits themselves. Simple, but the background column moves too, so
  an image-level loss that learns "this image holds class k" also pushes every box of the image
  away from background.
- ``prior``: a class prior. The context's object columns give P(class | image) by softmax, and
  ``scale * log(K * P(class | image))`` is added to the object logits of each box (0 for a
  uniform prior: at the start, or for an image the context cannot tell). The background logit
  is untouched, so the prior only moves probability between object classes: whether a box is
  an object is the box's own decision. ``scale`` is learned (from 1).

Trained through the detection losses and, with ``context_loss``, by :func:`image_label_loss`
against the classes the image's boxes carry.

Where it is pooled (``pool``): ``image``, the whole input, is right when a photo holds one
product kind; on a shelf, a mosaic or a slice that cuts across several kinds it adds the same mix
to every box. ``box`` pools over each box's own area instead (:meth:`ImageContext.at_boxes`):
the linear layer is applied to every cell of the map and its logits are averaged over the box's
cells (:func:`~detect.models.roi_mean.roi_mean_weights`). The layer is linear and the weights of
a box sum to one, so the box's logits are the layer applied to the box's mean feature, and a box
covering the whole map gets exactly the image's logits: the same trained layer serves both, and
the image-level loss is unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


CONTEXT_MODES = ("none", "add", "prior")  # config ``auto``: the detector's row in detect.models.specs
CONTEXT_POOLS = ("image", "box")


class ImageContext(nn.Module):
    """Tensor[B, F, h, w] -> Tensor[B, C] logits (global average pool, then a linear layer);
    :meth:`bias` turns them into the term added to each box's class logits."""

    def __init__(self, channels: int, num_classes: int, mode: str = "prior") -> None:
        super().__init__()
        if mode not in CONTEXT_MODES[1:]:
            raise ValueError(f"context mode must be one of {CONTEXT_MODES[1:]}, got {mode!r}")
        self.mode = mode
        self.fc = nn.Linear(channels, num_classes + 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        if mode == "prior":
            self.scale = nn.Parameter(torch.ones(()))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(feature.mean((2, 3)))  # (B, F, h, w) -> (B, F) -> (B, C)

    def at_boxes(self, feature: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Context logits pooled over each box's area instead of the whole map: ``feature``
        (Tensor[B, F, h, w]) and the boxes' cell weights (Tensor[N, h*w] shared by the batch, or
        Tensor[B, N, h*w]; rows sum to 1, :func:`~detect.models.roi_mean.roi_mean_weights`) ->
        Tensor[B, N, C]."""
        cells = self.fc(feature.flatten(2).transpose(1, 2))  # (B, F, h, w) -> (B, h*w, F) -> (B, h*w, C)
        return weights.to(cells.dtype) @ cells  # (N or B x N, h*w) @ (B, h*w, C) -> (B, N, C)

    def bias(self, logits: torch.Tensor) -> torch.Tensor:
        """Context logits (Tensor[..., C]: per image or per box) -> the term added to the class
        logits of the boxes they belong to (same shape)."""
        if self.mode == "add":
            return logits
        k = logits.shape[-1] - 1
        prior = F.log_softmax(logits[..., 1:].float(), dim=-1) + math.log(k)  # (..., K): log(K * P(class | image))
        return F.pad(self.scale * prior, (1, 0)).to(logits.dtype)  # background column: 0

    def loss(self, logits: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """:func:`image_label_loss` over all C columns (``add``) or over the object classes of the
        images that have boxes (``prior``: the prior says nothing about background)."""
        if self.mode == "add":
            return image_label_loss(logits, targets)
        has = [i for i, t in enumerate(targets) if t["labels"].numel()]
        if not has:
            return logits.sum() * 0.0
        return image_label_loss(F.pad(logits[has, 1:], (1, 0), value=-1e4), [targets[i] for i in has])


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
