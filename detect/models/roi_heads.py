"""The Fast R-CNN RoI head: sampling, box heads, the multi-task loss and postprocessing.

Shape shorthand:
    B  images in the batch          P  proposals of one image
    G  ground-truth boxes           R  sampled RoIs (training) or all proposals (inference)
    K  object classes; inside this module class 0 is *background* and objects are 1..K,
       so logits have K + 1 columns. Detections leave with 0-based labels (internal - 1).

Follows Girshick, "Fast R-CNN" (ICCV 2015), section 2.3: mini-batches of R RoIs per image with
25% foreground (IoU >= 0.5 with a ground-truth box), background drawn from IoU in [0.1, 0.5)
(widened to [0, 0.5) when that range has too few, e.g. on images without objects); the
multi-task loss L = L_cls + [u >= 1] L_loc with smooth L1 (beta = 1) on class-specific,
normalised box targets (BoxCoder weights (10, 10, 5, 5), i.e. the paper's 0.1/0.2 std),
both averaged over the R sampled RoIs.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def add_gt_proposals(proposals: Tensor, gt_boxes: Tensor) -> Tensor:
    """Training only: ground-truth boxes join the proposals (Tensor[P + G, 4]), so every
    object has at least one perfect foreground RoI."""
    return torch.cat([proposals, gt_boxes.to(proposals.dtype)], dim=0)


def sample_rois_per_image(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    rois_per_image: int = 128,
    fg_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou: tuple[float, float] = (0.1, 0.5),
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick a Fast R-CNN mini-batch of RoIs for one image.

    Args:
        proposals (Tensor[P, 4]): xyxy pixels (ground truth already added, see
            :func:`add_gt_proposals`).
        gt_boxes (Tensor[G, 4]), gt_labels (Tensor[G] int64, 0-based object classes).
        rois_per_image: R, the mini-batch size per image (fewer when there are fewer proposals).
        fg_fraction: at most ``round(R * fg_fraction)`` foreground RoIs; background fills the rest.
        fg_iou: foreground when the best IoU with a ground-truth box is >= this.
        bg_iou: background when the best IoU is in [lo, hi); when fewer than needed exist there,
            the range widens to [0, hi) (the lower bound is a hard-negative heuristic only).

    Returns:
        rois (Tensor[R', 4]), labels (Tensor[R'] int64: 0 background, 1..K objects), matched
        ground-truth boxes (Tensor[R', 4], zeros for background), foreground first.
    """
    device = proposals.device
    if gt_boxes.numel():
        iou = box_iou(proposals, gt_boxes.to(proposals.dtype))  # (P, G)
        best_iou, best_gt = iou.max(dim=1)
    else:
        best_iou = proposals.new_zeros(len(proposals))
        best_gt = torch.zeros(len(proposals), dtype=torch.long, device=device)
    fg = torch.where(best_iou >= fg_iou)[0]
    bg_all = torch.where(best_iou < bg_iou[1])[0]
    bg_hard = bg_all[best_iou[bg_all] >= bg_iou[0]]

    num_fg = min(int(round(rois_per_image * fg_fraction)), fg.numel())
    fg = fg[_randperm(fg.numel(), device, generator)[:num_fg]]
    num_bg = rois_per_image - num_fg
    if bg_hard.numel() >= num_bg:
        bg = bg_hard[_randperm(bg_hard.numel(), device, generator)[:num_bg]]
    else:  # too few in [lo, hi): take them all, then fill from [0, lo)
        easy = bg_all[best_iou[bg_all] < bg_iou[0]]
        easy = easy[_randperm(easy.numel(), device, generator)[: num_bg - bg_hard.numel()]]
        bg = torch.cat([bg_hard, easy])
    keep = torch.cat([fg, bg])
    labels = torch.zeros(keep.numel(), dtype=torch.int64, device=device)
    matched = torch.zeros(keep.numel(), 4, dtype=proposals.dtype, device=device)
    if num_fg:
        labels[:num_fg] = gt_labels[best_gt[fg]].to(device) + 1  # 0-based -> 1..K
        matched[:num_fg] = gt_boxes[best_gt[fg]].to(proposals.dtype)
    return proposals[keep], labels, matched


def _randperm(n: int, device: torch.device, generator: Optional[torch.Generator]) -> Tensor:
    if generator is not None:
        return torch.randperm(n, generator=generator, device=generator.device).to(device)
    return torch.randperm(n, device=device)


def fast_rcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: Tensor, box_targets: Tensor) -> dict[str, Tensor]:
    """The multi-task loss over R sampled RoIs.

    Args:
        class_logits (Tensor[R, K + 1]), box_regression (Tensor[R, (K + 1) * 4]),
        labels (Tensor[R] int64, 0 = background), box_targets (Tensor[R, 4], encoded; only the
        foreground rows are used).

    Returns:
        {"loss_classifier": mean cross entropy, "loss_box_reg": smooth L1 (beta 1) of each
        foreground RoI's own-class box, summed and divided by R}. Zero (still connected to the
        graph) when R == 0.
    """
    r = labels.numel()
    if r == 0:
        zero = class_logits.sum() * 0 + box_regression.sum() * 0
        return {"loss_classifier": zero, "loss_box_reg": zero.clone()}
    loss_cls = F.cross_entropy(class_logits.float(), labels)
    fg = torch.where(labels > 0)[0]
    box_regression = box_regression.reshape(r, -1, 4)  # (R, (K+1)*4) -> (R, K+1, 4)
    loss_box = F.smooth_l1_loss(box_regression[fg, labels[fg]].float(), box_targets[fg].float(), beta=1.0, reduction="sum") / r
    return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}


@torch.no_grad()
def postprocess_detections(
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: list[Tensor],
    image_size: tuple[int, int],
    box_coder: BoxCoder,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    max_det: int = 300,
    min_size: float = 1e-2,
) -> list[dict[str, Tensor]]:
    """Scores and class-specific boxes per RoI -> detections per image.

    Softmax over K + 1 classes; each RoI yields one candidate box per object class (its own
    regressed box), thresholded by score, then per-class NMS and the ``max_det`` best.

    Args:
        class_logits (Tensor[sum P_i, K + 1]), box_regression (Tensor[sum P_i, (K + 1) * 4]),
        proposals: per image Tensor[P_i, 4]; image_size: (H, W) of the model input.

    Returns:
        per image {"boxes": Tensor[D, 4] xyxy input pixels, "scores": Tensor[D],
        "labels": Tensor[D] int64 0-based}.
    """
    num_classes = class_logits.shape[-1]  # K + 1
    counts = [len(p) for p in proposals]
    boxes_all = box_coder.decode(box_regression.float(), proposals)  # (sum P, K+1, 4)
    scores_all = F.softmax(class_logits.float(), dim=-1)
    results = []
    for boxes, scores in zip(boxes_all.split(counts), scores_all.split(counts)):
        boxes = clip_boxes_to_image(boxes, image_size)
        labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
        # drop the background column, flatten: (P, K, 4) -> (P*K, 4)
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        keep = torch.where(scores > score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, min_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_det]  # sorted by score
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep] - 1})
    return results


class TwoFCHead(nn.Module):
    """The paper's head: pooled RoI features -> fc -> ReLU -> fc -> ReLU (Tensor[R, fc_dim])."""

    def __init__(self, in_channels: int, roi_size: int, fc_dim: int = 1024, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels * roi_size * roi_size, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_dim = fc_dim

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (R, C, S, S) -> (R, C*S*S)
        x = self.dropout(F.relu(self.fc6(x)))
        return self.dropout(F.relu(self.fc7(x)))


class ConvHead(nn.Module):
    """A lighter head: convs on the pooled RoI grid, global average pool (Tensor[R, channels])."""

    def __init__(self, in_channels: int, channels: int = 256, num_convs: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x).mean(dim=(2, 3))  # (R, C, S, S) -> (R, C)


class FastRCNNPredictor(nn.Module):
    """Class scores (K + 1, background at 0) and class-specific boxes ((K + 1) * 4); with
    ``cls_extra_dim``, the class scores also read a second per-RoI vector (Tensor[R, extra])."""

    def __init__(self, in_dim: int, num_classes: int, cls_extra_dim: int = 0) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_dim + cls_extra_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, (num_classes + 1) * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor, cls_extra: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        cls_in = x if cls_extra is None else torch.cat([x, cls_extra], dim=1)  # (R, D + extra)
        return self.cls_score(cls_in), self.bbox_pred(x)
