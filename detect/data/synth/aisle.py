"""Aisle-walk videos: a camera panning along a wide dense shelf, every product's identity known.

The shelf is ``bays`` dense shelf photos (:func:`detect.data.synth.dense.render_dense`) side by
side, a panorama ``bays`` photos wide. A virtual camera with the video's aspect ratio walks
along it from the left end to the right end at a steady pace, with a little hand shake
(vertical jitter and zoom); each frame is the camera's view resized to the video size.

Truth per frame: the boxes of the products in view (at least :data:`MIN_IN_VIEW` of each
product's box inside the frame), their labels and their *instance* ids, unique over the whole
walk. ``AisleWalk.unique`` counts the products of the video: those in the truth of at least
:data:`MIN_FRAMES` frames (a product glimpsed in one or two frames at the ends of the walk is
not counted; a tracker needs a few frames to tell a product from a false detection too).

Shorthand: F frames; per frame N products in view; boxes float32[N, 4] xyxy, 0-based frame
pixels, x2/y2 exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from detect.data.synth.dense import render_dense

MIN_IN_VIEW = 0.3  # a product with less of its box in the frame is not in that frame's truth
MIN_FRAMES = 3  # ... and one in the truth of fewer frames than this is not counted as seen


@dataclass
class AisleFrame:
    """One frame: ``image`` (BGR uint8), ``boxes``, ``labels`` (int64[N]), ``instance`` (int64[N])."""

    index: int
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    instance: np.ndarray


@dataclass
class AisleWalk:
    """A walk along a panorama. ``frames()`` renders the frames one at a time (memory stays
    flat); ``unique`` is the true number of products seen, ``boxes_total`` what adding every
    frame's boxes would count."""

    panorama: np.ndarray
    boxes: np.ndarray  # float32[P, 4] panorama pixels
    labels: np.ndarray  # int64[P]
    width: int
    height: int
    n_frames: int
    fps: float
    views: np.ndarray  # float64[F, 3]: x, y, scale (panorama pixels per frame pixel) of each frame's view
    unique: int = 0
    boxes_total: int = 0
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # instance ids counted in ``unique``

    def frame(self, k: int) -> AisleFrame:
        x, y, s = self.views[k]
        M = np.float32([[1 / s, 0, -x / s], [0, 1 / s, -y / s]])  # panorama -> frame
        image = cv2.warpAffine(self.panorama, M, (self.width, self.height), flags=cv2.INTER_AREA if s > 1 else cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        boxes, keep, _ = self._in_view(k)
        return AisleFrame(k, image, boxes[keep], self.labels[keep], np.flatnonzero(keep).astype(np.int64))

    def frames(self) -> Iterator[AisleFrame]:
        for k in range(self.n_frames):
            yield self.frame(k)

    def _in_view(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame-pixel boxes of every product, which are in view, and the fraction in view."""
        x, y, s = self.views[k]
        b = (self.boxes - np.float32([x, y, x, y])) / np.float32(s)  # (P, 4) frame pixels
        c = b.copy()
        c[:, 0::2] = c[:, 0::2].clip(0, self.width)
        c[:, 1::2] = c[:, 1::2].clip(0, self.height)
        area = lambda q: (q[:, 2] - q[:, 0]).clip(0) * (q[:, 3] - q[:, 1]).clip(0)  # noqa: E731
        frac = area(c) / np.maximum(area(b), 1e-6)
        keep = (frac >= MIN_IN_VIEW) & (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
        return c.astype(np.float32), keep, frac

    def write(self, path: str | Path) -> Path:
        """Write the walk as an MP4 (``mp4v``) at its frame rate."""
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (self.width, self.height))
        if not out.isOpened():
            raise OSError(f"{path}: OpenCV cannot write mp4v video here")
        try:
            for f in self.frames():
                out.write(f.image)
        finally:
            out.release()
        tmp.replace(path)  # written under a temporary name: never a half video under the final one
        return path


def render_aisle(seed: int, index: int = 0, *, width: int = 1280, height: int = 720, frames: int = 150, fps: float = 30.0,
                 bays: int = 3, bay_size: int = 1600) -> AisleWalk:
    """Render aisle walk ``index`` of ``seed`` (the same arguments give the same frames).

    Args:
        width, height: video size in pixels.
        frames: length of the walk (the pace follows: the camera crosses the panorama in it).
        bays: dense shelf photos side by side; ``bay_size``: the longer side of each.
    """
    rng = np.random.default_rng([seed, 5, index])
    scenes = [render_dense(seed, 1000 * index + b, bay_size) for b in range(bays)]
    H = min(s.image.shape[0] for s in scenes)
    panorama = np.concatenate([s.image[:H] for s in scenes], axis=1)
    boxes, labels, x0 = [], [], 0
    for s in scenes:
        b = s.boxes.copy()
        keep = b[:, 1] < H
        b[:, 3] = np.minimum(b[:, 3], H)
        boxes.append(b[keep] + np.float32([x0, 0, x0, 0]))
        labels.append(s.labels[keep])
        x0 += s.image.shape[1]
    boxes, labels = np.concatenate(boxes), np.concatenate(labels)
    Wp = panorama.shape[1]
    # the camera sees a little less than the panorama's height (so it can shake without showing an edge)
    scale = 0.92 * H / height  # panorama pixels per frame pixel
    view_w = width * scale
    xs = np.linspace(0, Wp - view_w, frames)
    shake = rng.normal(0, 0.01 * H, frames).cumsum() * 0.2
    ys = np.clip((H - height * scale) / 2 + shake, 0, H - height * scale)
    zoom = 1 + 0.02 * np.sin(np.linspace(0, rng.uniform(2, 5) * np.pi, frames))
    views = np.stack([xs, ys, np.full(frames, scale) / zoom], 1)
    walk = AisleWalk(panorama, boxes.astype(np.float32), labels.astype(np.int64), int(width), int(height), int(frames),
                     float(fps), views)
    in_frames = np.zeros(len(boxes), np.int64)
    for k in range(frames):
        in_frames += walk._in_view(k)[1]
    total = int(in_frames.sum())
    walk.seen = np.flatnonzero(in_frames >= MIN_FRAMES)
    walk.unique = int(len(walk.seen))
    walk.boxes_total = total
    return walk
