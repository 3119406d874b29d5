"""Pure box math on tensors. Every box is float xyxy in 0-based pixels (see detect.structures).

torchvision.ops already provides IoU, NMS, clipping and format conversion; this module
re-exports them so the code base has one place to import box math from.
"""

from __future__ import annotations

from torchvision.ops import batched_nms, box_area, box_convert, box_iou, clip_boxes_to_image, nms, remove_small_boxes

__all__ = [
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "nms",
    "remove_small_boxes",
]

