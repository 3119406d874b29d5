"""SSD's multibox loss: anchor matching, box regression and hard-negative-mined classification.

Shorthand: B images, N default boxes (anchors), K object classes, C = K + 1 logits per anchor
(index 0 is background; object label l is logit l + 1), G_i ground-truth boxes of image i.
Matching codes per anchor: >= 0 the matched ground-truth index, -1 background, -2 ignored
(matched to a VOC ``difficult`` box: neither positive nor a mined negative).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder, SSDMatcher
from torchvision.ops import box_iou, generalized_box_iou_loss

BACKGROUND, IGNORE = -1, -2
BOX_LOSSES = ("smooth_l1", "giou")


def match_anchors(
    anchors: torch.Tensor, boxes: torch.Tensor, difficult: Optional[torch.Tensor], iou_thresh: float = 0.5
) -> torch.Tensor:
    """Match one image's anchors (Tensor[N, 4]) to its ground truth (Tensor[G, 4]) the SSD way:
    each anchor takes its best box when IoU >= ``iou_thresh``, and every box takes its best anchor.

    Returns:
        Tensor[N] int64: ground-truth index, -1 (background) or -2 (difficult: ignored).
    """
    if boxes.numel() == 0:
        return torch.full((anchors.shape[0],), BACKGROUND, dtype=torch.int64, device=anchors.device)
    matched = SSDMatcher(iou_thresh)(box_iou(boxes, anchors))  # (G, N) IoU -> (N,)
    if difficult is not None and difficult.numel() and bool(difficult.any()):
        hit = matched >= 0
        matched[hit & difficult.to(matched.device)[matched.clamp(min=0)]] = IGNORE
    return matched


def multibox_loss(
    cls_logits: torch.Tensor,
    box_regression: torch.Tensor,
    anchors: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
    box_coder: BoxCoder,
    neg_pos_ratio: int = 3,
    box_loss: str = "smooth_l1",
    iou_thresh: float = 0.5,
) -> dict[str, torch.Tensor]:
    """SSD multibox loss, normalised by the number of positive anchors in the batch (at least 1).

    Args:
        cls_logits (Tensor[B, N, C]), box_regression (Tensor[B, N, 4]): head outputs (box codes
            relative to the anchors, ``box_coder`` weights).
        anchors (Tensor[N, 4]): xyxy pixels.
        targets: per image ``boxes`` (Tensor[G, 4] xyxy pixels), ``labels`` (Tensor[G] 0-based),
            optional ``difficult`` (Tensor[G] bool).
        neg_pos_ratio: hard negatives kept per positive; an image without positives still keeps
            ``neg_pos_ratio`` negatives, so background-only images teach the model too.
        box_loss: "smooth_l1" on the encoded offsets (SSD) or "giou" on the decoded boxes.

    Returns:
        {"loss_box": Tensor[], "loss_cls": Tensor[]}
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    B, N, C = cls_logits.shape
    anchors = anchors.float()
    matched = torch.stack([match_anchors(anchors, t["boxes"].float(), t.get("difficult"), iou_thresh) for t in targets])  # (B, N)
    fg = matched >= 0

    # Gather each anchor's ground truth; padded to G_max so the whole batch is one tensor op.
    g_max = max(1, max(int(t["boxes"].shape[0]) for t in targets))
    gt_boxes = anchors.new_zeros(B, g_max, 4)
    gt_labels = torch.zeros(B, g_max, dtype=torch.int64, device=anchors.device)
    for i, t in enumerate(targets):
        g = t["boxes"].shape[0]
        gt_boxes[i, :g] = t["boxes"].float()
        gt_labels[i, :g] = t["labels"] + 1  # background is class 0
    idx = matched.clamp(min=0)
    cls_target = torch.where(fg, gt_labels.gather(1, idx), torch.zeros_like(idx))  # (B, N)
    num_pos = fg.sum(1)  # (B,)
    norm = num_pos.sum().clamp(min=1).float()

    # Box regression on positives only.
    pos_anchors = anchors.unsqueeze(0).expand(B, N, 4)[fg]  # (P, 4)
    pos_gt = gt_boxes.gather(1, idx.unsqueeze(-1).expand(B, N, 4))[fg]  # (P, 4)
    pos_pred = box_regression[fg].float()  # (P, 4)
    if box_loss == "smooth_l1":
        loss_box = F.smooth_l1_loss(pos_pred, box_coder.encode_single(pos_gt, pos_anchors), reduction="sum")
    else:
        loss_box = generalized_box_iou_loss(box_coder.decode_single(pos_pred, pos_anchors), pos_gt, reduction="sum")

    # Classification with hard negative mining (torchvision's double-argsort ranking).
    ce = F.cross_entropy(cls_logits.reshape(-1, C).float(), cls_target.reshape(-1), reduction="none").view(B, N)
    neg_loss = ce.detach().clone()
    neg_loss[matched != BACKGROUND] = -float("inf")  # positives and ignored anchors are never negatives
    rank = neg_loss.argsort(1, descending=True).argsort(1)  # (B, N): 0 for the hardest negative
    num_neg = neg_pos_ratio * num_pos.clamp(min=1)
    neg = (rank < num_neg.unsqueeze(1)) & (matched == BACKGROUND)
    loss_cls = (ce[fg].sum() + ce[neg].sum()) / norm
    return {"loss_box": loss_box / norm, "loss_cls": loss_cls}
