"""The "camera" of the synthetic shelves: a slight perspective warp, uneven lighting and
colour cast, blur and sensor noise, then the ground-truth boxes read off the warped id map.

Shorthand: H, W image size; K products painted; N products kept (boxes float32[N, 4],
xyxy, 0-based pixels, x2/y2 exclusive).
"""

from __future__ import annotations

import cv2
import numpy as np

from detect.data.synth.scene import Scene, _Canvas, checkout_scene, shelf_scene

MIN_VISIBLE = 0.05  # under this fraction of its painted area a product is dropped ...
MIN_PIXELS = 12  # ... and so is one with fewer visible pixels than this
MIN_SIDE = 2  # ... or a box thinner than this (VOC would write xmin == xmax: a degenerate box)
DIFFICULT_VISIBLE = 0.3  # under this fraction a product is kept but marked difficult
TRUNCATED_AREA = 0.85  # a box under this fraction of the product's full extent is "truncated"


def _homography(rng: np.random.Generator, H: int, W: int, strength: float = 0.06) -> np.ndarray:
    """float64[3, 3] mapping a quadrilateral *inside* the frame onto the whole frame: a slight
    zoom, tilt and keystone that never shows anything outside the composed image."""
    dst = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    jx = rng.uniform(0, strength, 4) * W
    jy = rng.uniform(0, strength, 4) * H
    src = dst + np.float32(np.stack([jx * [1, -1, -1, 1], jy * [1, 1, -1, -1]], 1))
    return cv2.getPerspectiveTransform(src, dst)


def _polygon_area(p: np.ndarray) -> float:
    """Shoelace area of a polygon float[P, 2]."""
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _light(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Uneven light (a gradient in a random direction and a vignette), a colour cast and
    Gaussian sensor noise, in one float pass."""
    H, W = img.shape[:2]
    ys = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
    ang = rng.uniform(0, 2 * np.pi)
    gain = rng.uniform(0.75, 1.15) * (1.0 + rng.uniform(0, 0.3) * (np.cos(ang) * xs + np.sin(ang) * ys))
    gain = gain - rng.uniform(0, 0.3) * (xs * xs + ys * ys) / 2
    cast = np.float32(rng.uniform(0.9, 1.1, 3))
    out = img.astype(np.float32) * (gain[..., None] * cast)
    sigma = rng.uniform(1.0, 7.0)
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(out, 0, 255).astype(np.uint8)


def _blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    u = rng.random()
    if u < 0.3:  # defocus
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    if u < 0.45:  # camera shake
        n = int(rng.integers(3, 8))
        k = np.zeros((n, n), np.float32)
        cv2.line(k, (0, int(rng.integers(n))), (n - 1, int(rng.integers(n))), 1.0, 1)
        return cv2.filter2D(img, -1, k / max(k.sum(), 1.0))
    return img


def photograph(rng: np.random.Generator, cv: _Canvas, kind: str) -> Scene:
    """Apply the camera to a composed canvas and return the scene with its visible boxes."""
    H, W = cv.ids.shape
    img, ids = cv.img, cv.ids
    M = np.eye(3)
    if rng.random() < 0.7:
        M = _homography(rng, H, W)
        img, ids = warp(img, ids, M)
    img = _light(rng, _blur(rng, img))
    return visible_scene(cv, img, ids, M, kind, quality=int(rng.integers(80, 96)))


def warp(img: np.ndarray, ids: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The composed image (bilinear, border replicated) and its id map (nearest, border 0)
    seen through the homography ``M`` (float64[3, 3]), same size."""
    H, W = ids.shape
    img = cv2.warpPerspective(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ids = cv2.warpPerspective(ids, M, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return img, ids


def visible_scene(cv: _Canvas, img: np.ndarray, ids: np.ndarray, M: np.ndarray, kind: str, quality: int,
                  tiny: float = 0.02) -> Scene:
    """The scene of photographed ``img``: a box per product of ``cv.items`` whose pixels in the
    warped id map ``ids`` are enough to keep (see the module's thresholds); ``Scene.item`` holds
    each kept box's index into ``cv.items``. A box whose shorter side is under ``tiny`` of the
    photo's longer side is difficult."""
    H, W = ids.shape
    boxes, labels, difficult, truncated, visible, kept = [], [], [], [], [], []
    for k, (label, area, x0, y0, x1, y1) in enumerate(cv.items, start=1):
        rect = np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]])
        quad = cv2.perspectiveTransform(rect, M)[0]  # (4, 2) full extent after the warp
        fx0, fy0 = quad.min(0)
        fx1, fy1 = quad.max(0)
        rx0, ry0 = max(int(fx0) - 1, 0), max(int(fy0) - 1, 0)
        rx1, ry1 = min(int(np.ceil(fx1)) + 1, W), min(int(np.ceil(fy1)) + 1, H)
        if rx1 <= rx0 or ry1 <= ry0:
            continue
        hit = ids[ry0:ry1, rx0:rx1] == k
        count = int(np.count_nonzero(hit))
        scale = _polygon_area(quad) / max((x1 - x0) * (y1 - y0), 1)  # area change by the warp
        vis = count / max(area * scale, 1.0)
        if count < MIN_PIXELS or vis < MIN_VISIBLE:
            continue
        rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
        box = [rx0 + cols[0], ry0 + rows[0], rx0 + cols[-1] + 1, ry0 + rows[-1] + 1]
        bw, bh = box[2] - box[0], box[3] - box[1]
        if min(bw, bh) < MIN_SIDE:
            continue
        boxes.append(box)
        labels.append(label)
        visible.append(min(vis, 1.0))
        difficult.append(vis < DIFFICULT_VISIBLE or min(bw, bh) < tiny * max(H, W))
        truncated.append(bw * bh < TRUNCATED_AREA * (fx1 - fx0) * (fy1 - fy0))
        kept.append(k - 1)
    n = len(boxes)
    return Scene(
        image=img,
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        labels=np.asarray(labels, np.int64).reshape(n),
        difficult=np.asarray(difficult, bool).reshape(n),
        truncated=np.asarray(truncated, bool).reshape(n),
        visible=np.asarray(visible, np.float32).reshape(n),
        kind=kind,
        quality=quality,
        item=np.asarray(kept, np.int64).reshape(n),
    )


def render(rng: np.random.Generator, size: int = 320, kind: str | None = None) -> Scene:
    """Compose and photograph one scene; ``size`` is the longer image side in pixels and
    ``kind`` "shelf", "checkout" or None (70% shelves)."""
    if size < 32:
        raise ValueError(f"synthetic image size must be at least 32 pixels, got {size}")
    u = rng.random()
    short = int(round(size * 0.75))
    H, W = (size, size) if u < 0.45 else (short, size) if u < 0.85 else (size, short)
    if kind is None:
        kind = "shelf" if rng.random() < 0.7 else "checkout"
    if kind == "shelf":
        cv = shelf_scene(rng, H, W)
    elif kind == "checkout":
        cv = checkout_scene(rng, H, W)
    else:
        raise ValueError(f"unknown scene kind {kind!r}; use 'shelf' or 'checkout'")
    return photograph(rng, cv, kind)
