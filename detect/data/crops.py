"""Square crops around product boxes: what the crop classifier (the second look,
:mod:`detect.models.crop_classifier`) is trained on and reads at inference.

A crop is the square of side ``expand * max(box w, box h)`` centred on the box, resampled to
``size x size`` (one affine warp: no intermediate copy of the window), so the product keeps its
aspect ratio and whatever the square holds beside it is its surroundings; the part outside the
image is :data:`~detect.data.letterbox.PAD_VALUE` grey. Training and inference cut crops with the
same function (:func:`crop_square`); training jitters the window (:class:`CropDataset`).

A window tight on the box (``expand`` 1.0) reads the product, not its neighbours: on groceries
mosaics a crop classifier read 1.0x windows better than 1.25x or 1.5x ones, most on mosaics
(bench/RESULTS.md, "Store photos", sixth pass).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from detect.data.dataset import ImageReadError, read_image_rgb
from detect.data.letterbox import PAD_VALUE
from detect.structures import ImageRecord


def square_windows(boxes: np.ndarray, expand: float = 1.0, shift: Optional[np.ndarray] = None) -> np.ndarray:
    """float[N, 4] xyxy boxes -> float32[N, 3] windows (x0, y0, side): the square of side
    ``expand * max(w, h)`` (at least 1 px) centred on each box, moved by ``shift`` (float[N, 2],
    fractions of the box's own w and h)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    if shift is not None:
        s = np.asarray(shift, np.float32).reshape(-1, 2)
        cx, cy = cx + s[:, 0] * w, cy + s[:, 1] * h
    side = np.maximum(np.maximum(w, h) * np.float32(expand), 1.0)
    return np.stack([cx - side / 2, cy - side / 2, side], 1).astype(np.float32)  # (N, 3)


def crop_square(image: np.ndarray, window: Sequence[float], size: int) -> np.ndarray:
    """uint8[H, W, 3] image and one window (x0, y0, side) of :func:`square_windows` -> uint8[size,
    size, 3]; outside the image: PAD_VALUE grey."""
    x0, y0, side = (float(v) for v in window)
    s = size / side
    m = np.float32([[s, 0, -x0 * s], [0, s, -y0 * s]])  # photo -> crop pixels
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(PAD_VALUE,) * 3)


def crops_of(image: np.ndarray, boxes: np.ndarray, size: int, expand: float = 1.0) -> np.ndarray:
    """uint8[H, W, 3] and float[N, 4] boxes -> uint8[N, size, size, 3], one crop per box."""
    windows = square_windows(boxes, expand)
    out = np.empty((len(windows), size, size, 3), np.uint8)
    for i, w in enumerate(windows):
        out[i] = crop_square(image, w, size)
    return out


class CropDataset(Dataset):
    """One item per ground-truth box (difficult ones left out) of ``records``: (uint8 Tensor[size,
    size, 3] RGB crop, class index).

    With ``train``: the window's side is ``expand`` times U(``scale``) and its centre moves by up
    to ``shift`` of the box, brightness and contrast change by up to 20%, and with probability
    ``foreign`` everything outside the box is replaced by the same place of another training
    photo, as a product's neighbours on a shelf or in a mosaic come from other photos (the
    class must come from the box, not from what stands beside it). Without ``train``: the window
    inference uses. Unreadable images raise :class:`ImageReadError` (the training loop reports
    the file).
    """

    def __init__(self, records: Sequence[ImageRecord], size: int, expand: float = 1.0, train: bool = False,
                 scale: tuple[float, float] = (0.9, 1.3), shift: float = 0.08, foreign: float = 0.3,
                 seed: int = 0) -> None:
        self.records = list(records)
        self.size, self.expand, self.train = int(size), float(expand), bool(train)
        self.scale, self.shift, self.foreign = scale, float(shift), float(foreign)
        self.items = [(i, j) for i, r in enumerate(self.records) for j in range(len(r.boxes))
                      if not (len(r.difficult) and bool(r.difficult[j]))]  # (record, box)
        self.rng = np.random.default_rng(seed)
        self._seeded_pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return np.array([int(self.records[i].labels[j]) for i, j in self.items], np.int64)

    def _reseed(self) -> None:
        if self._seeded_pid != os.getpid():  # DataLoader workers: each its own stream, reproducible
            self.rng = np.random.default_rng(int(torch.initial_seed() % 2**32))
            self._seeded_pid = os.getpid()

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        i, j = self.items[k]
        r = self.records[i]
        image = read_image_rgb(r.image)
        box = np.asarray(r.boxes[j], np.float32).reshape(1, 4)
        label = int(r.labels[j])
        if not self.train:
            return torch.from_numpy(crops_of(image, box, self.size, self.expand)[0]), label
        self._reseed()
        rng = self.rng
        window = square_windows(box, self.expand * rng.uniform(*self.scale), rng.uniform(-self.shift, self.shift, (1, 2)))[0]
        crop = crop_square(image, window, self.size)
        if self.foreign > 0 and len(self.records) > 1 and rng.random() < self.foreign:
            crop = self._foreign_surroundings(crop, box[0], window, rng)
        gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
        crop = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        return torch.from_numpy(crop), label

    def _foreign_surroundings(self, crop: np.ndarray, box: np.ndarray, window: np.ndarray, rng) -> np.ndarray:
        """``crop`` with everything outside ``box`` taken from another photo's same window."""
        other = int(rng.integers(len(self.records)))  # now and then the photo itself: harmless
        try:
            bg = crop_square(read_image_rgb(self.records[other].image), window, self.size)
        except ImageReadError:
            return crop
        x0, y0, side = (float(v) for v in window)
        s = self.size / side
        bx0, by0 = int(np.clip(round((box[0] - x0) * s), 0, self.size)), int(np.clip(round((box[1] - y0) * s), 0, self.size))
        bx1, by1 = int(np.clip(round((box[2] - x0) * s), 0, self.size)), int(np.clip(round((box[3] - y0) * s), 0, self.size))
        bg[by0:by1, bx0:bx1] = crop[by0:by1, bx0:bx1]
        return bg
