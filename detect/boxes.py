"""Pure box math on tensors. Every box is float xyxy in 0-based pixels (see detect.structures).

torchvision.ops already provides IoU, NMS and format conversion; this module only adds what
it lacks and re-exports the rest so the code base has one place to import box math from.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_area, box_convert, box_iou, clip_boxes_to_image, nms, remove_small_boxes

__all__ = [
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "nms",
    "remove_small_boxes",
    "scale_boxes",
]


def scale_boxes(boxes: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """Map boxes (Tensor[..., 4], xyxy) from an image of size ``from_hw`` to one of size ``to_hw``
    when the image was resized without keeping the aspect ratio (plain stretch)."""
    sy = to_hw[0] / from_hw[0]
    sx = to_hw[1] / from_hw[1]
    scale = boxes.new_tensor([sx, sy, sx, sy])
    return boxes * scale
