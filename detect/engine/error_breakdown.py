"""Where the AP goes: detection errors split by type, as the TIDE toolbox does (Bolya et al.,
"TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020), on VOC AP50.

Shorthand: tf = 0.5 (foreground IoU, the AP threshold), tb = 0.1 (background IoU); "same" and
"other" mean ground truth of the detection's class or of another class, in the same image.

Every detection, per class in descending score order (the VOC matching of
:mod:`detect.engine.metrics`), is one of:
    tp     IoU >= tf with a same-class box not yet taken (it takes it)
    ignored IoU >= tf with a same-class ``difficult`` box (neither TP nor FP, as in VOC)
    dupe   IoU >= tf with a same-class box already taken by a higher-scoring detection
    cls    IoU >= tf with an other-class box only: right place, wrong class
    loc    tb <= IoU < tf with a same-class box: right class, poorly localised
    both   tb <= IoU < tf with an other-class box only: wrong class and poorly localised
    bkg    IoU < tb with every box: background detected as an object
and every non-difficult box that no detection takes, and that no ``cls``/``loc`` detection covers,
is ``missed``.

The cost of each type is TIDE's dAP: AP50 (mean over classes, all-point) after fixing only
the errors of that type, minus AP50 as measured. The fixes (oracles): ``cls`` takes the class of
the box it covers, ``loc`` takes the box of the same-class box it overlaps most (each then is a
TP, or is dropped when the box is already taken); ``both``, ``dupe`` and ``bkg`` detections are
dropped; ``missed`` boxes leave the ground truth. The dAPs do not add up to 1 - AP exactly (the
errors interact), but rank what to fix first.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detect.engine.metrics import DET, GT, box_iou_np, voc_ap

TF, TB = 0.5, 0.1
ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "missed")
_TP, _IGN, _DUPE, _CLS, _LOC, _BOTH, _BKG = range(7)
_NAMES = {_DUPE: "dupe", _CLS: "cls", _LOC: "loc", _BOTH: "both", _BKG: "bkg"}


def _arrays(dets: Sequence[DET], gts: Sequence[GT]) -> tuple[list, list]:
    d = [(np.asarray(x["boxes"], np.float64).reshape(-1, 4), np.asarray(x["scores"], np.float64).reshape(-1),
          np.asarray(x["labels"], np.int64).reshape(-1)) for x in dets]
    g = []
    for x in gts:
        lab = np.asarray(x["labels"], np.int64).reshape(-1)
        dif = np.asarray(x.get("difficult", np.zeros(len(lab), bool)), bool).reshape(-1)
        g.append((np.asarray(x["boxes"], np.float64).reshape(-1, 4), lab, dif))
    return d, g


def classify_detections(dets: Sequence[DET], gts: Sequence[GT]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The error type of every detection and which boxes are taken.

    Matching is per image (a box belongs to one image and one class), so each image is done in a
    few array operations: within it, detections in descending score order (stable), and the
    first one to hit a free box takes it, as the VOC matcher does.

    Returns per image: ``kind`` int[K] (one of the module's codes), ``target`` int[K] (the box
    a tp/ignored/dupe/cls/loc/both detection refers to, -1 for bkg) and ``taken`` bool[G].
    """
    d, g = _arrays(dets, gts)
    kinds, targets, takens = [], [], []
    for (boxes, scores, dlab), (gboxes, glab, gdif) in zip(d, g):
        k, n = len(scores), len(glab)
        kind = np.full(k, _BKG, np.int64)
        target = np.full(k, -1, np.int64)
        taken = np.zeros(n, bool)
        if k and n:
            iou = box_iou_np(boxes, gboxes)  # (K, G)
            same = dlab[:, None] == glab[None, :]
            iou_same, iou_other = np.where(same, iou, -1.0), np.where(same, -1.0, iou)
            best_same, best_other = iou_same.argmax(1), iou_other.argmax(1)
            s_iou = iou_same[np.arange(k), best_same]
            o_iou = iou_other[np.arange(k), best_other]
            hit = s_iou >= TF
            both = ~hit & (o_iou < TF) & (s_iou < TB) & (o_iou >= TB)
            loc = ~hit & (o_iou < TF) & (s_iou >= TB)
            cls = ~hit & (o_iou >= TF)
            kind[both], target[both] = _BOTH, best_other[both]
            kind[loc], target[loc] = _LOC, best_same[loc]
            kind[cls], target[cls] = _CLS, best_other[cls]
            target[hit] = best_same[hit]
            ign = hit & gdif[best_same]
            kind[ign] = _IGN
            order = np.argsort(-scores, kind="stable")
            cand = order[(hit & ~ign)[order]]  # hits on free-able boxes, best score first
            kind[cand] = _DUPE
            _, first = np.unique(best_same[cand], return_index=True)
            kind[cand[first]] = _TP
            taken[best_same[cand[first]]] = True
        kinds.append(kind)
        targets.append(target)
        takens.append(taken)
    return kinds, targets, takens


def _ap_per_class(dets: Sequence[DET], gts: Sequence[GT], num_classes: int, npos_minus: np.ndarray) -> np.ndarray:
    """VOC all-point AP50 per class from the classification above (NaN: no ground truth)."""
    kind, _, _ = classify_detections(dets, gts)
    d, g = _arrays(dets, gts)
    npos = np.zeros(num_classes)
    for _, lab, dif in g:
        npos += np.bincount(lab[~dif], minlength=num_classes)[:num_classes]
    npos = npos - npos_minus
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        sc = [s[lab == c] for (_, s, lab) in d]
        kd = [k[lab == c] for (_, _, lab), k in zip(d, kind)]
        scores = np.concatenate(sc) if sc else np.zeros(0)
        kinds = np.concatenate(kd) if kd else np.zeros(0, np.int64)
        keep = kinds != _IGN
        scores, kinds = scores[keep], kinds[keep]
        if npos[c] <= 0:
            continue
        o = np.argsort(-scores, kind="stable")
        tp = np.cumsum(kinds[o] == _TP)
        fp = np.cumsum(kinds[o] != _TP)
        ap[c] = voc_ap(tp / npos[c], tp / np.maximum(tp + fp, np.finfo(np.float64).eps)) if len(o) else 0.0
    return ap


def _fixed(dets: Sequence[DET], gts: Sequence[GT], kind, target, fix: str) -> list[DET]:
    """Detections with the errors of type ``fix`` corrected (see the module docstring)."""
    out = []
    code = {v: k for k, v in _NAMES.items()}[fix]
    for det, gt, k, t in zip(dets, gts, kind, target):
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4).copy()
        scores = np.asarray(det["scores"], np.float64).reshape(-1)
        labels = np.asarray(det["labels"], np.int64).reshape(-1).copy()
        hit = k == code
        keep = np.ones(len(scores), bool)
        if fix == "cls":
            labels[hit] = np.asarray(gt["labels"], np.int64).reshape(-1)[t[hit]]
        elif fix == "loc":
            boxes[hit] = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)[t[hit]]
        else:
            keep = ~hit
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep], "_fixed": hit[keep]})
    # a fixed detection that now duplicates a taken box is dropped (TIDE suppresses it)
    k2, _, _ = classify_detections(out, gts)
    return [{"boxes": o["boxes"][m], "scores": o["scores"][m], "labels": o["labels"][m]}
            for o, kk in zip(out, k2) for m in [~(o["_fixed"] & (kk == _DUPE))]]


def error_breakdown(dets: Sequence[DET], gts: Sequence[GT], classes: Sequence[str], weakest: int = 5) -> dict[str, Any]:
    """TIDE-style breakdown of VOC AP50 for ``classes`` (per-image ``dets``/``gts`` as in
    :mod:`detect.engine.metrics`).

    Returns:
        ``ap50``: mean AP50 as measured; ``lost``: 1 - ap50;
        ``dap``: error type -> mean AP50 gained by fixing only that type;
        ``counts``: error type -> how many detections (boxes for ``missed``);
        ``per_class``: name -> {"ap50", "dap": {type: gain}, "counts", "main"} (``main``: the type
        whose fix gains the most; "none" when no fix gains anything, as for a class at AP 1);
        ``weakest``: the ``weakest`` classes by AP50 (with ground truth), each
        {"class", "ap50", "main", "main_dap"}.
    """
    if len(dets) != len(gts):
        raise ValueError(f"error_breakdown: {len(dets)} detection entries for {len(gts)} images; need one each")
    k = len(classes)
    kind, target, taken = classify_detections(dets, gts)
    base = _ap_per_class(dets, gts, k, np.zeros(k))
    counts = {t: np.zeros(k, np.int64) for t in ERROR_TYPES}
    for (det, kk) in zip(dets, kind):
        lab = np.asarray(det["labels"], np.int64).reshape(-1)
        for code, name in _NAMES.items():
            counts[name] += np.bincount(lab[kk == code], minlength=k)[:k]
    missed = np.zeros(k)
    for gt, kk, tt, tk in zip(gts, kind, target, taken):
        lab = np.asarray(gt["labels"], np.int64).reshape(-1)
        dif = np.asarray(gt.get("difficult", np.zeros(len(lab), bool)), bool).reshape(-1)
        covered = np.zeros(len(lab), bool)
        covered[tt[(kk == _CLS) | (kk == _LOC)]] = True
        m = ~tk & ~dif & ~covered
        missed += np.bincount(lab[m], minlength=k)[:k]
    counts["missed"] = missed.astype(np.int64)
    per_type = {}
    for t in ERROR_TYPES:
        if t == "missed":
            fixed = _ap_per_class(dets, gts, k, missed)
        else:
            fixed = _ap_per_class(_fixed(dets, gts, kind, target, t), gts, k, np.zeros(k))
        per_type[t] = fixed - base
    mean = lambda a: float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")  # noqa: E731
    per_class = {}
    for c, name in enumerate(classes):
        if not np.isfinite(base[c]):
            continue
        dap = {t: float(np.nan_to_num(per_type[t][c])) for t in ERROR_TYPES}
        per_class[name] = {"ap50": float(base[c]), "dap": dap, "counts": {t: int(counts[t][c]) for t in ERROR_TYPES},
                           "main": max(dap, key=dap.get) if max(dap.values()) > 0 else "none"}
    ranked = sorted(per_class, key=lambda n: per_class[n]["ap50"])[:weakest]
    ap50 = mean(base)
    return {
        "ap50": ap50, "lost": 1.0 - ap50 if np.isfinite(ap50) else float("nan"),
        "dap": {t: mean(np.where(np.isfinite(base), np.nan_to_num(per_type[t]), np.nan)) for t in ERROR_TYPES},
        "counts": {t: int(counts[t].sum()) for t in ERROR_TYPES},
        "per_class": per_class,
        "weakest": [{"class": n, "ap50": per_class[n]["ap50"], "main": per_class[n]["main"],
                     "main_dap": per_class[n]["dap"].get(per_class[n]["main"], 0.0)} for n in ranked],
    }


def format_breakdown(b: dict[str, Any]) -> str:
    """A few printable lines: the dAP of each error type and the weakest classes."""
    lines = [f"errors (TIDE, AP50 {b['ap50']:.4f}, lost {b['lost']:.4f}): dAP when fixed / count",
             "  " + "  ".join(f"{t} {b['dap'][t]:+.4f}/{b['counts'][t]}" for t in ERROR_TYPES)]
    if b["weakest"]:
        lines.append("  weakest classes: " + ", ".join(
            f"{w['class']} {w['ap50']:.3f} ({w['main']} {w['main_dap']:+.3f})" for w in b["weakest"]))
    return "\n".join(lines)
