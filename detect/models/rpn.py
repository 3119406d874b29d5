"""Learned proposals: torchvision's Region Proposal Network on one backbone feature map.

Faster R-CNN's RPN (Ren et al., 2015) turns Fast R-CNN into one network whose proposals cost a
3x3 conv instead of seconds of selective search per image, so video inference is not bound to
the CPU. This module only sizes torchvision's pieces (``AnchorGenerator``, ``RPNHead``,
``RegionProposalNetwork``) for this project: one feature map, anchors relative to the input
size, and training/inference proposal counts suited to small inputs.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

# anchor sides as fractions of the input side: 320 px -> 32, 64, 128, 256
DEFAULT_ANCHOR_FRACTIONS = (0.1, 0.2, 0.4, 0.8)
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def build_rpn(
    in_channels: int,
    imgsz: int,
    anchor_fractions: Optional[Sequence[float]] = None,
    aspect_ratios: Optional[Sequence[float]] = None,
    pre_nms_top_n: tuple[int, int] = (1000, 600),
    post_nms_top_n: tuple[int, int] = (500, 300),
    nms_thresh: float = 0.7,
    batch_size_per_image: int = 256,
) -> RegionProposalNetwork:
    """An RPN for one feature map with ``in_channels`` channels.

    Args:
        anchor_fractions: anchor sides as fractions of ``imgsz`` (default 0.1, 0.2, 0.4, 0.8).
        aspect_ratios: anchor height / width ratios (default 0.5, 1, 2).
        pre_nms_top_n, post_nms_top_n: (training, inference) proposal counts per image. Sized
            for one feature map of a few thousand anchors and images of a few products: the
            torchvision defaults (2000 before and after NMS) made the RPN's NMS 17% of a CPU
            training step at 224 px, and the RoI head's cost at inference scales with the count.
    """
    sizes = tuple(max(1.0, float(f) * imgsz) for f in (anchor_fractions or DEFAULT_ANCHOR_FRACTIONS))
    ratios = tuple(float(r) for r in (aspect_ratios or DEFAULT_ASPECT_RATIOS))
    anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
    head = RPNHead(in_channels, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchors,
        head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n={"training": pre_nms_top_n[0], "testing": pre_nms_top_n[1]},
        post_nms_top_n={"training": post_nms_top_n[0], "testing": post_nms_top_n[1]},
        nms_thresh=nms_thresh,
    )


def run_rpn(
    rpn: RegionProposalNetwork, images: Tensor, feature: Tensor, targets: Optional[list[dict[str, Tensor]]] = None
) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Proposals (per image Tensor[P_i, 4], xyxy input pixels, detached) and, in training, the
    RPN losses ``loss_objectness`` and ``loss_rpn_box_reg``.

    Args:
        images (Tensor[B, 3, H, W]): the batch (only its size is used), feature (Tensor[B, C, h, w]).
        targets: per image {"boxes": Tensor[G, 4]} (training only; G may be 0).
    """
    h, w = images.shape[-2:]
    image_list = ImageList(images, [(int(h), int(w))] * images.shape[0])
    rpn_targets = None
    if rpn.training:
        if targets is None:
            raise ValueError("the RPN needs targets with 'boxes' in training")
        rpn_targets = [{"boxes": t["boxes"].to(feature.device).float()} for t in targets]
    boxes, losses = rpn(image_list, {"0": feature}, rpn_targets)
    return boxes, losses
