"""Pure box math on tensors. Every box is float xyxy in 0-based pixels (see detect.structures).

torchvision.ops already provides IoU, NMS, clipping and format conversion; this module
re-exports them so the code base has one place to import box math from, and adds the box
decoding that every SSD path (training loss, eval, export, ONNX Runtime) shares.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import batched_nms, box_area, box_convert, box_iou, clip_boxes_to_image, nms, remove_small_boxes

__all__ = [
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "decode_boxes",
    "nms",
    "remove_small_boxes",
]

DEFAULT_DECODE_CLIP = math.log(1000.0 / 16)  # torchvision's: no box grows past 1000/16 of its anchor


def decode_boxes(
    codes: torch.Tensor, anchors: torch.Tensor, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = DEFAULT_DECODE_CLIP,
) -> torch.Tensor:
    """Box codes relative to anchors -> boxes: torchvision's ``BoxCoder.decode_single`` for any
    leading shape, and exportable to ONNX (no data-dependent shapes).

    Args:
        codes (Tensor[..., N, 4]): (dx, dy, dw, dh) scaled by ``weights``.
        anchors (Tensor[N, 4]): xyxy pixels (broadcast over the leading dimensions).
        clip: largest log scale factor of the width and height.

    Returns:
        Tensor[..., N, 4]: xyxy pixels, the dtype of ``codes``.
    """
    anchors = anchors.to(codes.dtype)
    wx, wy, ww, wh = weights
    aw = anchors[..., 2] - anchors[..., 0]  # (N,)
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    dx, dy = codes[..., 0] / wx, codes[..., 1] / wy  # (..., N)
    dw = (codes[..., 2] / ww).clamp(max=clip)
    dh = (codes[..., 3] / wh).clamp(max=clip)
    cx, cy = dx * aw + ax, dy * ah + ay
    w, h = dw.exp() * aw, dh.exp() * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)  # 4 x (..., N) -> (..., N, 4)
