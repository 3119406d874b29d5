#!/usr/bin/env python3
"""Where sliced 4x3 sheets lose against single photos (``bench/dense.py`` part a), with evidence.

    python bench/dense_loss.py                      # shipped weights, 120 photos, 10 sheets
    python bench/dense_loss.py --photos 24 --merge nms

Runs the single photos and the sheets through :class:`~detect.infer.predict.Predictor` (``--slice
auto``), keeping every slice's raw detections beside the merged ones, then:

1. matches the sheet detections to the truth the VOC way (by score, IoU 0.5, one detection per
   box) and sorts every lost true box and every false positive into where it lies: cut by a
   slice border in every window that sees it (``cut_always``) or only in some (``cut_some``), on
   its photo's border inside the sheet (``cell_border``: next to grey or another photo), at the
   sheet's edge; its side against the slice side; for false positives, what they are (a cut
   piece of a product that survived the merge, a union of pieces that is not one product, a
   whole duplicate, a wrong class, a misplaced box, background);
2. prices each kind: voc_ap50 with those false positives removed, or with those lost boxes
   ignored (marked difficult), against the sheets' score: the AP each kind costs;
3. scores both with the true boxes on a photo's border inside the sheet ignored (slivers of
   products that end where one photo meets the next: the tiling's own difficulty, absent from
   a store photo), and each cell as an image (the sheet's detections whose centre lies in the cell, shifted
   back to the photo) against the single photos, and lists the photos that lose most.

Prints tables and writes JSON (default ``bench/out/dense_loss.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dense import _det, _gt, tile  # noqa: E402  (bench/dense.py: the same photos and sheets)
from detect.engine.metrics import box_iou_np as _iou  # noqa: E402
from detect.infer.slicing import _ios  # noqa: E402  (intersection over the first box's area)

CELL = 640
EDGE_PX = 2.0  # a box edge this close to a border lies on it
SIZE_BINS = ((0.0, 0.25, "< 1/4 side"), (0.25, 0.5, "1/4-1/2 side"), (0.5, 9.9, ">= 1/2 side"))


def sliced_run(pred, image: np.ndarray) -> dict:
    """``pred.predict([image])`` with what slicing did on the way: the slice side (None: read
    whole), every window the network ran after the probe, and every window's raw detections in
    photo pixels (``raw_owner``: the window of each box). Windows are read off the crops
    themselves (views into ``image``), so any grid the slicing runs is seen as it ran."""
    from detect.infer import slice_run

    seen: dict = {}
    plan = slice_run.plan
    calls: list = []

    def spy_plan(*a, **k):
        seen["plan"], seen["after_probe"] = plan(*a, **k), len(calls)
        return seen["plan"]

    detect = pred._detect
    row, col = image.strides[:2]

    def spy_detect(crops):
        out = detect(crops)
        for c, d in zip(crops, out):
            off = c.__array_interface__["data"][0] - image.__array_interface__["data"][0]
            y0, x0 = off // row, (off % row) // col
            calls.append((np.asarray([x0, y0, x0 + c.shape[1], y0 + c.shape[0]], np.int64), d))
        return out

    slice_run.plan, pred._detect = spy_plan, spy_detect
    try:
        merged = pred.predict([image])[0]
    finally:
        slice_run.plan = plan
        del pred._detect
    h, w = image.shape[:2]
    side = seen["plan"][0][0]
    ran = calls[seen["after_probe"]:] if side else [(np.asarray([0, 0, w, h], np.int64), merged)]
    wins = np.stack([win for win, _ in ran])
    raw = [d for _, d in ran]
    fine = wins[(wins[:, 2] - wins[:, 0] == min(side, w)) & (wins[:, 3] - wins[:, 1] == min(side, h))] if side else wins
    boxes = np.concatenate([d.boxes + np.float32(win[[0, 1, 0, 1]]) for win, d in ran])
    owner = np.repeat(wins, [len(d) for d in raw], axis=0)
    return {"side": side, "windows": fine, "all_windows": wins, "merged": merged, "raw_boxes": boxes, "raw_owner": owner,
            "raw_scores": np.concatenate([d.scores for d in raw]), "raw_labels": np.concatenate([d.labels for d in raw])}


def merge_fate(run: dict, r: int, h: int, w: int) -> str:
    """Which step of :func:`~detect.infer.slicing.merge_slices` removed raw box ``r`` (a slice's
    correct box of a true box the merged set lost): fused into a union, dropped as a cut piece
    inside a larger box, or suppressed by NMS (or moved to the mean of its views); or it is there, and the VOC matching gave it to a
    neighbouring true box it overlaps more."""
    from detect.infer.slicing import _fuse_pieces, cut_edges

    box = run["raw_boxes"][r]
    merged = run["merged"].boxes if hasattr(run["merged"], "boxes") else run["merged"]["boxes"]
    if (np.abs(merged - np.clip(box, 0, [w, h, w, h])).max(1) < 1e-3).any():
        return "kept, but VOC matched it to another true box"
    c = run["raw_labels"][r]
    k = run["raw_labels"] == c
    b, s, o = run["raw_boxes"][k], run["raw_scores"][k], run["raw_owner"][k]
    fb, fs, fc = _fuse_pieces(b, s, cut_edges(b, o, h, w), o)
    same = np.flatnonzero(np.abs(fb - box).max(1) < 1e-3)
    if not len(same):
        return "fused into a union (step 1)"
    i = int(same[0])
    if fc[i].any():
        inside = _ios(fb[i:i + 1], fb)[0]
        inside[i] = 0
        area = np.prod(fb[:, 2:] - fb[:, :2], 1)
        if ((inside >= 0.7) & (area > area[i])).any():
            return "cut, inside a larger box (step 2)"
    return "suppressed by NMS, or moved by its mean (step 3)"


def match(det: dict, gt: dict) -> tuple[np.ndarray, np.ndarray]:
    """VOC matching of one image: (status per detection: "tp", "dup", "fp", "ignored"; best score
    of the detection matched to each true box, -1 when lost)."""
    order = np.argsort(-det["scores"], kind="stable")
    status = np.full(len(det["scores"]), "fp", object)
    found = np.full(len(gt["boxes"]), -1.0)
    iou = _iou(det["boxes"], gt["boxes"])
    iou[det["labels"][:, None] != gt["labels"][None, :]] = -1
    for i in order:
        if not len(gt["boxes"]):
            break
        j = int(iou[i].argmax())
        if iou[i, j] < 0.5:
            continue
        if gt["difficult"][j]:
            status[i] = "ignored"
        elif found[j] < 0:
            status[i], found[j] = "tp", det["scores"][i]
        else:
            status[i] = "dup"
    return status, found


def _inside(boxes: np.ndarray, wins: np.ndarray) -> np.ndarray:
    """bool[N, K]: box n lies whole (EDGE_PX slack) in window k; bool[N, K] the box overlaps it."""
    b, w = boxes[:, None, :], wins[None, :, :].astype(np.float32)
    whole = ((b[..., 0] >= w[..., 0] - EDGE_PX) & (b[..., 1] >= w[..., 1] - EDGE_PX)
             & (b[..., 2] <= w[..., 2] + EDGE_PX) & (b[..., 3] <= w[..., 3] + EDGE_PX))
    touch = (np.minimum(b[..., 2], w[..., 2]) > np.maximum(b[..., 0], w[..., 0])) & \
            (np.minimum(b[..., 3], w[..., 3]) > np.maximum(b[..., 1], w[..., 1]))
    return whole, touch


def where(boxes: np.ndarray, run: dict, cells: np.ndarray, h: int, w: int) -> list[dict]:
    """Where each box lies on a sheet: slice (cut_always / cut_some / whole), cell border (on
    its photo's border inside the sheet, or across two cells), sheet edge, size bin against the side."""
    out = []
    if not len(boxes):
        return out
    whole, touch = _inside(boxes, run["windows"])
    side = run["side"] or max(h, w)
    for n, b in enumerate(boxes):
        s = "whole" if whole[n][touch[n]].all() else "cut_some" if whole[n].any() else "cut_always"
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        cell = cells[(cells[:, 0] <= cx) & (cx < cells[:, 0] + CELL) & (cells[:, 1] <= cy) & (cy < cells[:, 1] + CELL)]
        on_cell = False
        if len(cell):
            x0, y0, pw, ph = cell[0]
            inner = [(b[0] - x0 <= EDGE_PX and x0 > 0), (b[1] - y0 <= EDGE_PX and y0 > 0),
                     (x0 + pw - b[2] <= EDGE_PX and x0 + pw < w), (y0 + ph - b[3] <= EDGE_PX and y0 + ph < h)]
            across = b[0] < x0 - EDGE_PX or b[1] < y0 - EDGE_PX or b[2] > x0 + pw + EDGE_PX or b[3] > y0 + ph + EDGE_PX
            on_cell = any(inner) or across
        sheet = min(b[0], b[1], w - b[2], h - b[3]) <= EDGE_PX
        r = max(b[2] - b[0], b[3] - b[1]) / side
        size = next(name for lo, hi, name in SIZE_BINS if lo <= r < hi)
        out.append({"slice": s, "cell_border": bool(on_cell), "sheet_edge": bool(sheet), "size": size})
    return out


def fp_kind(i: int, det: dict, gt: dict, status: np.ndarray, run: dict, h: int, w: int) -> str:
    """What a false positive of a sheet is (see the module docstring)."""
    from detect.infer.slicing import cut_edges

    b = det["boxes"][i:i + 1]
    same = gt["labels"] == det["labels"][i]
    if status[i] == "dup":
        return "whole duplicate"
    iou_all = _iou(b, gt["boxes"])[0] if len(gt["boxes"]) else np.zeros(0)
    if len(iou_all) and (iou_all[~same] >= 0.5).any():
        return "wrong class"
    raw = run["raw_boxes"]
    src = np.flatnonzero((np.abs(raw - b).max(1) < 0.5) & (run["raw_labels"] == det["labels"][i]))
    fused = not len(src) and run["side"] is not None
    cut = bool(len(src)) and run["side"] is not None and bool(
        cut_edges(raw[src[:1]], run["raw_owner"][src[:1]], h, w).any())
    if same.any():
        ios = _ios(b, gt["boxes"][same])[0]  # share of the box inside each true box
        cover = _ios(gt["boxes"][same], b)[:, 0]  # share of each true box inside the box
        if fused and (cover >= 0.7).sum() >= 2:
            return "union of two products"
        if (ios >= 0.8).any() and cut:
            return "cut piece (survived merge)"
        if fused:
            return "union, misplaced"
        if (ios >= 0.8).any():
            return "part of a product (uncut)"
        if iou_all[same].max() >= 0.1:
            return "misplaced (0.1 <= IoU < 0.5)"
    return "background"


def ap_without(dets, gts, sizes, classes, drop_det=None, ignore_gt=None) -> float:
    """voc_ap50 with some detections removed / some true boxes marked difficult."""
    from detect.engine.evaluate import compute_metrics

    d2, g2 = [], []
    for k, (d, g) in enumerate(zip(dets, gts)):
        keep = np.ones(len(d["scores"]), bool) if drop_det is None else ~drop_det[k]
        d2.append({"boxes": d["boxes"][keep], "scores": d["scores"][keep], "labels": d["labels"][keep]})
        diff = g["difficult"].copy() if ignore_gt is None else g["difficult"] | ignore_gt[k]
        g2.append({"boxes": g["boxes"], "labels": g["labels"], "difficult": diff})
    return compute_metrics(d2, g2, sizes, classes, max_det=300)[0]["voc_ap50"]


def analyse_sheets(runs, dets, gts, sheets, shapes, classes, fp_score: float) -> dict:
    """Steps 1 and 2 of the module docstring on the sheets."""
    lost_rows: Counter = Counter()
    fp_rows: Counter = Counter()
    gt_where_all: Counter = Counter()
    drop: dict = {}  # name -> per sheet bool[n_det]: false positives of that kind
    ignore: dict = {}  # name -> per sheet bool[n_gt]: lost true boxes of that place
    for k, (run, d, g, sheet) in enumerate(zip(runs, dets, gts, sheets)):
        h, w = sheet.shape[:2]
        cells = np.asarray([[(j % 4) * CELL, (j // 4) * CELL, shapes[k * 12 + j][1], shapes[k * 12 + j][0]]
                            for j in range(12)], np.float32)
        status, found = match(d, g)
        iou = _iou(run["raw_boxes"], g["boxes"])  # a slice's own box of the right class at IoU 0.5
        hit = (iou >= 0.5) & (run["raw_labels"][:, None] == g["labels"][None, :])
        raw_hit = hit.any(0)
        for j, wh in enumerate(where(g["boxes"], run, cells, h, w)):
            if g["difficult"][j]:
                continue
            border = "cell border" if wh["cell_border"] else "-"
            key = (wh["slice"], border, "sheet edge" if wh["sheet_edge"] else "-", wh["size"])
            gt_where_all[key] += 1
            if found[j] < 0:
                by = merge_fate(run, int(np.flatnonzero(hit[:, j])[np.argmax(run["raw_scores"][hit[:, j]])]), h, w) \
                    if raw_hit[j] else "no slice found it"
                lost_rows[key + (by,)] += 1
                for name in (f"lost {wh['slice']}", f"lost {border}", f"lost {wh['size']}", f"lost, {by}"):
                    ignore.setdefault(name, [np.zeros(len(x["boxes"]), bool) for x in gts])[k][j] = True
        dwhere = where(d["boxes"], run, cells, h, w)
        for i in np.flatnonzero((status == "fp") | (status == "dup")):
            kind, wh = fp_kind(int(i), d, g, status, run, h, w), dwhere[i]
            border = "cell border" if wh["cell_border"] else "-"
            if d["scores"][i] >= fp_score:
                fp_rows[(kind, wh["slice"], border, wh["size"])] += 1
            for name in (f"FP {kind}", f"FP {wh['slice']}", f"FP {border}"):
                drop.setdefault(name, [np.zeros(len(x["scores"]), bool) for x in dets])[k][i] = True
    sizes = [s.shape[:2] for s in sheets]
    base = ap_without(dets, gts, sizes, classes)
    prices = {f"{name} removed": round(ap_without(dets, gts, sizes, classes, drop_det=m) - base, 4)
              for name, m in sorted(drop.items())}
    prices.update({f"{name} ignored": round(ap_without(dets, gts, sizes, classes, ignore_gt=m) - base, 4)
                   for name, m in sorted(ignore.items())})
    return {"voc_ap50": round(base, 4),
            "true boxes by place (slice, cell, sheet, size)": {" | ".join(k): v for k, v in sorted(gt_where_all.items())},
            "lost true boxes (no detection >= 0.01; slice, cell, sheet, size, why)": {" | ".join(k): v for k, v in sorted(lost_rows.items())},
            f"false positives >= {fp_score} (kind, slice, cell, size)": {" | ".join(k): v for k, v in fp_rows.most_common()},
            "AP gained without each kind": prices}


def to_cells(sheet_dets, shapes) -> list[dict]:
    """The sheets' detections as one set per photo: those whose centre lies in the photo's cell,
    shifted back to the photo and clipped to it."""
    out = []
    for k, d in enumerate(sheet_dets):
        c = (d["boxes"][:, :2] + d["boxes"][:, 2:]) / 2
        col, row = (c[:, 0] // CELL).astype(int), (c[:, 1] // CELL).astype(int)
        for j in range(12):
            ph, pw = shapes[k * 12 + j]
            m = (col == j % 4) & (row == j // 4)
            b = d["boxes"][m] - np.float64([(j % 4) * CELL, (j // 4) * CELL] * 2)
            b = np.clip(b, 0, [pw, ph, pw, ph])
            out.append({"boxes": b, "scores": d["scores"][m], "labels": d["labels"][m]})
    return out


INPUT_BINS = (0, 24, 32, 48, 64, 96, 128, 1e9)


def by_input_size(runs, dets, gts, imgsz: int, conf: float) -> dict:
    """Recall of the true boxes by their side (sqrt(w * h)) in model input pixels, the way the
    model saw them (photo side * imgsz / slice side; whole: / the photo's longer side): at score
    ``conf`` and at any score."""
    rows: dict = {}
    for run, d, g in zip(runs, dets, gts):
        side = run["side"] or max(run["windows"][0, 2], run["windows"][0, 3])
        keep = d["scores"] >= conf
        _, found_all = match(d, g)
        _, found = match({k: v[keep] for k, v in d.items()}, g)
        s = np.sqrt(np.prod(g["boxes"][:, 2:] - g["boxes"][:, :2], 1)) * imgsz / side
        for j in np.flatnonzero(~g["difficult"]):
            b = int(np.searchsorted(INPUT_BINS, s[j], side="right")) - 1
            key = f"{INPUT_BINS[b]:g}-{INPUT_BINS[b + 1]:g} px"
            r = rows.setdefault(key, [0, 0, 0])
            r[0] += 1
            r[1] += int(found[j] >= 0)
            r[2] += int(found_all[j] >= 0)
    return {k: {"boxes": v[0], f"recall@{conf}": round(v[1] / v[0], 3), "recall": round(v[2] / v[0], 3)}
            for k, v in sorted(rows.items(), key=lambda kv: float(kv[0].split("-")[0]))}


def on_inner_border(gts, shapes) -> list[np.ndarray]:
    """bool[n] per photo: true boxes on a border of their photo where the sheet goes on (the next
    photo, or grey where the photo is smaller than its cell). In the photo alone the image ends
    there; on the sheet such a box is the visible sliver of a product in the middle of the image,
    something a store photo does not show (its products end where the photo ends)."""
    out = []
    for i, (g, (ph, pw)) in enumerate(zip(gts, shapes)):
        col, row, b = (i % 12) % 4, (i % 12) // 4, g["boxes"]
        out.append(((b[:, 0] <= EDGE_PX) & (col > 0)) | ((b[:, 1] <= EDGE_PX) & (row > 0))
                   | ((b[:, 2] >= pw - EDGE_PX) & ((col < 3) | (pw < CELL)))
                   | ((b[:, 3] >= ph - EDGE_PX) & ((row < 2) | (ph < CELL))))
    return out


def per_photo(dets, gts, conf: float) -> list[tuple[int, int, int]]:
    """(true positives, false positives, lost) of each photo at score ``conf``."""
    rows = []
    for d, g in zip(dets, gts):
        keep = d["scores"] >= conf
        status, found = match({k: v[keep] for k, v in d.items()}, g)
        rows.append((int((status == "tp").sum()), int(((status == "fp") | (status == "dup")).sum()),
                     int(((found < 0) & ~g["difficult"]).sum())))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "ssd_lite0_synth.pt"))
    ap.add_argument("--photos", type=int, default=120)
    ap.add_argument("--merge", default="cut")
    ap.add_argument("--slice", default="auto", help="auto, off or a fixed side (a diagnostic: the scale's share)")
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--fp-score", type=float, default=0.3, help="false positives listed from this score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "dense_loss.json"))
    args = ap.parse_args()

    from detect.data.synth.dataset import render_scene
    from detect.data.synth.products import CLASSES
    from detect.engine.evaluate import compute_metrics
    from detect.infer.predict import Predictor
    from detect.infer.slicing import parse_slice
    from detect.utils import atomic_write_text

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    scenes = [render_scene(21, i, 640) for i in range(args.photos)]
    images = [s.image for s in scenes]
    shapes = [im.shape[:2] for im in images]
    gts = [_gt(s.boxes, s.labels, s.difficult) for s in scenes]
    sheets, sheet_gts = tile(images, gts, 4, 3, CELL)
    pred = Predictor(args.weights, device="cpu", conf=0.01, threads=args.threads, overlap=args.overlap, merge=args.merge,
                     slice=parse_slice(args.slice))
    single_runs = [sliced_run(pred, im) for im in images]
    sheet_runs = [sliced_run(pred, s) for s in sheets]
    single = [_det(r["merged"]) for r in single_runs]
    sheet = [_det(r["merged"]) for r in sheet_runs]
    cells = to_cells(sheet, shapes)
    n = len(sheets) * 12

    def ap(d, g, sz):
        return round(compute_metrics(d, g, sz, CLASSES, max_det=300)[0]["voc_ap50"], 4)

    res: dict = {"weights": args.weights, "merge": args.merge, "overlap": args.overlap, "photos": n,
                 "single photos": ap(single[:n], gts[:n], shapes[:n]),
                 "sheets": ap(sheet, sheet_gts, [s.shape[:2] for s in sheets]),
                 "cells of the sheets as photos": ap(cells, gts[:n], shapes[:n]),
                 "slice sides, single photos": dict(Counter(str(r["side"]) for r in single_runs[:n])),
                 "slice sides, sheets": [r["side"] for r in sheet_runs]}
    border = on_inner_border(gts[:n], shapes[:n])

    def marked(gl, masks):
        return [dict(g, difficult=g["difficult"] | m) for g, m in zip(gl, masks)]

    res["true boxes on inner photo borders"] = int(sum(m.sum() for m in border))
    res["with those ignored (difficult): single photos"] = ap(single[:n], marked(gts[:n], border), shapes[:n])
    res["with those ignored (difficult): sheets"] = ap(
        sheet, marked(sheet_gts, [np.concatenate(border[k * 12:k * 12 + 12]) for k in range(len(sheets))]),
        [s.shape[:2] for s in sheets])
    res["recall by product side in input px, single photos"] = by_input_size(single_runs[:n], single[:n], gts[:n],
                                                                             pred.imgsz, args.fp_score)
    res["recall by product side in input px, sheets"] = by_input_size(sheet_runs, sheet, sheet_gts, pred.imgsz,
                                                                      args.fp_score)
    res["sheet analysis"] = analyse_sheets(sheet_runs, sheet, sheet_gts, sheets, shapes, CLASSES, args.fp_score)
    a, b = per_photo(single[:n], gts[:n], args.fp_score), per_photo(cells, gts[:n], args.fp_score)
    worse = sorted(range(n), key=lambda i: (b[i][1] + b[i][2]) - (a[i][1] + a[i][2]), reverse=True)
    res[f"per photo at score {args.fp_score}: single vs cell (tp, fp, lost)"] = {
        "totals": {"single": [int(sum(x[j] for x in a)) for j in range(3)], "cells": [int(sum(x[j] for x in b)) for j in range(3)]},
        "photos that lose most": {str(i): {"single": a[i], "cell": b[i], "side single": single_runs[i]["side"],
                                           "size": list(shapes[i])} for i in worse[:10]}}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    _print(res)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(res, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


def _print(res: dict, indent: str = "") -> None:
    for k, v in res.items():
        if isinstance(v, dict) and not all(isinstance(x, (int, float, str, type(None))) for x in v.values()) or \
                isinstance(v, dict) and len(v) > 4:
            print(f"{indent}{k}")
            _print(v, indent + "    ")
        else:
            print(f"{indent}{k}: {v}")


if __name__ == "__main__":
    raise SystemExit(main())
