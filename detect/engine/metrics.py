"""Detection metrics as pure functions on numpy arrays: Pascal VOC AP, COCO AP, confusion matrix.

Shorthand used below:
    I  images            G  ground-truth boxes of one image     K  detections of one image
    C  object classes (0-based, no background)                  D  detections of one class, all images

Inputs are per-image dicts of numpy arrays, in the same image order on both sides:
    ground truth  ``{"boxes": float[G, 4], "labels": int[G], "difficult": bool[G]}``
    detections    ``{"boxes": float[K, 4], "scores": float[K], "labels": int[K]}``
Boxes are float xyxy in 0-based pixels with an exclusive right/bottom edge (detect.structures),
so IoU has no VOC-devkit "+1": the conversion happened once, where the XML was read.

VOC protocol (``voc_evaluate``), as the official devkit's VOCevaldet.m:
  * per class, detections of all images are ranked by descending score (stable sort: ties keep
    image order, then the order within the image);
  * each detection takes the ground truth of the same image and class with the highest IoU, the
    difficult ones included; IoU >= ``iou_thr`` (0.5) is a hit:
      - a hit on a difficult box is ignored: neither TP nor FP;
      - a hit on a box not yet taken is a TP and takes it; on a box already taken it is a FP
        (a duplicate), even when another free box overlaps it less (the devkit does not look
        further; COCO does);
    below the threshold it is a FP;
  * ``npos`` counts the non-difficult boxes only;
  * AP: all-point interpolation (VOC2010+, area under the monotone precision envelope) and
    11-point interpolation (VOC2007: mean of max precision at recall >= 0, 0.1, ..., 1);
  * a class without any non-difficult ground truth has AP NaN and is left out of the mean,
    as VOC does (the devkit only scores classes present in the test set). A class with ground
    truth and no detections has AP 0.

COCO protocol (``coco_evaluate``) runs faster-coco-eval (or pycocotools when it is missing)
on the same boxes: difficult boxes become ``iscrowd=1`` (COCO's only ignore flag: a detection
covering one is neither TP nor FP). maxDets is ``[1, 10, max_det]``; the summary numbers are
read from ``eval["precision"]`` at the last maxDets index ourselves, because pycocotools'
``summarize()`` hard-codes maxDets=100.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

GT = dict  # {"boxes": float[G, 4], "labels": int[G], "difficult": bool[G]}
DET = dict  # {"boxes": float[K, 4], "scores": float[K], "labels": int[K]}


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of two sets of xyxy boxes, float[N, 4] x float[M, 4] -> float[N, M] (no +1)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision from a ranked list's recall/precision (float[D] each, recall
    non-decreasing). All-point interpolation (VOC2010+) or 11-point (VOC2007)."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = recall >= t - 1e-12
            ap += (precision[above].max() if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope: max to the right
    i = np.flatnonzero(mrec[1:] != mrec[:-1])  # points where recall changes
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _match_image_voc(
    boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, gt_difficult: np.ndarray, iou_thr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VOC matching of one image and class. Returns (scores float[K'], tp bool[K'], fp bool[K'])
    in descending score order, ignored detections (hits on difficult boxes) removed."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    k = len(scores)
    if len(gt_boxes) == 0:
        return scores, np.zeros(k, bool), np.ones(k, bool)
    iou = box_iou_np(boxes, gt_boxes)  # (K, G)
    jmax = iou.argmax(1)
    hit = iou[np.arange(k), jmax] >= iou_thr
    ignored = hit & gt_difficult[jmax]
    cand = np.flatnonzero(hit & ~ignored)  # in score order
    tp = np.zeros(k, bool)
    _, first = np.unique(jmax[cand], return_index=True)  # the first (best-scored) hit takes a box
    tp[cand[first]] = True
    keep = ~ignored
    return scores[keep], tp[keep], ~tp[keep]


def voc_evaluate(
    dets: Sequence[DET], gts: Sequence[GT], num_classes: int, iou_thr: float = 0.5
) -> dict[str, Any]:
    """Pascal VOC AP per class at one IoU threshold (see the module docstring for the protocol).

    Returns a dict with per-class lists (index = class):
        ``ap`` (all-point), ``ap07`` (11-point): float, NaN for a class without ground truth;
        ``n_gt`` (non-difficult boxes), ``n_difficult``, ``n_det`` (all detections of the class),
        ``tp``, ``fp`` (counts over all ranks), ``precision``/``recall``/``scores`` (float[D'] curves
        in rank order, ignored detections removed);
    and ``map`` / ``map07``: nanmean over classes (NaN when no class has ground truth).
    """
    if len(dets) != len(gts):
        raise ValueError(f"voc_evaluate: {len(dets)} detection entries for {len(gts)} images; need one each")
    per = {key: [] for key in ("ap", "ap07", "n_gt", "n_difficult", "n_det", "tp", "fp", "precision", "recall", "scores")}
    # Arrays converted once, and per class only the images with a detection of it are matched.
    g_lab = [np.asarray(gt["labels"]).reshape(-1) for gt in gts]
    g_box = [np.asarray(gt["boxes"], np.float64).reshape(-1, 4) for gt in gts]
    g_dif = [np.asarray(gt.get("difficult", np.zeros(len(lab), bool)), bool).reshape(-1) for gt, lab in zip(gts, g_lab)]
    d_lab = [np.asarray(det["labels"]).reshape(-1) for det in dets]
    d_box = [np.asarray(det["boxes"], np.float64).reshape(-1, 4) for det in dets]
    d_sco = [np.asarray(det["scores"], np.float64).reshape(-1) for det in dets]
    npos = _class_counts([lab[~dif] for lab, dif in zip(g_lab, g_dif)], num_classes)  # non-difficult boxes
    ndiff = _class_counts([lab[dif] for lab, dif in zip(g_lab, g_dif)], num_classes)
    ndet = _class_counts(d_lab, num_classes)
    images_of: list[list[int]] = [[] for _ in range(num_classes)]
    for i, lab in enumerate(d_lab):
        for c in np.unique(lab):
            if 0 <= c < num_classes:
                images_of[int(c)].append(i)
    for c in range(num_classes):
        s_all, tp_all, fp_all = [], [], []
        for i in images_of[c]:
            gmask, dmask = g_lab[i] == c, d_lab[i] == c
            s, tp, fp = _match_image_voc(d_box[i][dmask], d_sco[i][dmask], g_box[i][gmask], g_dif[i][gmask], iou_thr)
            s_all.append(s), tp_all.append(tp), fp_all.append(fp)
        scores = np.concatenate(s_all) if s_all else np.zeros(0)
        tp = np.concatenate(tp_all) if tp_all else np.zeros(0, bool)
        fp = np.concatenate(fp_all) if fp_all else np.zeros(0, bool)
        order = np.argsort(-scores, kind="stable")  # global rank; ties keep image order
        scores, tp, fp = scores[order], tp[order], fp[order]
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        recall = ctp / npos[c] if npos[c] > 0 else np.full(len(ctp), np.nan)
        if npos[c] > 0:
            ap, ap07 = voc_ap(recall, precision), voc_ap(recall, precision, use_07_metric=True)
        else:
            ap = ap07 = float("nan")
        for key, v in (("ap", ap), ("ap07", ap07), ("n_gt", int(npos[c])), ("n_difficult", int(ndiff[c])),
                       ("n_det", int(ndet[c])), ("tp", int(tp.sum())), ("fp", int(fp.sum())), ("precision", precision),
                       ("recall", recall), ("scores", scores)):
            per[key].append(v)
    per["map"] = _nanmean(per["ap"])
    per["map07"] = _nanmean(per["ap07"])
    return per


def _class_counts(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """How many of the labels (per image int[N]) are each class, int64[C] (others ignored)."""
    lab = np.concatenate([np.zeros(0, np.int64), *(np.asarray(x, np.int64) for x in labels)])
    return np.bincount(lab[(lab >= 0) & (lab < num_classes)], minlength=num_classes)


def _nanmean(values: Sequence[float]) -> float:
    v = np.asarray(values, np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def best_f1_point(precision: np.ndarray, recall: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Precision, recall and score threshold at the rank with the best F1 (NaN when empty)."""
    if len(scores) == 0 or not np.isfinite(recall).any():
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan"), "conf": float("nan")}
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.nanargmax(f1))
    return {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "conf": float(scores[i])}


# ----------------------------------------------------------------------------------------- COCO


def _coco_api():
    """(COCO, COCOeval) from faster-coco-eval, else pycocotools."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    except ImportError:  # pragma: no cover - faster-coco-eval is a dependency
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)  # (N, 4) xyxy -> xywh


def to_coco(dets: Sequence[DET], gts: Sequence[GT], sizes: Sequence[tuple[int, int]], num_classes: int):
    """COCO-format ground-truth and result dicts (ids 1-based; class c -> category c + 1)."""
    images = [{"id": i + 1, "height": int(h), "width": int(w)} for i, (h, w) in enumerate(sizes)]
    cats = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    gt_anns, dt_anns = [], []
    for i, (det, gt) in enumerate(zip(dets, gts)):
        labels = np.asarray(gt["labels"]).reshape(-1)
        diff = np.asarray(gt.get("difficult", np.zeros(len(labels), bool)), bool).reshape(-1)
        for b, c, d in zip(_xywh(gt["boxes"]), labels, diff):
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                            "bbox": [float(x) for x in b], "area": float(b[2] * b[3]), "iscrowd": int(d)})
        for b, c, s in zip(_xywh(det["boxes"]), np.asarray(det["labels"]).reshape(-1), np.asarray(det["scores"]).reshape(-1)):
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                            "bbox": [float(x) for x in b], "area": float(b[2] * b[3]), "score": float(s), "iscrowd": 0})
    gt_ds = {"images": images, "categories": cats, "annotations": gt_anns}
    dt_ds = {"images": images, "categories": cats, "annotations": dt_anns}
    return gt_ds, dt_ds


def coco_evaluate(
    dets: Sequence[DET], gts: Sequence[GT], sizes: Sequence[tuple[int, int]], num_classes: int, max_det: int = 100
) -> dict[str, Any]:
    """COCO box AP with maxDets ``[1, 10, max_det]`` (max_det up to 1000 or more).

    Args:
        sizes: (height, width) of every image, in the pixels the boxes are in.
    Returns:
        ``ap`` (AP@[.5:.95]), ``ap50``, ``ap75``, ``ap_small``/``ap_medium``/``ap_large``,
        ``ar`` (AR@[.5:.95] at max_det), ``per_class_ap`` / ``per_class_ap50`` (float per class,
        NaN without ground truth). Means skip classes without ground truth, as COCO does;
        a metric with nothing to average is NaN.
    """
    if len(dets) != len(gts) or len(gts) != len(sizes):
        raise ValueError(f"coco_evaluate: {len(dets)} detection entries, {len(gts)} ground truths, {len(sizes)} sizes")
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
    COCO, COCOeval = _coco_api()
    gt_ds, dt_ds = to_coco(dets, gts, sizes, num_classes)
    with contextlib.redirect_stdout(io.StringIO()):  # both tools print progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset, coco_dt.dataset = gt_ds, dt_ds
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = [im["id"] for im in gt_ds["images"]]
        ev.params.catIds = [c["id"] for c in gt_ds["categories"]]
        ev.params.maxDets = sorted({1, min(10, max_det), int(max_det)})
        ev.evaluate()
        ev.accumulate()
    p = ev.params
    prec = np.asarray(ev.eval["precision"])  # (T, R, K, A, M); -1 where a class has no GT
    rec = np.asarray(ev.eval["recall"])  # (T, K, A, M)
    m = len(p.maxDets) - 1
    t50 = int(np.flatnonzero(np.isclose(p.iouThrs, 0.5))[0])
    t75 = int(np.flatnonzero(np.isclose(p.iouThrs, 0.75))[0])
    area = {lbl: i for i, lbl in enumerate(p.areaRngLbl)}

    def mean_valid(x: np.ndarray) -> float:
        v = x[x > -1]
        return float(v.mean()) if v.size else float("nan")

    a = area["all"]
    return {
        "ap": mean_valid(prec[:, :, :, a, m]),
        "ap50": mean_valid(prec[t50, :, :, a, m]),
        "ap75": mean_valid(prec[t75, :, :, a, m]),
        "ap_small": mean_valid(prec[:, :, :, area["small"], m]),
        "ap_medium": mean_valid(prec[:, :, :, area["medium"], m]),
        "ap_large": mean_valid(prec[:, :, :, area["large"], m]),
        "ar": mean_valid(rec[:, :, a, m]),
        "max_dets": [int(x) for x in p.maxDets],
        "per_class_ap": [mean_valid(prec[:, :, k, a, m]) for k in range(num_classes)],
        "per_class_ap50": [mean_valid(prec[t50, :, k, a, m]) for k in range(num_classes)],
    }


# ------------------------------------------------------------------------------ confusion matrix


def confusion_matrix(
    dets: Sequence[DET], gts: Sequence[GT], num_classes: int, conf_thr: float = 0.25, iou_thr: float = 0.45
) -> np.ndarray:
    """Detection confusion matrix, int64[C + 1, C + 1]: rows = true class, columns = predicted
    class, index C = background (row C: false positives, column C: missed boxes).

    Detections with score >= ``conf_thr`` are matched to ground truth class-agnostically, one to
    one, greedily by descending IoU (> ``iou_thr``), as ultralytics does. Difficult boxes are left
    out; an unmatched detection overlapping a difficult box by more than ``iou_thr`` is ignored.
    """
    cm = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    bg = num_classes
    for det, gt in zip(dets, gts):
        keep = np.asarray(det["scores"]).reshape(-1) >= conf_thr
        d_boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)[keep]
        d_labels = np.asarray(det["labels"]).reshape(-1)[keep].astype(np.int64)
        g_all = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
        g_lab_all = np.asarray(gt["labels"]).reshape(-1).astype(np.int64)
        diff = np.asarray(gt.get("difficult", np.zeros(len(g_lab_all), bool)), bool).reshape(-1)
        g_boxes, g_labels = g_all[~diff], g_lab_all[~diff]
        iou = box_iou_np(d_boxes, g_boxes)  # (K, G)
        di, gi = np.nonzero(iou > iou_thr)
        order = np.argsort(-iou[di, gi], kind="stable")
        di, gi = di[order], gi[order]
        d_used = np.zeros(len(d_boxes), bool)
        g_used = np.zeros(len(g_boxes), bool)
        for d, g in zip(di, gi):  # greedy one-to-one by IoU
            if not d_used[d] and not g_used[g]:
                d_used[d] = g_used[g] = True
                cm[g_labels[g], d_labels[d]] += 1
        np.add.at(cm, (g_labels[~g_used], bg), 1)
        free = ~d_used
        if diff.any() and free.any():
            free &= ~(box_iou_np(d_boxes, g_all[diff]).max(1) > iou_thr)
        np.add.at(cm, (bg, d_labels[free]), 1)
    return cm
