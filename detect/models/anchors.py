"""SSD default boxes (anchors): generation for any feature-map sizes, defaults, and a fit to a
training set's box shapes.

Shorthand: K feature maps, map k has size (H_k, W_k) and A_k boxes per location; N = sum_k H_k*W_k*A_k.
Scales are fractions of the image side; aspect ratios are w/h (2.0 = twice as wide as tall).
At every location of map k there is one box of scale s_k per aspect ratio listed for that map,
plus one square box of scale sqrt(s_k * s_{k+1}) (SSD's extra box), so A_k = len(ratios_k) + 1.
Box order is location-major (row, column), then the ratios in the listed order, then the extra
box: the same order the head's (B, A*C, H, W) -> (B, H*W*A, C) reshape produces.

With symmetric ratios this generates exactly torchvision's ``DefaultBoxGenerator(clip=True)``
boxes (checked in tests/test_ssd.py); listing each ratio explicitly allows a fitted, asymmetric set
(tall bottles without their wide mirror image).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch


def default_scales(num_maps: int, smallest: float = 0.1, min_ratio: float = 0.2, max_ratio: float = 0.95) -> list[float]:
    """SSD scales, ``num_maps + 1`` values: ``smallest`` for the finest map (SSD's conv4_3 rule),
    then linear from ``min_ratio`` to ``max_ratio``, then 1.0 (used only by the last extra box)."""
    if num_maps < 1:
        raise ValueError("need at least one feature map")
    if num_maps == 1:
        return [smallest, 1.0]
    rest = np.linspace(min_ratio, max_ratio, num_maps - 1).tolist()
    return [smallest, *rest, 1.0]


def default_aspect_ratios(num_maps: int) -> list[list[float]]:
    """SSD300's ratios {1, 2, 1/2} on the finest and the two coarsest maps, {1, 2, 1/2, 3, 1/3}
    on the others."""
    small, big = [1.0, 2.0, 0.5], [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0]
    return [list(small if num_maps > 3 and (k == 0 or k >= num_maps - 2) else big) for k in range(num_maps)]


def resolve_default_boxes(
    num_maps: int, scales: Optional[Sequence[float]], aspect_ratios: Optional[Sequence[Sequence[float]]]
) -> tuple[list[float], list[list[float]]]:
    """Fill in defaults and validate: returns ``num_maps + 1`` scales and ``num_maps`` ratio lists.

    ``scales`` may have ``num_maps`` values (1.0 is appended) or ``num_maps + 1``; a single ratio
    list is used for every map.
    """
    scales = default_scales(num_maps) if scales is None else [float(s) for s in scales]
    if len(scales) == num_maps:
        scales = [*scales, 1.0]
    if len(scales) != num_maps + 1:
        raise ValueError(f"anchor_sizes: expected {num_maps} (or {num_maps + 1}) scales for {num_maps} feature maps, got {len(scales)}")
    if any(not (0 < s <= 2) for s in scales):
        raise ValueError(f"anchor_sizes are fractions of the image side in (0, 2], got {scales}")
    if aspect_ratios is None:
        ratios = default_aspect_ratios(num_maps)
    elif len(aspect_ratios) == 1:
        ratios = [list(map(float, aspect_ratios[0]))] * num_maps
    else:
        ratios = [list(map(float, r)) for r in aspect_ratios]
    if len(ratios) != num_maps:
        raise ValueError(f"aspect_ratios: expected 1 or {num_maps} lists (one per feature map), got {len(ratios)}")
    if any(not r or min(r) <= 0 for r in ratios):
        raise ValueError(f"aspect_ratios must be non-empty lists of positive w/h ratios, got {ratios}")
    return scales, ratios


class DefaultBoxes:
    """Generates default boxes for the actual feature-map sizes, cached per (sizes, device, dtype).

    Args:
        scales: ``K + 1`` scales (see :func:`resolve_default_boxes`).
        aspect_ratios: ``K`` lists of w/h ratios.
    """

    def __init__(self, scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]]):
        self.scales = list(scales)
        self.aspect_ratios = [list(r) for r in aspect_ratios]
        self._cache: dict[tuple, torch.Tensor] = {}
        self.wh = []  # per map: Tensor[A_k, 2], (w, h) as fractions of the image
        for k, ratios in enumerate(self.aspect_ratios):
            s, s_next = self.scales[k], self.scales[k + 1]
            pairs = [(s * math.sqrt(r), s / math.sqrt(r)) for r in ratios]
            pairs.append((math.sqrt(s * s_next),) * 2)
            self.wh.append(torch.tensor(pairs, dtype=torch.float64).clamp(0, 1))

    def num_anchors(self) -> list[int]:
        """A_k for every map."""
        return [len(w) for w in self.wh]

    def __call__(
        self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Default boxes, Tensor[N, 4], xyxy in pixels of an image of ``image_size`` (h, w)."""
        key = (tuple(map(tuple, feature_sizes)), tuple(image_size), str(device), dtype)
        boxes = self._cache.get(key)
        if boxes is None:
            boxes = self._generate(feature_sizes, image_size).to(device=device, dtype=dtype)
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = boxes
        return boxes

    def _generate(self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]) -> torch.Tensor:
        if len(feature_sizes) != len(self.wh):
            raise ValueError(f"{len(feature_sizes)} feature maps but default boxes for {len(self.wh)}")
        out = []
        for (fh, fw), wh in zip(feature_sizes, self.wh):
            cy = (torch.arange(fh, dtype=torch.float64) + 0.5) / fh
            cx = (torch.arange(fw, dtype=torch.float64) + 0.5) / fw
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centers = torch.stack((cx, cy), -1).reshape(-1, 1, 2)  # (H*W, 1, 2)
            half = wh.reshape(1, -1, 2) / 2  # (1, A, 2)
            box = torch.cat((centers - half, centers + half), -1)  # (H*W, A, 4), normalised xyxy
            out.append(box.reshape(-1, 4))  # (H*W*A, 4)
        h, w = image_size
        return torch.cat(out) * torch.tensor([w, h, w, h], dtype=torch.float64)


def record_box_shapes(records: Sequence) -> np.ndarray:
    """Box widths and heights as fractions of their image's size, float[M, 2], from cache records
    (``detect.structures.ImageRecord``: ``boxes`` xyxy pixels, ``width``, ``height``)."""
    shapes = [
        (np.asarray(r.boxes, np.float64).reshape(-1, 4)[:, 2:] - np.asarray(r.boxes, np.float64).reshape(-1, 4)[:, :2])
        / np.array([max(r.width, 1), max(r.height, 1)], np.float64)
        for r in records
    ]
    return np.concatenate(shapes) if shapes else np.zeros((0, 2))


def fit_default_boxes(
    wh: np.ndarray,
    num_maps: int,
    num_ratios: int = 3,
    min_scale: float = 0.04,
    max_scale: float = 0.95,
    iters: int = 50,
) -> tuple[list[float], list[list[float]]]:
    """Fit default-box scales and aspect ratios to a training set's box shapes.

    Args:
        wh (float[M, 2]): box widths and heights as fractions of their image's width and height
            (i.e. in the stretched S x S model input).
        num_maps: K, the number of feature maps of the model.
        num_ratios: clusters of the 1-D k-means on log(w/h); the cluster centres (as ratios) are
            the aspect ratios of every map (fewer when the data has fewer distinct shapes).
        min_scale, max_scale: bounds for the scales.

    Returns:
        (scales, aspect_ratios): ``K + 1`` scales geometrically spaced from the 2nd to the 98th
        percentile of sqrt(w*h), and ``K`` copies of the sorted fitted ratios; both ready for
        ``ModelConfig.anchor_sizes`` / ``ModelConfig.aspect_ratios``.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[np.isfinite(wh).all(1) & (wh > 0).all(1)]
    if len(wh) < num_ratios:
        raise ValueError(f"need at least {num_ratios} valid boxes to fit default boxes, got {len(wh)}")
    log_r = np.log(wh[:, 0] / wh[:, 1])
    centers = np.quantile(log_r, (np.arange(num_ratios) + 0.5) / num_ratios)  # deterministic init
    for _ in range(iters):
        assign = np.abs(log_r[:, None] - centers[None, :]).argmin(1)
        new = np.array([log_r[assign == j].mean() if (assign == j).any() else np.nan for j in range(num_ratios)])
        new = new[np.isfinite(new)]
        if len(new) == len(centers) and np.allclose(new, centers):
            break
        centers = new
    ratios = sorted({round(float(np.exp(c)), 3) for c in centers})

    size = np.sqrt(wh[:, 0] * wh[:, 1])
    lo, hi = np.clip(np.quantile(size, [0.02, 0.98]), min_scale, max_scale)
    hi = max(hi, lo)
    if num_maps == 1:
        scales = [float(lo), float(min(1.0, hi))]
    else:
        step = (hi / lo) ** (1.0 / (num_maps - 1))
        scales = [float(lo * step**k) for k in range(num_maps)] + [float(min(1.0, hi * step))]
    return [round(s, 4) for s in scales], [list(ratios) for _ in range(num_maps)]
