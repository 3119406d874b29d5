"""Pin the semantics of ``torchvision.ops.roi_pool`` (the Fast R-CNN RoI pooling op) against a
brute-force reference written here, on small random inputs.

The reference follows the Fast R-CNN / Caffe definition that torchvision implements:

1. Box corners are scaled to the feature map and rounded half away from zero
   (C ``round``: 2.5 -> 3, not Python's banker's 2): ``x1' = round(x1 * spatial_scale)``.
2. The RoI covers feature cells ``x1'..x2'`` inclusive, so its width is ``x2' - x1' + 1``,
   forced to at least 1 (malformed boxes pool one cell).
3. Bin ``p`` of ``P`` spans ``[floor(p * w / P), ceil((p + 1) * w / P))`` cells from ``x1'``
   (bins overlap when w is not a multiple of P), clipped to the feature map.
4. Each bin takes the maximum over its cells; an empty bin (fully outside the map) outputs 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import RoIPool, roi_pool


def _c_round(v: np.float32) -> int:
    """C's round(): half away from zero."""
    return int(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))


def roi_pool_reference(feat: np.ndarray, rois: np.ndarray, out_hw: tuple[int, int], scale: float) -> np.ndarray:
    """feat float32[N, C, H, W], rois float32[R, 5] (batch index, x1, y1, x2, y2) -> float32[R, C, PH, PW]."""
    _, c, h, w = feat.shape
    ph_n, pw_n = out_hw
    scale32 = np.float32(scale)
    out = np.zeros((len(rois), c, ph_n, pw_n), np.float32)
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        # the kernel multiplies in the input's dtype (float32) before rounding
        sx, sy = _c_round(np.float32(x1) * scale32), _c_round(np.float32(y1) * scale32)
        ex, ey = _c_round(np.float32(x2) * scale32), _c_round(np.float32(y2) * scale32)
        rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
        bin_w, bin_h = np.float32(rw) / np.float32(pw_n), np.float32(rh) / np.float32(ph_n)
        for ph in range(ph_n):
            hs = min(max(int(math.floor(np.float32(ph) * bin_h)) + sy, 0), h)
            he = min(max(int(math.ceil(np.float32(ph + 1) * bin_h)) + sy, 0), h)
            for pw in range(pw_n):
                ws = min(max(int(math.floor(np.float32(pw) * bin_w)) + sx, 0), w)
                we = min(max(int(math.ceil(np.float32(pw + 1) * bin_w)) + sx, 0), w)
                if he <= hs or we <= ws:
                    continue  # empty bin -> 0
                out[r, :, ph, pw] = feat[int(b), :, hs:he, ws:we].reshape(c, -1).max(axis=1)
    return out


def _random_rois(rng: np.random.Generator, n_img: int, img_size: float, count: int) -> np.ndarray:
    """Boxes in image pixels with fractional corners, some crossing or sitting on the border."""
    x1 = rng.uniform(-0.1 * img_size, img_size, count)
    y1 = rng.uniform(-0.1 * img_size, img_size, count)
    x2 = x1 + rng.uniform(0.5, 0.8 * img_size, count)
    y2 = y1 + rng.uniform(0.5, 0.8 * img_size, count)
    b = rng.integers(0, n_img, count)
    return np.stack([b, x1, y1, x2, y2], 1).astype(np.float32)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale,out_hw", [(1.0, (2, 2)), (1 / 16, (7, 7)), (0.5, (3, 5)), (1 / 8, (7, 7))])
def test_roi_pool_matches_reference_on_random_inputs(device: str, scale: float, out_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    n, c, h, w = 2, 3, 9, 11
    feat = rng.standard_normal((n, c, h, w)).astype(np.float32)
    rois = _random_rois(rng, n, img_size=w / scale, count=40)
    expected = roi_pool_reference(feat, rois, out_hw, scale)
    got = roi_pool(torch.from_numpy(feat).to(device), torch.from_numpy(rois).to(device), out_hw, scale)
    np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_rounding_is_half_away_from_zero_not_bankers(device: str) -> None:
    # feature value = column index, so the pooled max tells which last column was included
    feat = torch.arange(8, dtype=torch.float32).repeat(1, 1, 2, 1).to(device)  # (1, 1, 2, 8)
    # x2 = 2.5 rounds to 3 (Python's round would give 2); x1 = 0.5 rounds to 1 (Python: 0)
    rois = torch.tensor([[0, 0.5, 0.0, 2.5, 1.0]], device=device)
    out = roi_pool(feat, rois, (1, 1), 1.0)
    assert out.item() == 3.0
    # the left edge: min over the bin via a negated map shows the first column included
    out_neg = roi_pool(-feat, rois, (1, 1), 1.0)
    assert out_neg.item() == -1.0
    # with spatial_scale 0.5: x2 = 5 -> 2.5 -> 3
    out_half = roi_pool(feat, torch.tensor([[0, 0.0, 0.0, 5.0, 1.0]], device=device), (1, 1), 0.5)
    assert out_half.item() == 3.0


@pytest.mark.parametrize("device", DEVICES)
def test_bin_edges_overlap_when_size_is_not_a_multiple(device: str) -> None:
    # an RoI of 3 cells pooled into 2 bins: bin 0 = cells [0, 2), bin 1 = cells [1, 3): the middle
    # cell is in both bins (floor/ceil edges), so a spike there appears twice
    feat = torch.zeros(1, 1, 1, 3, device=device)
    feat[..., 1] = 5.0
    out = roi_pool(feat, torch.tensor([[0, 0.0, 0.0, 2.0, 0.0]], device=device), (1, 2), 1.0)
    assert out.flatten().tolist() == [5.0, 5.0]


@pytest.mark.parametrize("device", DEVICES)
def test_empty_bins_outside_the_map_are_zero_and_border_boxes_clip(device: str) -> None:
    feat = torch.full((1, 1, 4, 4), -3.0, device=device)  # all negative: a 0 can only come from an empty bin
    # a box hanging off the right/bottom border: its outer bins fall outside the 4x4 map
    rois = torch.tensor([[0, 2.0, 2.0, 7.0, 7.0]], device=device)
    out = roi_pool(feat, rois, (2, 2), 1.0)[0, 0]
    assert out[0, 0].item() == -3.0  # inside
    assert out[1, 1].item() == 0.0  # cells 5..7 are outside the map: empty bin
    ref = roi_pool_reference(feat.cpu().numpy(), rois.cpu().numpy(), (2, 2), 1.0)
    np.testing.assert_array_equal(out.cpu().numpy(), ref[0, 0])
    # a box exactly covering the map, corners on the border (x2 = W in the exclusive convention)
    full = roi_pool(torch.arange(16.0, device=device).view(1, 1, 4, 4), torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]], device=device), (1, 1), 1.0)
    assert full.item() == 15.0


@pytest.mark.parametrize("device", DEVICES)
def test_malformed_box_pools_one_cell_and_module_matches_function(device: str) -> None:
    feat = torch.arange(25.0, device=device).view(1, 1, 5, 5)
    # x2 < x1: width forced to 1 cell at round(x1)
    rois = torch.tensor([[0, 3.0, 2.0, 1.0, 2.0]], device=device)
    out = roi_pool(feat, rois, (2, 2), 1.0)
    ref = roi_pool_reference(feat.cpu().numpy(), rois.cpu().numpy(), (2, 2), 1.0)
    np.testing.assert_array_equal(out.cpu().numpy(), ref)
    assert out.max().item() == feat[0, 0, 2, 3].item()
    module = RoIPool((2, 2), 1.0)
    torch.testing.assert_close(module(feat, [rois[:, 1:]]), out)


def test_gradient_flows_to_the_argmax_cell_only() -> None:
    feat = torch.zeros(1, 1, 4, 4, requires_grad=True)
    with torch.no_grad():
        feat[0, 0, 1, 2] = 1.0
    out = roi_pool(feat, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), (1, 1), 1.0)
    out.sum().backward()
    grad = feat.grad[0, 0]
    assert grad[1, 2].item() == 1.0 and grad.sum().item() == 1.0
