"""roi_mean_pool against a brute-force reference: the mean of the map upsampled to pixels."""

from __future__ import annotations

import pytest
import torch

from detect.models.roi_mean import roi_mean_pool, roi_mean_weights


def _reference(feature: torch.Tensor, box: list[float], stride: int) -> torch.Tensor:
    """Upsample the map to pixels (each cell -> stride x stride), average over the box's pixels
    (integer boxes, so every pixel is in or out)."""
    up = feature.repeat_interleave(stride, 1).repeat_interleave(stride, 2)  # (F, h, w) -> (F, h*s, w*s)
    x1, y1, x2, y2 = (int(v) for v in box)
    x2, y2 = min(x2, up.shape[2]), min(y2, up.shape[1])
    return up[:, y1:y2, x1:x2].mean((1, 2))


def test_equals_the_pixel_mean_of_the_upsampled_map():
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 5, 7, 7, generator=g, dtype=torch.float64)
    boxes = [torch.tensor([[0, 0, 224, 224], [10, 20, 130, 200], [33, 33, 34, 40], [200, 5, 230, 60]], dtype=torch.float64),
             torch.tensor([[64, 64, 96, 96]], dtype=torch.float64)]
    out = roi_mean_pool(feature, boxes, 32)
    assert out.shape == (5, 5)
    k = 0
    for i, bx in enumerate(boxes):
        for box in bx.tolist():
            torch.testing.assert_close(out[k], _reference(feature[i], box, 32))
            k += 1
    torch.testing.assert_close(out[0], feature[0].mean((1, 2)))  # the whole image: the global mean


def test_gradient_flows_and_degenerate_boxes_get_the_global_mean():
    feature = torch.randn(1, 3, 4, 4, requires_grad=True)
    out = roi_mean_pool(feature, [torch.tensor([[500.0, 500.0, 600.0, 600.0], [8.0, 8.0, 8.0, 20.0]])], 16)
    torch.testing.assert_close(out[0], feature[0].mean((1, 2)))
    torch.testing.assert_close(out[1], feature[0].mean((1, 2)))
    w = roi_mean_weights(torch.tensor([[0.0, 0.0, 16.0, 16.0]]), (4, 4), 16)
    assert w[0, 0] == 1 and w.sum() == pytest.approx(1.0)
    out.sum().backward()
    assert feature.grad is not None and torch.isfinite(feature.grad).all()
    with pytest.raises(ValueError, match="2 images"):
        roi_mean_pool(feature, [torch.zeros(0, 4), torch.zeros(0, 4)], 16)
