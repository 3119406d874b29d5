"""Sliced inference for large photos: where to cut, at which scale, and how to merge.

A detector sees its ``S x S`` input. A 12-megapixel shelf squeezed into 320 pixels shows each
product a few pixels wide, and it finds almost nothing; cut into overlapping slices at the scale
the model was trained on, every product comes out the size the model knows. This module is the
pure part of that (numpy in, numpy out; :class:`~detect.infer.predict.Predictor` runs the
model):

- :func:`slice_windows`: the grid of square windows of side ``side`` covering an ``h x w``
  photo with at least ``overlap`` of a side shared by neighbours (edges included, evenly spread).
- :func:`slice_side`: the window side that shows a photo's products at the model's
  ``object_size`` (median product side in input pixels, stored in the checkpoint by training),
  from the products' size in the photo: given by the user, measured by a probe (the model run
  on a few centre crops of growing size: :func:`probe_windows`, :func:`side_from_probes`; the
  lower quartile of the sizes it finds, :data:`SIZE_QUANTILE`), or,
  when the probe finds nothing, the store-photo prior (a product is ~0.4% of the photo's area).
- :func:`merge_slices`: the detections of all windows of a photo as one set. Three steps,
  class by class:
    1. a box cut by a window's inner edge (it touches the edge, and the photo goes on there) and
       a box cut by the facing edge of the neighbouring window, overlapping across the shared
       zone and aligned along it, are two pieces of one product: they become their union (of
       pieces scoring at least :data:`PIECE_SCORE` of the best: a faint box does not stretch a
       product the detector is sure of);
    2. a cut box lying mostly (``contain`` of its area) inside a box of its class is the part of
       a product another window saw whole: dropped;
    3. NMS (IoU ``iou``) removes products seen whole by two windows; the box kept moves to the
       score-weighted mean of the boxes it removed that score at least :data:`PIECE_SCORE` of it.
  Touching products of one class stay apart: NMS keeps boxes with little IoU, and only *cut*
  boxes are ever joined or dropped. SAHI's default (greedy merging on intersection over the
  smaller box, :func:`nmm_merge`) and plain NMS (:func:`nms_merge`) are here for comparison
  (``bench/dense.py`` measures all three).

Shorthand: N detections of one photo; K windows; boxes float32[N, 4] xyxy, 0-based pixels of
the whole photo; ``cut`` bool[N, 4]: left, top, right, bottom edge lies on an inner window edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

SliceMode = Union[str, int]  # "auto" | "off" | a window side in photo pixels
MERGES = ("cut", "nms", "nmm")
RECENTRES = ("auto", "on", "off")  # the second pass of centred windows (detect/infer/recentre.py)
PRIOR_AREA = 0.004  # a store photo's product: 0.2-1% of the photo (SKU-110K: ~147 per 8-MP photo)
READ_WHOLE = 0.9  # a photo whose products come out at least this share of the learned size is read whole
# Which of the probe's product sides the slices show at the learned size: the lower quartile,
# not the median. A photo's products are not one size (large and small packs, a shelf seen at
# an angle, parts of a photo at different distances), and the model reads a product from about
# its learned size to twice that well but loses it fast below: on the synthetic 640-px photos
# (bench/dense_loss.py) recall at score 0.3 is 0.97-1.0 from 48 to over 128 input pixels against
# 64 learned, 0.75 at 32-48. With the median 25% of the products come out below 0.8 of the learned
# size; with the lower quartile the slices are ~0.75 the side (~1.8x the windows) and
# voc_ap50 rose on single photos (0.979 -> 0.983) and on 4x3 sheets (0.952 -> 0.958).
SIZE_QUANTILE = 0.25
# A cut piece joins a product's union only from this share of the union's best piece's score
# (:func:`_groups_by_score`): on the 4x3 sheets, chains through faint pieces (0.01-0.04 around a
# 0.98 product) made unions misplaced over neighbours; 0.3-0.7 all gave voc_ap50 0.955 against
# 0.952 with the probe's median, 0.964 against 0.958 with its lower quartile (bench/dense_loss.py).
PIECE_SCORE = 0.5
EDGE = 0.01  # a box edge within this share of the window side (at least 2 px) of an inner edge is cut


@dataclass(frozen=True)
class SliceSettings:
    """How :class:`~detect.infer.predict.Predictor` slices a photo.

    Attributes:
        mode: "auto" (slice when the photo is larger than the model needs, at the scale of its
            products), "off" (the whole photo is one input), or a window side in photo pixels.
        overlap: share of a window side neighbours share at least (products up to that size are
            seen whole by some window).
        full_frame: also run the whole photo as one input, for products too large for a window:
            its detections at least ``overlap`` of a window side are merged with the slices'.
        object_size: the products' side in the photo's pixels, when the user knows it ("auto"
            then skips the probe); None: measured.
        merge: "cut" (this module's merge), "nms" or "nmm" (for comparison).
        recentre: "auto", "on" or "off": read each confident detection of a sliced photo again
            in a window centred on it (:mod:`detect.infer.recentre`; "auto": for models whose
            products are large against their input).
    """

    mode: SliceMode = "auto"
    overlap: float = 0.25
    full_frame: bool = False
    object_size: Optional[float] = None
    merge: str = "cut"
    recentre: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.mode, str) and self.mode not in ("auto", "off"):
            raise ValueError(f"slice must be 'auto', 'off' or a side in pixels, got {self.mode!r}")
        if not isinstance(self.mode, str) and int(self.mode) < 32:
            raise ValueError(f"a slice side must be at least 32 pixels, got {self.mode}")
        if not 0.0 <= self.overlap < 0.9:
            raise ValueError(f"slice overlap must be in [0, 0.9), got {self.overlap}")
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {self.merge!r}")
        if self.recentre not in RECENTRES:
            raise ValueError(f"recentre must be one of {RECENTRES}, got {self.recentre!r}")
        if self.object_size is not None and not self.object_size > 0:
            raise ValueError(f"object size must be > 0 pixels, got {self.object_size}")


def parse_slice(value: str) -> SliceMode:
    """``--slice`` text -> "auto" | "off" | int side (ValueError with a sentence otherwise)."""
    v = str(value).strip().lower()
    if v in ("auto", "off"):
        return v
    try:
        side = int(v)
    except ValueError:
        raise ValueError(f"--slice takes auto, off or a window side in pixels, got {value!r}") from None
    if side < 32:
        raise ValueError(f"--slice: a window side must be at least 32 pixels, got {side}")
    return side


def _starts(length: int, side: int, overlap: float) -> list[int]:
    """Window starts along one axis: first at 0, last ending at ``length``, evenly spread, with
    neighbours sharing at least ``overlap * side``."""
    if length <= side:
        return [0]
    step = side * (1.0 - overlap)
    n = int(math.ceil((length - side) / step)) + 1
    return [int(round(i * (length - side) / (n - 1))) for i in range(n)]


def may_slice(h: int, w: int, imgsz: int, mode: SliceMode) -> bool:
    """Whether an ``h`` x ``w`` photo is a candidate for slicing under ``mode``: "auto", its
    longer side over 1.5 ``imgsz`` (smaller ones are one input: the model reads them at about the
    scale it learned); a fixed side, longer than that side; "off", never."""
    if mode == "off":
        return False
    return max(h, w) > (1.5 * imgsz if mode == "auto" else int(mode))


def slice_windows(h: int, w: int, side: int, overlap: float) -> np.ndarray:
    """int64[K, 4] xyxy windows of side ``side`` (cut to the photo where it is smaller) covering
    an ``h`` x ``w`` photo, row by row; one window, the whole photo, when it fits."""
    side = int(side)
    xs, ys = _starts(w, side, overlap), _starts(h, side, overlap)
    return np.asarray([[x, y, min(x + side, w), min(y + side, h)] for y in ys for x in xs], np.int64).reshape(-1, 4)


def probe_windows(h: int, w: int, imgsz: int, start: int = 0) -> np.ndarray:
    """int64[P, 4]: square windows of side ``start`` (default 2 imgsz), twice that, four times ...
    below the photo's shorter side, then the whole photo: the views whose detections tell the
    products' size. The closest size has five windows (the centre and the centres of the four
    quarters, where they differ), so its count of products does not hang on one spot of the
    photo; the others are centred. (Windows of imgsz itself only for a model that learned
    products larger than a third of its input, see :func:`probe_start`: smaller products fit
    whole in such a window, but then its few products say too little.)"""
    out, side = [], start or 2 * imgsz
    first = side
    while side < min(h, w):
        centres = [(w / 2, h / 2)]
        if side == first:
            centres += [(w * fx, h * fy) for fy in (0.25, 0.75) for fx in (0.25, 0.75)]
        for cx, cy in centres:
            x0 = int(min(max(round(cx - side / 2), 0), w - side))
            y0 = int(min(max(round(cy - side / 2), 0), h - side))
            if [x0, y0, x0 + side, y0 + side] not in out:
                out.append([x0, y0, x0 + side, y0 + side])
        side *= 2
    out.append([0, 0, w, h])
    return np.asarray(out, np.int64)


def probe_start(imgsz: int, object_size: float) -> int:
    """The side of the probe's closest windows: twice the input, or the input itself for a model
    that learned products larger than a third of it (trained on product photos: groceries, 116 of
    224 px). Seen from twice as far, such products come out at half the size the model knows and
    it misreads them (a 3x3 mosaic of groceries photos was probed at 421 px instead of 224, 0.59
    voc_ap50 against 0.73); the window's crop cuts most of them, so its cut boxes count too
    (``keep_cut`` of the plan)."""
    return imgsz if object_size >= imgsz / 3 else 2 * imgsz


def side_from_probes(sizes: Sequence[np.ndarray], scores: Sequence[np.ndarray], windows: np.ndarray,
                     min_score: float = 0.3, min_count: int = 3, quantile: float = SIZE_QUANTILE) -> Optional[float]:
    """The side in photo pixels of the photo's smaller products, from the probe views'
    detections: ``sizes[i]`` (float[n_i], sqrt(w * h) of each box, photo pixels) and
    ``scores[i]`` of window ``i``. The closest views (the smallest windows, pooled) with
    ``min_count`` confident detections (``min_score``) win: a view too far out reads only the
    largest products, or makes a few confident junk boxes of many small ones, and would say the
    products are bigger than they are. The ``quantile`` of their box sides is the answer (see
    :data:`SIZE_QUANTILE`); None when no size of view has enough."""
    windows = np.asarray(windows)
    area = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    for a in np.unique(area):
        pooled = [np.asarray(sizes[i])[np.asarray(scores[i]) >= min_score] for i in np.flatnonzero(area == a)]
        pooled = np.concatenate(pooled) if pooled else np.zeros(0)
        if len(pooled) >= min_count:
            return float(np.quantile(pooled, quantile))
    return None


def slice_side(h: int, w: int, imgsz: int, object_size: float, product_side: Optional[float]) -> Optional[int]:
    """The window side (photo pixels) that shows products of ``product_side`` photo pixels at
    ``object_size`` input pixels (None or 0 ``product_side``: the store-photo prior, a product
    ~0.4% of the photo's area); None when the whole photo as one input shows them at least
    :data:`READ_WHOLE` of that size (on synthetic 640-px photos, slicing those whose products
    come out smaller scored 0.946 voc_ap50 against 0.892 reading them all whole, bench/dense.py).
    At least ``imgsz`` (slices are never blown up)."""
    if not product_side:
        product_side = math.sqrt(PRIOR_AREA * h * w)
    object_size = max(object_size, 1.0)
    if product_side * imgsz / max(h, w) >= READ_WHOLE * object_size:
        return None
    return int(round(max(imgsz * product_side / object_size, imgsz)))


# ----------------------------------------------------------------------------- merging


def cut_edges(boxes: np.ndarray, windows: np.ndarray, h: int, w: int) -> np.ndarray:
    """bool[N, 4]: which edges (left, top, right, bottom) of each box lie on an inner edge of the
    window it was found in (``windows`` int[N, 4], one per box): within ``EDGE`` of the window
    side (at least 2 px) of a window edge that is not the photo's border."""
    b, win = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(windows, np.float32).reshape(-1, 4)
    side = np.maximum(win[:, 2] - win[:, 0], win[:, 3] - win[:, 1])
    m = np.maximum(2.0, EDGE * side)  # (N,)
    inner = np.stack([win[:, 0] > 0, win[:, 1] > 0, win[:, 2] < w, win[:, 3] < h], 1)  # (N, 4)
    near = np.stack([b[:, 0] - win[:, 0] <= m, b[:, 1] - win[:, 1] <= m,
                     win[:, 2] - b[:, 2] <= m, win[:, 3] - b[:, 3] <= m], 1)
    return inner & near


def _groups_by_score(linked: np.ndarray, scores: np.ndarray, piece_score: float) -> list[list[int]]:
    """Pieces of one product: groups of the graph ``linked`` (bool[n, n], symmetric), seeded by
    the best unassigned piece and grown along links through pieces scoring at least
    ``piece_score`` of the seed's score. A piece the detector is unsure of does not reshape a
    product it is sure of (at a 0.01 threshold every product has faint boxes around it, and a
    chain through them joins products, or stretches one over its neighbours); left alone, it is
    removed as a piece inside a larger box, or ranked below the products."""
    group = np.full(len(scores), -1)
    out: list[list[int]] = []
    for seed in np.argsort(-scores, kind="stable"):
        if group[seed] >= 0:
            continue
        group[seed], members, todo = len(out), [int(seed)], [int(seed)]
        while todo:
            nxt = np.flatnonzero(linked[todo.pop()] & (group < 0) & (scores >= piece_score * scores[seed]))
            group[nxt] = len(out)
            members += nxt.tolist()
            todo += nxt.tolist()
        out.append(members)
    return out


def _fuse_pieces(boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray, windows: np.ndarray,
                 piece_score: float = PIECE_SCORE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1 of :func:`merge_slices` for one class: pieces of one product (see the module
    docstring) become their union, chains of them too (a product across three windows), of
    pieces scoring at least ``piece_score`` of the best one (:func:`_groups_by_score`); returns
    the boxes, scores and cut flags after it. Pairs are found for all cut boxes at once."""
    idx = np.flatnonzero(cut.any(1))
    if len(idx) < 2:
        return boxes, scores, cut
    b, win, k = boxes[idx].astype(np.float32), windows[idx].astype(np.float32), cut[idx]
    pairs = np.zeros((len(idx), len(idx)), bool)  # pairs[i, j]: i cut at its far edge, j at its near edge
    for lo, hi in ((0, 2), (1, 3)):  # along x (left/right), then y (top/bottom)
        o_lo, o_hi = 1 - lo, 3 - lo  # the other axis
        zone = np.minimum(win[:, None, hi], win[None, :, hi]) - np.maximum(win[:, None, lo], win[None, :, lo])
        inter = np.minimum(b[:, None, hi], b[None, :, hi]) - np.maximum(b[:, None, lo], b[None, :, lo])
        side = b[:, hi] - b[:, lo]
        need = 0.5 * np.minimum(zone, np.minimum(side[:, None], side[None, :]))
        across = np.minimum(b[:, None, o_hi], b[None, :, o_hi]) - np.maximum(b[:, None, o_lo], b[None, :, o_lo])
        span = np.maximum(b[:, None, o_hi], b[None, :, o_hi]) - np.minimum(b[:, None, o_lo], b[None, :, o_lo])
        pairs |= (k[:, hi][:, None] & k[:, lo][None, :] & (win[None, :, lo] > win[:, None, lo]) & (zone > 0)
                  & (inter > 0) & (inter >= need) & (across >= 0.5 * span))
    groups = _groups_by_score(pairs | pairs.T, scores[idx], piece_score)
    alive = np.ones(len(boxes), bool)
    boxes, scores, cut = boxes.copy(), scores.copy(), cut.copy()
    for members in groups:
        if len(members) < 2:
            continue
        m = idx[members]
        keep = m[np.argmax(scores[m])]
        g = boxes[m]
        boxes[keep] = [g[:, 0].min(), g[:, 1].min(), g[:, 2].max(), g[:, 3].max()]
        # the union is cut where its outermost piece is: left by the leftmost piece's flag, and so on
        cut[keep] = [cut[m[np.argmin(g[:, 0])], 0], cut[m[np.argmin(g[:, 1])], 1],
                     cut[m[np.argmax(g[:, 2])], 2], cut[m[np.argmax(g[:, 3])], 3]]
        alive[m] = False
        alive[keep] = True
    return boxes[alive], scores[alive], cut[alive]


def _ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float[Na, Nb]: intersection over the area of each box of ``a``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = np.clip(a[:, 2] - a[:, 0], 1e-6, None) * np.clip(a[:, 3] - a[:, 1], 1e-6, None)
    return inter / area[:, None]


def merge_slices(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, windows: np.ndarray, h: int, w: int,
                 iou: float = 0.5, contain: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detections of all windows of one ``h`` x ``w`` photo (boxes in photo pixels, each
    with the window ``windows[i]`` it came from; the whole photo for a full-frame pass) as one
    set: ``(boxes float32[M, 4], scores float32[M], labels int64[M])``, by decreasing score.
    The three steps are in the module docstring."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    cut = cut_edges(boxes, windows, h, w)
    out_b, out_s, out_l = [], [], []
    for c in np.unique(labels):
        k = labels == c
        b, s, ct = _fuse_pieces(boxes[k], scores[k], cut[k], windows[k])
        is_cut = ct.any(1)
        if is_cut.any() and len(b) > 1:
            ios = _ios(b[is_cut], b)  # (C, n): how much of each cut box lies inside each box
            idx = np.flatnonzero(is_cut)
            ios[np.arange(len(idx)), idx] = 0.0  # not inside itself
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            bigger = area[None, :] > area[idx][:, None]  # the container is the larger box
            drop = idx[((ios >= contain) & bigger).any(1)]
            keep = np.ones(len(b), bool)
            keep[drop] = False
            b, s = b[keep], s[keep]
        out_b.append(b)
        out_s.append(s)
        out_l.append(np.full(len(b), c, np.int64))
    if not out_b:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    b, s, lab = np.concatenate(out_b), np.concatenate(out_s), np.concatenate(out_l)
    return _nms_fused(b, s, lab, iou)


def class_nms(b: np.ndarray, s: np.ndarray, lab: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise NMS of float32 boxes: the kept ``(boxes, scores, labels)``, by decreasing score."""
    keep = batched_nms(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(lab), iou).numpy()  # by decreasing score
    return b[keep], s[keep], lab[keep]


def _nms_fused(b: np.ndarray, s: np.ndarray, lab: np.ndarray, iou: float, share: float = PIECE_SCORE
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 3 of :func:`merge_slices`: class-wise NMS, each kept box then moved to the
    score-weighted mean of the boxes of its class it overlaps at ``iou`` (itself included) that
    score at least ``share`` of it. Slices are separate views of a product, and their mean places
    it better than the best view alone (on the 4x3 sheets a correct box lost to a misplaced one
    with a higher score, 0.006 voc_ap50; the mean: 0.964 -> 0.966, bench/dense_loss.py)."""
    kb, ks, kl = class_nms(b, s, lab, iou)
    out = kb.copy()
    for c in np.unique(kl):
        k, m = np.flatnonzero(kl == c), np.flatnonzero(lab == c)
        ov = box_iou(torch.from_numpy(kb[k]), torch.from_numpy(b[m])).numpy()  # (kept, all of class c)
        wt = ((ov >= iou) & (s[m][None, :] >= share * ks[k][:, None])) * s[m][None, :]  # itself always in
        tot = wt.sum(1, keepdims=True)
        out[k] = np.where(tot > 0, (wt @ b[m]) / np.maximum(tot, 1e-12), kb[k])  # 0: a zero-score or empty box stays
    return out.astype(np.float32), ks, kl


def nms_merge(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, windows: np.ndarray, h: int, w: int,
              iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain class-wise NMS over all windows' detections (for comparison)."""
    return class_nms(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1),
                np.asarray(labels, np.int64).reshape(-1), iou)


def nmm_merge(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, windows: np.ndarray, h: int, w: int,
              ios: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAHI's default postprocess (``GREEDYNMM`` with ``IOS`` 0.5), for comparison: by decreasing
    score, each kept box absorbs every not yet absorbed box of its class whose intersection over
    the smaller of the two reaches ``ios``, and becomes their union."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    used = np.zeros(len(boxes), bool)
    out_b, out_s, out_l = [], [], []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in order:
        if used[i]:
            continue
        used[i] = True
        same = np.flatnonzero(~used & (labels == labels[i]))
        box = boxes[i].copy()
        if len(same):
            inter = np.clip(np.minimum(boxes[same, 2:], boxes[i, 2:]) - np.maximum(boxes[same, :2], boxes[i, :2]), 0, None).prod(1)
            small = np.minimum(area[same], area[i])
            hit = same[inter / np.maximum(small, 1e-6) >= ios]
            used[hit] = True
            if len(hit):
                box = np.concatenate([boxes[hit], box[None]]).astype(np.float32)
                box = np.asarray([box[:, 0].min(), box[:, 1].min(), box[:, 2].max(), box[:, 3].max()], np.float32)
        out_b.append(box)
        out_s.append(scores[i])
        out_l.append(labels[i])
    n = len(out_b)
    return (np.asarray(out_b, np.float32).reshape(n, 4), np.asarray(out_s, np.float32).reshape(n),
            np.asarray(out_l, np.int64).reshape(n))


MERGE_FUNCTIONS = {"cut": merge_slices, "nms": nms_merge, "nmm": nmm_merge}
