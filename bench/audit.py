#!/usr/bin/env python3
"""Shelf-audit accuracy against the truth of ``detect synth --dense`` (and speed, and unique
products in aisle-walk videos).

    python bench/audit.py                              # rules on 20 dense shelves of seed 9001
    python bench/audit.py --sources truth,weights      # also on the shipped weights' detections
    python bench/audit.py --videos 3                   # unique products in aisle-walk videos
    python bench/audit.py --speed                      # detect audit vs detect predict on a 12-MP shelf

Rules (detect/audit): rows, facings, gaps and planogram compliance on dense synthetic shelves
(:func:`detect.data.synth.dense.render_dense`) of a seed the rules were never tuned on (they
were tuned on seed 7). Detection sources:

- ``truth``: the true boxes and labels, each side moved by Gaussian noise (``--noise``, a
  fraction of the box's width/height): the rules alone, as with a good detector;
- ``weights``: the detections of ``--weights`` (default: the shipped weights) at ``--conf``.

Metrics, each against the scene's truth:
- gaps: every empty-facing slot the audit reports (the rules' and, unless ``--rules-only``,
  those the scene's planogram points at) against the facings left empty on purpose,
  one-to-one greedy matching at IoU >= 0.3: precision and recall (shelves whose base line is
  below the photo are left out: only the tops of their products show, and the audit marks
  such rows ``below_photo`` and reports no gaps there; gaps the truth marks ``difficult``,
  less than half a facing of empty shelf in view, count neither way, like VOC's difficult
  objects);
- facings: per (shelf, product) the number of facings (distinct positions x facings with a
  product of that class standing there), exact matches over the union of pairs (the audit's
  rows are matched to shelves by their base lines; facings whose products are all difficult,
  under 30% in view, may be counted or not);
- planogram: the truth verdict of each position (misplaced: another product stands in one of
  its facings; else ok: all its facings hold it; missing: none does; else wrong_facings)
  against the audit's, over the positions wholly inside the photo.
Unique products: aisle-walk videos (:mod:`detect.data.synth.aisle`) through the tracker
(truth boxes with noise, or the weights' detections), the count against the true number of
products in view. Prints a table and writes ``bench/out/audit.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detect.audit.audit import audit_detections  # noqa: E402
from detect.audit.planogram import build_planogram  # noqa: E402
from detect.data.synth.dense import render_dense, truth_json  # noqa: E402
from detect.data.synth.products import CLASSES  # noqa: E402
from detect.structures import Detections  # noqa: E402
from detect.utils import atomic_write_text  # noqa: E402

IOU = 0.3
TARGETS = {"gap_precision": 0.90, "gap_recall": 0.90, "facings_exact": 0.95, "verdicts_agree": 0.95, "unique_error": 0.05,
           "speed_ratio": 1.15}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def greedy_pairs(pred: np.ndarray, true: np.ndarray, thr: float = IOU) -> dict[int, int]:
    """One-to-one matches at IoU >= thr, best pairs first: prediction index -> true index."""
    m = iou_matrix(pred, true)
    out = {}
    while m.size and m.max() >= thr:
        i, j = np.unravel_index(np.argmax(m), m.shape)
        out[int(i)] = int(j)
        m[i, :] = -1
        m[:, j] = -1
    return out


def greedy_matches(pred: np.ndarray, true: np.ndarray, thr: float = IOU, difficult: np.ndarray | None = None) -> tuple[int, int]:
    """:func:`greedy_pairs` counted: (matches with true boxes that are not ``difficult``,
    predictions matched to difficult ones: neither hits nor false alarms)."""
    difficult = np.zeros(len(true), bool) if difficult is None else np.asarray(difficult, bool)
    hit = np.asarray(list(greedy_pairs(pred, true, thr).values()), np.int64)
    ignored = int(difficult[hit].sum())
    return len(hit) - ignored, ignored


def noisy_truth(scene, rng: np.random.Generator, noise: float) -> Detections:
    b = scene.boxes.astype(np.float64)
    wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]] * 2, 1)
    jit = b + rng.normal(0, noise, b.shape) * wh
    jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 1)
    return Detections(jit.astype(np.float32), np.full(len(b), 0.9, np.float32), scene.labels.copy(), list(CLASSES))


def base_y(truth: dict, shelf: int, x: float) -> float:
    (xa, ya), (xb, yb) = truth["rows"][shelf]["base"]
    return ya + (yb - ya) * (x - xa) / (xb - xa)


def below_photo(truth: dict, gap: dict) -> bool:
    """The gap's shelf is below the photo where the gap is (only the tops of products show)."""
    return base_y(truth, gap["shelf"], (gap["box"][0] + gap["box"][2]) / 2) >= truth["height"] - 2


def truth_shelf_of_rows(result, truth: dict) -> list[int]:
    """For each audit row, the truth shelf whose base line is nearest at the row's centre."""
    out = []
    for row in result.rows.rows:
        x = (row.x0 + row.x1) / 2
        y = float(row.base_y(x))
        best, shelf = None, -1
        for r in truth["rows"]:
            ty = base_y(truth, r["shelf"], x)
            if best is None or abs(ty - y) < best:
                best, shelf = abs(ty - y), r["shelf"]
        out.append(shelf)
    return out


def truth_facings(truth: dict) -> dict[tuple[int, str], tuple[int, int]]:
    """Per (shelf, product): (facings with a product that is not difficult, all facings). A
    facing whose products are all difficult (under 30% in view, or tiny) need not be found,
    and finding it is no error, like a VOC difficult object: a count in the range is exact."""
    per: dict[tuple[int, str], dict] = {}
    for p in truth["products"]:
        d = per.setdefault((p["shelf"], p["product"]), {})
        key = (p["position"], p["facing"])
        d[key] = d.get(key, True) and p["difficult"]
    return {k: (sum(not dif for dif in v.values()), len(v)) for k, v in per.items()}


def truth_verdicts(truth: dict) -> dict[tuple[int, int], str]:
    """Truth verdict of every position whose facings are all in the photo (as products or gaps)."""
    seen: dict[tuple[int, int], dict] = {}
    for p in truth["products"]:
        d = seen.setdefault((p["shelf"], p["position"]), {"ok": set(), "mis": set(), "gap": set()})
        d["mis" if p["misplaced"] else "ok"].add(p["facing"])
    for g in truth["gaps"]:
        seen.setdefault((g["shelf"], g["position"]), {"ok": set(), "mis": set(), "gap": set()})["gap"].add(g["facing"])
    out = {}
    for pos in truth["planogram"]:
        key = (pos["shelf"], pos["position"])
        d = seen.get(key)
        if d is None or len(d["ok"] | d["mis"] | d["gap"]) != pos["facings"]:
            continue  # partly outside the photo (or hidden): no verdict to compare
        if d["mis"]:
            out[key] = "misplaced"
        elif len(d["ok"]) == pos["facings"]:
            out[key] = "ok"
        elif not d["ok"]:
            out[key] = "missing"
        else:
            out[key] = "wrong_facings"
    return out


def evaluate(result, truth: dict) -> dict:
    pred_slots = np.asarray([s for g in result.gaps for s in g.slots], np.float32).reshape(-1, 4)
    gaps = [g for g in truth["gaps"] if not below_photo(truth, g)]
    true_gaps = np.asarray([g["box"] for g in gaps], np.float32).reshape(-1, 4)
    difficult = np.asarray([g.get("difficult", False) for g in gaps], bool)
    tp, ignored = greedy_matches(pred_slots, true_gaps, difficult=difficult)
    shelf_of = truth_shelf_of_rows(result, truth)
    pred_f: dict[tuple[int, str], int] = {}
    for f in result.facings:
        key = (shelf_of[f.row], f.name)
        pred_f[key] = pred_f.get(key, 0) + f.facings
    true_f = truth_facings(truth)
    pairs = set(pred_f) | set(true_f)
    exact = sum(true_f.get(k, (0, 0))[0] <= pred_f.get(k, 0) <= true_f.get(k, (0, 0))[1] for k in pairs)
    strict = sum(pred_f.get(k, 0) == true_f.get(k, (0, 0))[1] for k in pairs)  # every facing, difficult ones too
    verdicts = truth_verdicts(truth)
    got = {(v.position.shelf, v.position.position): v.status for v in result.compliance.verdicts}
    agree = sum(got.get(k) == s for k, s in verdicts.items())
    confusion: dict[str, int] = {}
    for k, s in verdicts.items():
        if got.get(k) != s:
            confusion[f"{s}->{got.get(k)}"] = confusion.get(f"{s}->{got.get(k)}", 0) + 1
    return {"gap_tp": tp, "gap_pred": len(pred_slots) - ignored, "gap_true": int((~difficult).sum()),
            "gap_difficult": int(difficult.sum()), "facing_pairs": len(pairs), "facing_strict": strict,
            "facing_exact": exact, "positions": len(verdicts), "agree": agree, "confusion": confusion,
            "rows": len(result.rows), "shelves": len(truth["rows"])}


def summarize(parts: list[dict]) -> dict:
    s = {k: sum(p[k] for p in parts) for k in ("gap_tp", "gap_pred", "gap_true", "gap_difficult", "facing_pairs", "facing_exact", "facing_strict",
                                               "positions", "agree")}
    conf: dict[str, int] = {}
    for p in parts:
        for k, v in p["confusion"].items():
            conf[k] = conf.get(k, 0) + v
    return {
        "gap_precision": s["gap_tp"] / max(s["gap_pred"], 1), "gap_recall": s["gap_tp"] / max(s["gap_true"], 1),
        "facings_exact": s["facing_exact"] / max(s["facing_pairs"], 1),
        "facings_exact_strict": s["facing_strict"] / max(s["facing_pairs"], 1), "verdicts_agree": s["agree"] / max(s["positions"], 1),
        **s, "verdict_errors": dict(sorted(conf.items(), key=lambda kv: -kv[1])),
    }


def run_rules(args) -> dict:
    out: dict = {}
    predictor = None
    if "weights" in args.sources:
        from detect.infer.predict import Predictor

        predictor = Predictor(args.weights, device=args.device, conf=min(args.conf, 0.1), max_det=1000)
    parts: dict[str, list] = {s: [] for s in args.sources}
    rng = np.random.default_rng(args.seed)
    t_audit = 0.0
    for i in range(args.images):
        scene = render_dense(args.seed, i, args.size)
        truth = truth_json(scene, f"{i:06d}.jpg")
        planogram = build_planogram([(0, p) for p in truth["planogram"]], CLASSES, {}, "truth")
        H, W = scene.image.shape[:2]
        for src in args.sources:
            if src == "truth":
                det, conf = noisy_truth(scene, rng, args.noise), None
            else:
                det, conf = predictor.predict([scene.image])[0], args.conf
            t = time.perf_counter()
            res = audit_detections(det, W, H, planogram, conf=conf, shelf_edges=args.shelf_edges, planned=not args.rules_only)
            t_audit += time.perf_counter() - t
            parts[src].append(evaluate(res, truth))
        print(f"  image {i}: " + "; ".join(f"{s}: gaps {p[-1]['gap_tp']}/{p[-1]['gap_pred']}/{p[-1]['gap_true']} "
                                           f"rows {p[-1]['rows']}/{p[-1]['shelves']} verdicts {p[-1]['agree']}/{p[-1]['positions']}"
                                           for s, p in parts.items()), flush=True)
    for src, p in parts.items():
        out[src] = summarize(p)
    out["audit_seconds_per_image"] = t_audit / max(1, args.images * len(args.sources))
    return out


def run_videos(args) -> dict:
    from detect.audit.track import UniqueCounter
    from detect.data.synth.aisle import render_aisle

    predictor = None
    if "weights" in args.sources:
        from detect.infer.predict import Predictor

        predictor = Predictor(args.weights, device=args.device, conf=min(args.conf, 0.1), max_det=1000)  # as detect audit
    rng = np.random.default_rng(args.seed + 1)
    rows = {s: [] for s in args.sources}
    for v in range(args.videos):
        walk = render_aisle(args.seed, v, width=args.video_width, height=args.video_height, frames=args.video_frames)
        for src in args.sources:
            counter = UniqueCounter(walk.fps, min_frames=args.min_track_frames, track_conf=args.conf)
            for k, frame in enumerate(walk.frames()):
                if src == "truth":
                    det = noisy_truth(frame, rng, args.noise)
                else:
                    det = predictor.predict([frame.image])[0]
                counter.update(det)
            got = sum(counter.counts(list(CLASSES)).values())
            rows[src].append({"video": v, "true": walk.unique, "counted": got, "error": (got - walk.unique) / walk.unique,
                              "frames": walk.n_frames, "per_frame_sum": walk.boxes_total})
            print(f"  video {v} ({src}): {got} counted, {walk.unique} true, every frame's boxes added: {walk.boxes_total}", flush=True)
    return {s: {"videos": r, "true": sum(x["true"] for x in r), "counted": sum(x["counted"] for x in r),
                "error": (sum(x["counted"] for x in r) - sum(x["true"] for x in r)) / max(1, sum(x["true"] for x in r)),
                "worst_error": max((abs(x["error"]) for x in r), default=0.0)} for s, r in rows.items()}


def run_speed(args) -> dict:
    """``detect predict`` vs ``detect audit`` on one 12-MP dense shelf (read from a JPEG, every
    output written, each command's default thresholds), timed over ``--repeats`` runs (median),
    alternating, after one warm-up round; model loading left out of both."""
    import cv2

    from detect.audit.audit_cli import audit_source
    from detect.cli import build_parser
    from detect.infer.predict import Predictor
    from detect.infer.predict_cli import run as predict_run

    scene = render_dense(args.seed, 0, 4000)
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "shelf.jpg"
        cv2.imwrite(str(img), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        # each command's own defaults: predict keeps 0.25 and 300 boxes, audit 0.1 (occupants) and 1000
        audit_args = build_parser("audit").parse_args(["audit", str(img), "--no-progress"])
        predictors = {"predict": Predictor(args.weights, device=args.device),
                      "audit": Predictor(args.weights, device=args.device, conf=audit_args.occupancy_conf,
                                         max_det=audit_args.max_det)}
        times: dict[str, list[float]] = {"predict": [], "audit": []}
        for r in range(args.repeats + 1):
            for name in ("predict", "audit"):
                out = Path(tmp) / f"{name}{r}"
                out.mkdir()
                t = time.perf_counter()
                if name == "predict":
                    predict_run(predictors[name], str(img), out, progress=False)
                else:
                    audit_source(predictors[name], str(img), out, None, audit_args)
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - t)
    p, a = float(np.median(times["predict"])), float(np.median(times["audit"]))
    pr = predictors["predict"]
    return {"image": "4000x3000", "predict_s": p, "audit_s": a, "ratio": a / p, "runs": times, "device": str(pr.device),
            "backend": pr.backend}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=9001, help="scenes of this seed (the rules were tuned on seed 7)")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", type=int, default=2000, help="longer side of the dense shelves")
    ap.add_argument("--sources", default="truth", help="comma list: truth, weights")
    ap.add_argument("--noise", type=float, default=0.02, help="box noise (fraction of width/height) of the truth source")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--shelf-edges", default="image", choices=["image", "products"])
    ap.add_argument("--rules-only", action="store_true",
                    help="gaps from the shelf rules alone (the planogram, given for the verdicts, adds none)")
    ap.add_argument("--videos", type=int, default=0, help="aisle-walk videos for the unique-product count")
    ap.add_argument("--video-frames", type=int, default=150)
    ap.add_argument("--min-track-frames", type=int, default=5, help="as detect audit's option")
    ap.add_argument("--video-width", type=int, default=1280)
    ap.add_argument("--video-height", type=int, default=720)
    ap.add_argument("--speed", action="store_true", help="also time detect audit against detect predict on a 12-MP shelf")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-rules", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "audit.json"))
    args = ap.parse_args()
    args.sources = [s for s in args.sources.split(",") if s]
    report: dict = {"seed": args.seed, "size": args.size, "noise": args.noise, "targets": TARGETS, "argv": sys.argv[1:]}
    if not args.no_rules and args.images:
        report["rules"] = run_rules(args)
        print(f"\n{'source':<8} {'gap P':>6} {'gap R':>6} {'facings':>8} {'verdicts':>9}   ({args.images} shelves, seed {args.seed}, {args.size} px)")
        for s in args.sources:
            r = report["rules"][s]
            print(f"{s:<8} {r['gap_precision']:6.3f} {r['gap_recall']:6.3f} {r['facings_exact']:8.3f} {r['verdicts_agree']:9.3f}"
                  f"   facings with difficult ones {r['facings_exact_strict']:.3f}; gaps {r['gap_tp']}/{r['gap_pred']} pred/{r['gap_true']} true (+{r['gap_difficult']} difficult); {r['positions']} positions; errors {r['verdict_errors']}")
    if args.videos:
        report["videos"] = run_videos(args)
        for s, r in report["videos"].items():
            print(f"unique products ({s}): {r['counted']} counted, {r['true']} true, error {r['error'] * 100:+.1f}% "
                  f"(worst video {r['worst_error'] * 100:.1f}%)")
    if args.speed:
        report["speed"] = run_speed(args)
        sp = report["speed"]
        print(f"12-MP shelf: detect predict {sp['predict_s']:.2f}s, detect audit {sp['audit_s']:.2f}s, ratio {sp['ratio']:.3f} "
              f"({sp['device']}, {sp['backend']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
