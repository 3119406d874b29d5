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

from detect.boxes import decode_boxes

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


def match_anchors_batched(anchors: torch.Tensor, targets: list[dict[str, torch.Tensor]], iou_thresh: float = 0.5) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor
]:
    """:func:`match_anchors` for a whole batch in a few tensor ops, with no host synchronisation
    (the per-image loop costs a sync and ~10 kernel launches per image on a GPU).

    Returns:
        matched (Tensor[B, N] int64): as :func:`match_anchors`, per image.
        gt_boxes (Tensor[B, G, 4]), gt_labels (Tensor[B, G] int64, 0 = background): the ground truth
            padded to G = max boxes per image (at least 1); labels shifted by +1.
    """
    B, N, dev = len(targets), anchors.shape[0], anchors.device
    counts = [int(t["boxes"].shape[0]) for t in targets]  # shapes: known on the host, no sync
    G = max(1, max(counts, default=0))
    gt_boxes = anchors.new_zeros(B, G, 4)
    gt_labels = torch.zeros(B, G, dtype=torch.int64, device=dev)
    difficult = torch.zeros(B, G, dtype=torch.bool, device=dev)
    for i, (t, g) in enumerate(zip(targets, counts)):  # copies only, no sync
        if g:
            gt_boxes[i, :g] = t["boxes"].float()
            gt_labels[i, :g] = t["labels"] + 1  # background is class 0
            if t.get("difficult") is not None and t["difficult"].numel():
                difficult[i, :g] = t["difficult"].to(dev, torch.bool)
    valid = torch.arange(G, device=dev).unsqueeze(0) < torch.tensor(counts, device=dev).unsqueeze(1)  # (B, G)
    # IoU of every ground-truth box with every anchor; padding rows get -1 so they never win.
    iou = box_iou(gt_boxes.reshape(-1, 4), anchors).view(B, G, N)  # (B*G, N) -> (B, G, N)
    iou = torch.where(valid.unsqueeze(-1), iou, iou.new_full((), -1.0))
    best_iou, matched = iou.max(dim=1)  # (B, N): each anchor's best box
    matched = torch.where(best_iou >= iou_thresh, matched, matched.new_full((), BACKGROUND))
    # Every real box also takes its best anchor (SSDMatcher); padding rows scatter into a spare column.
    best_anchor = torch.where(valid, iou.argmax(dim=2), torch.full_like(valid, N, dtype=torch.int64))  # (B, G)
    matched = torch.cat([matched, matched.new_full((B, 1), BACKGROUND)], dim=1)
    matched.scatter_(1, best_anchor, torch.arange(G, device=dev).expand(B, G).contiguous())
    matched = matched[:, :N]
    hit_difficult = (matched >= 0) & difficult.gather(1, matched.clamp(min=0))
    matched = torch.where(hit_difficult, matched.new_full((), IGNORE), matched)
    return matched, gt_boxes, gt_labels


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
    matched, gt_boxes, gt_labels = match_anchors_batched(anchors, targets, iou_thresh)  # (B, N), (B, G, 4), (B, G)
    fg = matched >= 0
    idx = matched.clamp(min=0)
    cls_target = torch.where(fg, gt_labels.gather(1, idx), torch.zeros_like(idx))  # (B, N)
    num_pos = fg.sum(1)  # (B,)
    norm = num_pos.sum().clamp(min=1).float()

    # Box regression on positives only, as masked sums (boolean indexing would sync the host).
    # Non-positive anchors regress onto themselves, so their (masked) terms stay finite.
    anchors_b = anchors.unsqueeze(0).expand(B, N, 4)
    gt_b = gt_boxes.gather(1, idx.unsqueeze(-1).expand(B, N, 4))  # (B, G, 4) -> (B, N, 4)
    gt_b = torch.where(fg.unsqueeze(-1), gt_b, anchors_b)
    pred = box_regression.float().reshape(-1, 4)  # (B, N, 4) -> (B*N, 4)
    if box_loss == "smooth_l1":
        target = box_coder.encode_single(gt_b.reshape(-1, 4), anchors_b.reshape(-1, 4))
        per_anchor = F.smooth_l1_loss(pred, target, reduction="none").sum(-1)  # (B*N,)
    else:
        decoded = decode_boxes(pred, anchors_b.reshape(-1, 4), box_coder.weights, box_coder.bbox_xform_clip)
        per_anchor = generalized_box_iou_loss(decoded, gt_b.reshape(-1, 4), reduction="none")
    loss_box = (per_anchor.view(B, N) * fg).sum()

    # Classification with hard negative mining (torchvision's double-argsort ranking).
    ce = F.cross_entropy(cls_logits.reshape(-1, C).float(), cls_target.reshape(-1), reduction="none").view(B, N)
    neg_loss = ce.detach().clone()
    neg_loss.masked_fill_(matched != BACKGROUND, -float("inf"))  # positives and ignored anchors are never negatives
    rank = neg_loss.argsort(1, descending=True).argsort(1)  # (B, N): 0 for the hardest negative
    num_neg = neg_pos_ratio * num_pos.clamp(min=1)
    neg = (rank < num_neg.unsqueeze(1)) & (matched == BACKGROUND)
    loss_cls = ((ce * fg).sum() + (ce * neg).sum()) / norm
    return {"loss_box": loss_box / norm, "loss_cls": loss_cls}

