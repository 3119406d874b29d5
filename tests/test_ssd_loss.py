"""The SSD loss (detect/models/ssd_loss.py): the batched matcher and multibox loss equal a
per-image, boolean-indexing reference."""

from __future__ import annotations

import torch

from detect.models.ssd_loss import match_anchors


def _reference_multibox_loss(cls_logits, box_regression, anchors, targets, box_coder, neg_pos_ratio=3):
    """The per-image, boolean-indexing formulation of the SSD loss (the batched one must equal it)."""
    import torch.nn.functional as F

    B, N, C = cls_logits.shape
    matched = torch.stack([match_anchors(anchors, t["boxes"], t.get("difficult")) for t in targets])
    fg = matched >= 0
    cls_target = torch.zeros(B, N, dtype=torch.int64)
    box_sum = torch.zeros(())
    for i, t in enumerate(targets):
        m = matched[i]
        cls_target[i, fg[i]] = t["labels"][m[fg[i]]] + 1
        if fg[i].any():
            enc = box_coder.encode_single(t["boxes"][m[fg[i]]], anchors[fg[i]])
            box_sum = box_sum + F.smooth_l1_loss(box_regression[i][fg[i]], enc, reduction="sum")
    norm = fg.sum().clamp(min=1).float()
    ce = F.cross_entropy(cls_logits.reshape(-1, C), cls_target.reshape(-1), reduction="none").view(B, N)
    cls_sum = ce[fg].sum()
    for i in range(B):
        bg = (matched[i] == -1).nonzero().flatten()
        k = min(len(bg), neg_pos_ratio * max(1, int(fg[i].sum())))
        cls_sum = cls_sum + ce[i, bg].topk(k).values.sum()
    return {"loss_box": box_sum / norm, "loss_cls": cls_sum / norm}


def test_batched_loss_equals_per_image_reference():
    from torchvision.models.detection._utils import BoxCoder

    from detect.models.ssd_loss import match_anchors_batched, multibox_loss

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 80
    anchors = torch.cat([xy, xy + 8 + torch.rand(300, 2, generator=g) * 30], 1)
    targets = []
    for n in (3, 0, 1, 5):  # includes an image without boxes
        p = torch.rand(n, 2, generator=g) * 70
        boxes = torch.cat([p, p + 10 + torch.rand(n, 2, generator=g) * 25], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, 4, (n,), generator=g),
                        "difficult": torch.rand(n, generator=g) < 0.3})
    matched, _, _ = match_anchors_batched(anchors, targets)  # the batched matcher is the per-image one
    for i, t in enumerate(targets):
        assert matched[i].tolist() == match_anchors(anchors, t["boxes"], t["difficult"]).tolist()
    logits = torch.randn(4, 300, 5, generator=g)
    reg = torch.randn(4, 300, 4, generator=g) * 0.5
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    got = multibox_loss(logits, reg, anchors, targets, coder)
    want = _reference_multibox_loss(logits, reg, anchors, targets, coder)
    for k in ("loss_box", "loss_cls"):
        assert torch.isfinite(got[k]) and torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-6), (k, got[k], want[k])
