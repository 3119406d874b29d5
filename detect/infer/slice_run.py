"""Running a detector over slices: :class:`~detect.infer.predict.Predictor`'s side of sliced
inference, as functions of a ``detect`` callable (``list[BGR image] -> list[Detections]``, one
network call on images read whole). The geometry, the scale rule and the merges they use are
the pure functions of :mod:`detect.infer.slicing`.

- :func:`plan`: the slice side of each image ("auto": a probe in one batch), and the probe's
  whole-photo detections of the images it says to read whole (no second pass for them).
- :func:`run`: every image's windows through ``detect`` in batches, mapped back and merged.
- :func:`recentre`: the merged detections of sliced images read again, each in a window
  centred on it (:mod:`detect.infer.recentre`).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from detect.infer.recentre import RECENTRE_SCORE, centred_windows, merge_recentred
from detect.infer.slicing import (MERGE_FUNCTIONS, SliceSettings, cut_edges, may_slice, probe_start, probe_windows,
                                  side_from_probes, slice_side, slice_windows)
from detect.structures import Detections

Detect = Callable[[Sequence[np.ndarray]], list[Detections]]


def in_batches(detect: Detect, crops: Sequence[np.ndarray], batch: int) -> list[Detections]:
    """``detect`` over ``crops``, ``batch`` at a time (a batch of photos' windows in one call
    could be hundreds of inputs: memory grows with them, and no CPU runs them faster per input)."""
    out: list[Detections] = []
    for lo in range(0, len(crops), max(1, batch)):
        out += detect(crops[lo:lo + max(1, batch)])
    return out


def plan(images: Sequence[np.ndarray], st: SliceSettings, imgsz: int, object_size: float, detect: Detect,
         batch: int = 16) -> tuple[list[Optional[int]], list[Optional[Detections]]]:
    """(slice sides, whole-photo detections): ``st.mode`` "off" reads every image whole, a side
    slices images larger than it; "auto" slices images larger than 1.5 ``imgsz`` so their
    products come out ``object_size`` input pixels (0: ``imgsz / 5``, what training's crops
    show), their size in the photo given (``st.object_size``) or measured by a probe: centre
    crops of growing size and the whole photo (:func:`~detect.infer.slicing.probe_windows`), all
    images' views together, ``batch`` per network call; the closest views' confident, uncut detections give it
    (:func:`~detect.infer.slicing.side_from_probes`). An image the answer says to read whole
    comes back with the probe's whole-photo detections."""
    S = imgsz
    sides: list[Optional[int]] = [None] * len(images)
    whole: list[Optional[Detections]] = [None] * len(images)
    big = [i for i, im in enumerate(images) if may_slice(*im.shape[:2], S, st.mode)]
    if st.mode != "auto":  # "off" (nothing is big) or a fixed side
        return [int(st.mode) if i in big else None for i in range(len(images))], whole
    learned = object_size or S / 5  # older checkpoints: about what training showed (crop_object)
    if st.object_size:
        for i in big:
            sides[i] = slice_side(*images[i].shape[:2], S, learned, st.object_size)
        return sides, whole
    start = probe_start(S, learned)
    probes = [(i, probe_windows(*images[i].shape[:2], S, start)) for i in big]  # centre crops, then the whole photo
    dets = in_batches(detect, [images[i][y0:y1, x0:x1] for i, wins in probes for x0, y0, x1, y1 in wins], batch)
    k = 0
    for i, wins in probes:
        part, k = dets[k:k + len(wins)], k + len(wins)
        h, w = images[i].shape[:2]
        # products a crop cut are left out, but for crops of the input's own side (probe_start)
        inner = [~cut_edges(d.boxes + win[[0, 1, 0, 1]].astype(np.float32), np.repeat(win[None], len(d), 0), h, w).any(1)
                 | (win[2] - win[0] <= S) for d, win in zip(part, wins)]
        sizes = [np.sqrt(np.prod(d.boxes[m, 2:] - d.boxes[m, :2], axis=1)) for d, m in zip(part, inner)]
        sides[i] = slice_side(h, w, S, learned, side_from_probes(sizes, [d.scores[m] for d, m in zip(part, inner)], wins))
        whole[i] = part[-1] if sides[i] is None else None  # read whole: the probe's last view is the answer
    return sides, whole


def run(images: Sequence[np.ndarray], sides: Sequence[Optional[int]], whole: Sequence[Optional[Detections]],
        st: SliceSettings, detect: Detect, batch: int, classes: list[str], max_det: int) -> list[Detections]:
    """Every image's windows (one for an image read whole; none for those ``whole`` holds the
    detections of) through ``detect`` ``batch`` at a time, each window's detections mapped to its
    image's pixels and, for sliced images, merged (:data:`~detect.infer.slicing.MERGE_FUNCTIONS`),
    at most ``max_det`` per image."""
    plans = []
    for im, side, done in zip(images, sides, whole):
        h, w = im.shape[:2]
        wins = (np.zeros((0, 4), np.int64) if done is not None  # read whole by the probe already
                else slice_windows(h, w, side, st.overlap) if side else np.asarray([[0, 0, w, h]], np.int64))
        if side and st.full_frame and len(wins) > 1:
            wins = np.concatenate([wins, np.asarray([[0, 0, w, h]], np.int64)])
        plans.append(wins)
    dets = in_batches(detect, [im[y0:y1, x0:x1] for im, wins in zip(images, plans) for x0, y0, x1, y1 in wins], batch)
    out, k = [], 0
    merge = MERGE_FUNCTIONS[st.merge]
    for im, wins, done in zip(images, plans, whole):
        part, k = dets[k:k + len(wins)], k + len(wins)
        if done is not None or len(wins) == 1:
            out.append(done if done is not None else part[0])
            continue
        h, w = im.shape[:2]
        if st.full_frame:  # the whole-photo pass adds only products too big for a window:
            d, side = part[-1], wins[0, 2] - wins[0, 0]  # smaller ones are read better, and whole, by the slices
            big = np.max(d.boxes[:, 2:] - d.boxes[:, :2], axis=1) >= st.overlap * side if len(d) else np.zeros(0, bool)
            part[-1] = Detections(d.boxes[big], d.scores[big], d.labels[big], classes)
        boxes = np.concatenate([d.boxes + np.float32([x0, y0, x0, y0]) for d, (x0, y0, _, _) in zip(part, wins)])
        owner = np.repeat(wins, [len(d.boxes) for d in part], axis=0)  # (N, 4) the window of each box
        b, sc, lab = merge(boxes, np.concatenate([d.scores for d in part]), np.concatenate([d.labels for d in part]),
                           owner, h, w)
        b = np.minimum(np.maximum(b, 0), np.float32([w, h, w, h]))
        out.append(Detections(b[:max_det], sc[:max_det], lab[:max_det], classes))
    return out


def recentre(images: Sequence[np.ndarray], dets: Sequence[Detections], sides: Sequence[Optional[int]], detect: Detect,
             batch: int, classes: list[str], max_det: int, score: float = RECENTRE_SCORE) -> list[Detections]:
    """The sliced images' (``sides[i]`` not None) detections scoring at least ``score``, each
    read again in a window of its image's slice side centred on it, all images' windows
    ``batch`` at a time; the centred views replace the detections they find
    (:func:`~detect.infer.recentre.merge_recentred`), at most ``max_det`` per image. Images
    read whole come back as they are."""
    plans = []
    for im, d, side in zip(images, dets, sides):
        src = np.flatnonzero(d.scores >= score) if side else np.zeros(0, np.int64)  # read whole: nothing to re-read
        plans.append((src, *centred_windows(d.boxes[src], side or 0, *im.shape[:2])))  # no boxes: no windows
    views = in_batches(detect, [im[y0:y1, x0:x1] for im, (_, wins, _) in zip(images, plans) for x0, y0, x1, y1 in wins],
                       batch)
    out, k = [], 0
    for d, (src, wins, owner) in zip(dets, plans):
        part, k = views[k:k + len(wins)], k + len(wins)
        if not len(src):
            out.append(d)
            continue
        shifted = [(v.boxes + np.float32([x0, y0, x0, y0]), v.scores, v.labels) for v, (x0, y0, _, _) in zip(part, wins)]
        b, s, lab = merge_recentred(d.boxes, d.scores, d.labels, src, owner, shifted)
        out.append(Detections(b[:max_det], s[:max_det], lab[:max_det], classes))
    return out
