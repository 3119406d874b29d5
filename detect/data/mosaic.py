"""Multi-photo mosaics for training: four training samples in one input, so the model sees many
product kinds in one image (a store shelf) even when every photo of the dataset holds one kind.

:class:`MosaicDataset` wraps a :class:`~detect.data.dataset.DetectionDataset` whose items are
``S x S`` inputs (after its transform). With probability ``p`` an item becomes a mosaic, the way
YOLOv4/v5 build theirs but at native scale: the item and three random others are laid 2 x 2 on
a ``2S x 2S`` canvas, and an ``S x S`` window around a random point near the canvas centre is
cut out, so products keep the size the transform gave them (the scale slicing relies on) and
parts of all four photos meet in the input. Boxes are cut to the window and dropped when they
keep under ``min_visibility`` of their area. Random choices come from NumPy's global generator,
which :class:`~detect.engine.loader.SeededDataset` seeds per (epoch, item).

With ``centre`` (a share of the mosaics), the window is centred on one product of the item
instead (:func:`centred_layout`), the item laid in the cell that puts its product's neighbours
from the other photos on every side: the view sliced inference's second pass reads each product
in (a window of the input's side centred on it, :mod:`detect.infer.recentre`), so training shows
the model the inputs its final classes are read from. Measured on groceries against the mosaic
stage's random cuts from the same first stage (bench/RESULTS.md, issue 20, twelfth pass): the
gaps between single photos and sheets did not move (SSD at 0.5 and 1; the Fast R-CNN at 0.5 read
0.02-0.03 lower on every row); off by default.

Items of other datasets' kinds (precomputed proposals) and unreadable images pass through
unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detect.data.transforms import cut_to_window
from detect.structures import Unreadable


class MosaicDataset:
    """``dataset[i]``, or with probability ``p`` a 2 x 2 native-scale mosaic of it and three
    random items (see the module docstring). ``records`` and ``transform`` are the wrapped
    dataset's."""

    def __init__(self, dataset: Any, p: float, min_visibility: float = 0.3, centre: float = 0.0) -> None:
        self.dataset, self.p, self.min_visibility = dataset, float(p), float(min_visibility)
        self.centre = float(centre)  # share of the mosaics centred on one of the item's products

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # records, transform, uint8 ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i: int) -> Any:
        first = self.dataset[i]
        if self.p <= 0 or np.random.random() >= self.p or isinstance(first, Unreadable) or "proposals" in first[1]:
            return first
        others = [self.dataset[int(j)] for j in np.random.randint(0, len(self.dataset), size=3)]
        if any(isinstance(o, Unreadable) for o in others):
            return first
        boxes = first[1]["boxes"].reshape(-1, 4)
        if self.centre > 0 and len(boxes) and np.random.random() < self.centre:
            box = boxes[np.random.randint(len(boxes))].numpy()
            slot, at = centred_layout(box, first[0].shape[-1], np.random.uniform(-1, 1, size=2) * JITTER)
            items = others[:slot] + [first] + others[slot:]
            return mosaic(items, at, self.min_visibility, base=slot)
        return mosaic([first, *others], np.random.uniform(0.5, 1.5, size=2), self.min_visibility)


JITTER = 1 / 16  # of the input side: a centred window's centre is off its product's by up to this much per axis


def centred_layout(box: np.ndarray, side: int, jitter: tuple[float, float] = (0.0, 0.0)) -> tuple[int, np.ndarray]:
    """Where a photo goes in a 2 x 2 mosaic so that a window of its ``side`` centred on its
    ``box`` (xyxy photo pixels) lies inside the canvas: ``(slot, centre)``, ``slot`` 0-3 (row by
    row) and the window's centre in canvas units of ``side`` (:func:`mosaic`'s ``centre``). The
    photo goes right of the canvas's middle when its product is in its left half (the window
    reaches left of the photo), below when in its top half; ``jitter`` (float[2], units of
    ``side``) moves the centre off the product's."""
    c = (np.asarray(box[:2], np.float64) + np.asarray(box[2:], np.float64)) / 2 / side + np.asarray(jitter)  # (2,) x, y
    col, row = (int(v < 0.5) for v in c)
    return 2 * row + col, np.array([col + c[0], row + c[1]])


def mosaic(items: list[tuple[torch.Tensor, dict]], centre: np.ndarray, min_visibility: float = 0.3,
           base: int = 0) -> tuple[torch.Tensor, dict]:
    """Four ``(image Tensor[3, S, S], target)`` items as one: laid 2 x 2 (item 0 top-left, then
    row by row) on a 2S x 2S canvas and cut to the S x S window centred at ``centre * S``
    (``centre`` float[2] = x, y in [0.5, 1.5]). The target is item ``base``'s with the boxes,
    labels and difficult flags of everything left in the window (boxes xyxy in window pixels)."""
    image0, target0 = items[0][0], items[base][1]
    C, S, _ = image0.shape
    canvas = torch.zeros((C, 2 * S, 2 * S), dtype=image0.dtype)
    boxes, labels, difficult = [], [], []
    for k, (im, t) in enumerate(items):
        ox, oy = (k % 2) * S, (k // 2) * S
        canvas[:, oy:oy + S, ox:ox + S] = im
        boxes.append(t["boxes"].reshape(-1, 4) + torch.tensor([ox, oy, ox, oy], dtype=torch.float32))
        labels.append(t["labels"].reshape(-1))
        difficult.append(t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool)).reshape(-1))
    x0, y0 = (int(round(float(c) * S - S / 2)) for c in centre)
    x0, y0 = min(max(x0, 0), S), min(max(y0, 0), S)
    image = canvas[:, y0:y0 + S, x0:x0 + S].contiguous()
    cut, ok = cut_to_window(torch.cat(boxes).numpy(), (x0, y0, x0 + S, y0 + S), min_visibility)  # (N, 4) window pixels
    ok = torch.from_numpy(ok)
    target = dict(target0)
    target.update(boxes=torch.from_numpy(cut)[ok], labels=torch.cat(labels)[ok], difficult=torch.cat(difficult)[ok])
    return image, target
