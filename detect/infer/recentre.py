"""A second pass over a sliced photo: every confident detection read again in a window centred on it.

A grid of slices cuts products wherever its edges fall. When the model's products are large
against its input (product photos: a product is half of a 224-px input), most products are cut
by some window's edge and seen whole, centred, by none; and a window that straddles several
photos of a mosaic or several kinds on a shelf pools their mix into the image-level context of
every box. The model was trained on inputs centred on their products. So after the grid's
detections are merged (:func:`detect.infer.slicing.merge_slices`), each detection scoring at least
:data:`RECENTRE_SCORE` is read again in a window of the same side centred on it (shifted inside
the photo), and that view's boxes overlapping it (IoU >= :data:`RECENTRE_MATCH`, any class)
replace it: the product seen whole, in the middle of the input, as in training. The view also
speaks for its place: the grid's other detections there (overlapping a box the view kept at IoU
>= :data:`RECENTRE_COVER`, any class, any score: the faint hypotheses a mixed window left) go.
Detections without a confident enough score, or whose centred view finds nothing there, stay as
they are.

Measured (bench/RESULTS.md, issue 20, seventh pass; groceries val photos tiled into 3x3 mosaics
and 6x8 sheets): the default SSD 0.693 / 0.654 -> 0.759 / 0.726, the default Fast R-CNN 0.720 /
0.675 -> 0.771 / 0.769 (single photos 0.83, read whole). Greying the view outside the box, windows
sized to each box, or five shifted views per product were all worse than one centred view.

It costs one more window per distinct confident product, so "auto" does it only for models whose
learned product side (:attr:`Preprocess.object_size`) is at least :data:`RECENTRE_SIZE` of the
input: a window then holds a handful of products (the groceries models: 116 of 224 px), where a
model of store shelves (the shipped weights: 64 of 320 px) sees dozens per window and most of
them whole, and re-centring would multiply its work (a 12-MP shelf: ~400 products in 48
windows).

Pure functions (numpy in, numpy out); :mod:`detect.infer.slice_run` runs the windows.
Shorthand: N detections of one photo, K centred windows, boxes float32[N, 4] xyxy photo pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from detect.infer.slicing import RECENTRES, class_nms
# detections from this score get a centred view (0.05: 3x3 0.813, 6x8 0.810 against 0.819 / 0.802, more windows)
RECENTRE_SCORE = 0.1
RECENTRE_MATCH = 0.3  # a centred view's boxes at this IoU with the detection replace it (0.5: 3x3 0.805 against 0.819)
# the grid's detections at this IoU with a box a view kept go too: four SSDs' 6x8 sheets +0.004 to +0.007, 3x3
# +0.002 to +0.003, a Fast R-CNN's +0.001 / 0.000; 0.3 read as 0.5 (bench/RESULTS.md, issue 20, thirteenth pass)
RECENTRE_COVER = 0.5
RECENTRE_SIZE = 0.3  # "auto": re-centre when the learned product side is at least this share of the input
GRID = 16  # window origins snap to side / GRID pixels: a product's several class hypotheses share one window


def recentre_on(mode: str, imgsz: int, object_size: float) -> bool:
    """Whether a predictor re-centres: "on", "off", or "auto" (the model's products, learned at
    ``object_size`` input pixels, at least :data:`RECENTRE_SIZE` of its ``imgsz`` input; 0:
    unknown, an older checkpoint: off)."""
    if mode not in RECENTRES:
        raise ValueError(f"recentre must be one of {RECENTRES}, got {mode!r}")
    return mode == "on" or (mode == "auto" and object_size >= RECENTRE_SIZE * imgsz)


def centred_windows(boxes: np.ndarray, side: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(windows int64[K, 4], owner int64[N])``: a square window of ``side`` centred on each
    box, its origin snapped to ``side / GRID`` pixels and shifted inside the ``h x w`` photo
    (cut by the photo where it is smaller than ``side``); boxes whose windows coincide (one
    product's hypotheses of several classes) share one, ``owner[i]`` being box i's."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    q = max(1, side // GRID)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2) x, y centres
    origin = np.round((c - side / 2) / q) * q  # (N, 2)
    x0 = np.clip(origin[:, 0], 0, max(w - side, 0)).astype(np.int64)
    y0 = np.clip(origin[:, 1], 0, max(h - side, 0)).astype(np.int64)
    wins = np.stack([x0, y0, np.minimum(x0 + side, w), np.minimum(y0 + side, h)], 1)  # (N, 4)
    windows, owner = np.unique(wins, axis=0, return_inverse=True)
    return windows.astype(np.int64), owner.reshape(-1).astype(np.int64)


def merge_recentred(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, src: np.ndarray, owner: np.ndarray,
                    views: list[tuple[np.ndarray, np.ndarray, np.ndarray]], iou: float = 0.5,
                    match: float = RECENTRE_MATCH, cover: float = RECENTRE_COVER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One photo's detections (``boxes``, ``scores``, ``labels``) with the centred views: the
    detections ``src`` (int[M]) were read again in window ``owner[j]`` (of ``src[j]``), whose
    boxes, scores and labels in photo pixels are ``views[k]``. A view's boxes overlapping one of
    its detections at IoU >= ``match`` (any class) replace those detections, and any other
    detection they overlap at IoU >= ``cover`` goes too (any class: the view read that place); a
    detection its view does not find, away from what the views kept, stays. Then class-wise NMS
    at ``iou`` (a product found by two views, or by a view and an unreplaced detection):
    ``(boxes float32[M', 4], scores, labels)``, by decreasing score."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    src, owner = np.asarray(src, np.int64).reshape(-1), np.asarray(owner, np.int64).reshape(-1)
    replaced = np.zeros(len(boxes), bool)
    out_b, out_s, out_l = [], [], []
    for k, (vb, vs, vl) in enumerate(views):
        mine = src[owner == k]  # the detections this window was centred on
        if not len(mine) or not len(vb):
            continue
        vb = np.asarray(vb, np.float32).reshape(-1, 4)
        ov = box_iou(torch.from_numpy(vb), torch.from_numpy(boxes[mine])).numpy() >= match  # (V, mine)
        replaced[mine[ov.any(0)]] = True
        take = ov.any(1)
        out_b.append(vb[take])
        out_s.append(np.asarray(vs, np.float32).reshape(-1)[take])
        out_l.append(np.asarray(vl, np.int64).reshape(-1)[take])
    kept = np.concatenate(out_b) if out_b else np.zeros((0, 4), np.float32)
    rest = np.flatnonzero(~replaced)  # the grid's other hypotheses, dropped where a view read the product
    if len(kept) and len(rest):
        replaced[rest] = (box_iou(torch.from_numpy(boxes[rest]), torch.from_numpy(kept)).numpy() >= cover).any(1)
    b = np.concatenate([boxes[~replaced]] + out_b)
    s = np.concatenate([scores[~replaced]] + out_s)
    lab = np.concatenate([labels[~replaced]] + out_l)
    return class_nms(b, s, lab, iou)
