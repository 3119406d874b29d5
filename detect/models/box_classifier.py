"""A second look at the SSD's best boxes: each box's own features -> its object class.

Shorthand: B images, M boxes per image, K object classes, F16 / F32 channels of the stride-16 /
stride-32 backbone maps, b x b bins per box.

The SSD's anchor head reads a product's class at one anchor position with the receptive field
of its cell; on a window that holds several product kinds that field mixes them. This head pools
each box's own area: the stride-16 map averaged over b x b bins of the box (its layout) and the
stride-32 map averaged over the whole box (what an ImageNet classifier reads, the Fast R-CNN's
``semantic`` vector), then two linear layers give K object-class logits. Every pooling is exact
mean pooling as a matrix product (:func:`~detect.models.roi_mean.roi_mean_weights`): no RoIAlign,
so export and INT8 see only matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from detect.models.roi_mean import roi_mean_weights


def bin_boxes(boxes: Tensor, bins: int) -> Tensor:
    """Tensor[..., 4] xyxy -> Tensor[..., bins * bins, 4]: the box cut into a bins x bins grid (row major)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    t = torch.arange(bins + 1, device=boxes.device, dtype=boxes.dtype) / bins  # (bins + 1,)
    xs = x0[..., None] + (x1 - x0)[..., None] * t  # (..., bins + 1)
    ys = y0[..., None] + (y1 - y0)[..., None] * t
    gx0, gx1 = xs[..., None, :-1], xs[..., None, 1:]  # (..., 1, bins)
    gy0, gy1 = ys[..., :-1, None], ys[..., 1:, None]  # (..., bins, 1)
    shape = torch.broadcast_shapes(gx0.shape, gy0.shape)
    out = torch.stack([gx0.expand(shape), gy0.expand(shape), gx1.expand(shape), gy1.expand(shape)], -1)  # (..., bins, bins, 4)
    return out.flatten(-3, -2)  # (..., bins * bins, 4)


def pool_boxes(feature: Tensor, boxes: Tensor, stride: float) -> Tensor:
    """Mean of ``feature`` (Tensor[B, F, h, w]) over boxes Tensor[B, R, 4] xyxy input pixels ->
    Tensor[B, R, F] (:func:`~detect.models.roi_mean.roi_mean_weights`, batched)."""
    weights = roi_mean_weights(boxes.to(feature.dtype), tuple(feature.shape[-2:]), stride)  # (B, R, h*w)
    return weights @ feature.flatten(2).transpose(1, 2)  # (B, R, h*w) @ (B, h*w, F) -> (B, R, F)


class BoxClassifier(nn.Module):
    """Maps Tensor[B, F16, h, w] and Tensor[B, F32, h', w'] and boxes Tensor[B, M, 4] (xyxy input
    pixels) -> Tensor[B, M, K] object-class logits: the box's stride-16 features in ``bins`` x
    ``bins`` bins and its stride-32 mean, layer-normed, through two linear layers."""

    def __init__(self, mid_channels: int, deep_channels: int, num_classes: int, bins: int = 3, hidden: int = 512) -> None:
        super().__init__()
        self.bins = bins
        in_dim = mid_channels * bins * bins + deep_channels
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, mid: Tensor, deep: Tensor, boxes: Tensor, input_side: float) -> Tensor:
        b, m = boxes.shape[:2]
        sub = bin_boxes(boxes, self.bins).reshape(b, m * self.bins * self.bins, 4)  # (B, M, b*b, 4) -> (B, M*b*b, 4)
        layout = pool_boxes(mid, sub, input_side / mid.shape[-1]).reshape(b, m, -1)  # (B, M*b*b, F16) -> (B, M, b*b*F16)
        whole = pool_boxes(deep, boxes, input_side / deep.shape[-1])  # (B, M, F32)
        x = self.norm(torch.cat([layout, whole], -1).float())  # (B, M, b*b*F16 + F32)
        return self.fc2(self.act(self.fc1(x)))  # (B, M, K)

    def rescore(self, mid: Tensor, deep: Tensor, boxes: Tensor, scores: Tensor, input_side: float, topk: int,
                weight: float = 1.0) -> Tensor:
        """The SSD's decoded scores (Tensor[B, N, K], background dropped: each row sums to its
        box's objectness, 1 - P(background)) with the class of its ``topk`` most object-like
        boxes per image read again: objectness times a class distribution, this head's softmax
        (``weight`` 1) or its log-probabilities times ``weight`` plus the anchor head's times
        ``1 - weight``, renormalised (a weighted geometric mean). Every other box's row becomes
        zero (its objectness is below theirs). Shapes stay static (TopK, Gather, ScatterElements
        in ONNX)."""
        b, n, k = scores.shape
        m = min(topk, n)
        objectness, top = scores.sum(-1).topk(m, dim=1)  # (B, N) -> (B, M), (B, M)
        top_boxes = boxes.gather(1, top.unsqueeze(-1).expand(b, m, 4))  # (B, M, 4)
        classes = self(mid, deep, top_boxes, input_side).float().log_softmax(-1)  # (B, M, K)
        if weight < 1.0:
            anchor = scores.gather(1, top.unsqueeze(-1).expand(b, m, k)) / objectness.unsqueeze(-1).clamp(min=1e-12)
            classes = (weight * classes + (1.0 - weight) * anchor.clamp(min=1e-12).log()).log_softmax(-1)
        out = torch.zeros_like(scores)
        return out.scatter(1, top.unsqueeze(-1).expand(b, m, k), objectness.unsqueeze(-1) * classes.exp())

    def loss(self, mid: Tensor, deep: Tensor, decoded: Tensor, targets: list[dict[str, Tensor]], input_side: float) -> Tensor:
        """Cross-entropy over the object classes of the training RoIs (:func:`sample_box_rois`
        from the SSD's decoded boxes, Tensor[B, N, 4]), averaged over them (0 without any)."""
        rois, labels, valid = sample_box_rois(decoded.detach(), targets)
        logits = self(mid, deep, rois, input_side)  # (B, R, K)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")  # (B*R,)
        return (ce * valid.reshape(-1)).sum() / valid.sum().clamp(min=1)


def sample_box_rois(decoded: Tensor, targets: list[dict[str, Tensor]], per_image: int = 32,
                    iou: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Training RoIs: each image's ground-truth boxes and up to ``per_image`` of the SSD's own
    decoded boxes (Tensor[B, N, 4], detached) that overlap one by >= ``iou``, labelled with it.

    Returns rois Tensor[B, R, 4], labels Tensor[B, R] int64 (0-based), valid Tensor[B, R] bool.
    """
    rois, labels = [], []
    for i, t in enumerate(targets):
        gt = t["boxes"].to(decoded.device, torch.float32).reshape(-1, 4)
        lab = t["labels"].to(decoded.device).reshape(-1)
        if gt.shape[0] == 0:
            rois.append(gt)
            labels.append(lab)
            continue
        ov = box_iou(gt, decoded[i])  # (G, N)
        best, arg = ov.max(0)
        cand = torch.where(best >= iou)[0]
        keep = cand[torch.randperm(cand.numel(), device=cand.device)[:per_image]]
        rois.append(torch.cat([gt, decoded[i, keep]]))
        labels.append(torch.cat([lab, lab[arg[keep]]]))
    r = max(1, max(len(x) for x in rois))
    out = decoded.new_zeros(len(rois), r, 4)
    out[..., 2:] = 1.0
    lab_out = torch.zeros(len(rois), r, dtype=torch.int64, device=decoded.device)
    valid = torch.zeros(len(rois), r, dtype=torch.bool, device=decoded.device)
    for i, (x, l) in enumerate(zip(rois, labels)):
        out[i, :len(x)] = x
        lab_out[i, :len(x)] = l
        valid[i, :len(x)] = True
    return out, lab_out, valid
