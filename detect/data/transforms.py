"""Albumentations pipelines for detection: train (crop, flip, colour) and eval (resize only).

Both end with a plain resize (stretch) to ``imgsz`` x ``imgsz``: the project's input
convention (see docs/ARCHITECTURE.md). Boxes travel as albumentations ``pascal_voc``, which
is exactly our format: float ``[x1, y1, x2, y2]`` in pixels, 0-based, x2/y2 the exclusive
edge (a box may end at x2 == width). Boxes are clipped to the image before any check, so a
box touching the border is never rejected.

Call a pipeline as ``t(image=img, bboxes=boxes, index=np.arange(N))``: the ``index`` label
field carries each surviving box's position in the input, so a box dropped by a crop (less
than ``min_visibility`` of its area left) drops its label and flags too
(see :class:`detect.data.dataset.DetectionDataset`).
"""

from __future__ import annotations

import albumentations as A
import cv2

LABEL_FIELDS = ["index"]


def bbox_params(min_visibility: float = 0.0) -> A.BboxParams:
    """``pascal_voc`` boxes, clipped to the image, degenerate ones dropped, and boxes that keep
    less than ``min_visibility`` of their area after a crop dropped."""
    return A.BboxParams(format="pascal_voc", label_fields=LABEL_FIELDS, min_visibility=min_visibility,
                        clip=True, filter_invalid_bboxes=True)


def eval_transform(imgsz: int) -> A.Compose:
    """Resize (stretch) to ``imgsz`` x ``imgsz``; boxes scale with the image."""
    return A.Compose([A.Resize(imgsz, imgsz, interpolation=cv2.INTER_LINEAR)], bbox_params=bbox_params(0.0))


def train_transform(imgsz: int, strength: float = 1.0, min_visibility: float = 0.3) -> A.Compose:
    """Training augmentation scaled by ``strength`` (0: same as :func:`eval_transform`).

    - random crop (probability ``0.75 * strength``, capped at 0.9), one of:
      a crop that keeps every box (``RandomSizedBBoxSafeCrop``: zooms in on the products) or a
      random-area crop (``RandomResizedCrop``, area from ``1 - 0.7 * strength`` to all of it)
      that may cut boxes: those keeping under ``min_visibility`` of their area are dropped;
    - horizontal flip (p 0.5);
    - colour jitter (brightness, contrast, saturation ``0.3 * strength``, hue ``0.02 * strength``:
      small, brand colours carry class information);
    - resize (stretch) to ``imgsz`` x ``imgsz``.
    """
    if strength <= 0:
        return eval_transform(imgsz)
    s = float(strength)
    crop = A.OneOf([
        A.RandomSizedBBoxSafeCrop(imgsz, imgsz, erosion_rate=0.0),
        A.RandomResizedCrop(size=(imgsz, imgsz), scale=(max(0.1, 1.0 - 0.7 * s), 1.0), ratio=(0.6, 1.6)),
    ], p=min(0.9, 0.75 * s))
    j = 0.3 * s
    return A.Compose([
        crop,
        A.Resize(imgsz, imgsz, interpolation=cv2.INTER_LINEAR),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, 0.02 * s), p=min(1.0, 0.8 * s)),
    ], bbox_params=bbox_params(min_visibility))
