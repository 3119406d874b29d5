#!/usr/bin/env python3
"""Where the shelf audit's false gaps come from, on dense synthetic shelves of development seeds.

    python bench/audit_false_gaps.py --seeds 5,6,7,8 --images 16
    python bench/audit_false_gaps.py --seeds 13-28 --images 16 --out bench/out/audit_false_gaps.json

Scores exactly as ``bench/audit.py`` (truth boxes + the same noise, the scene's planogram, the
photo's edges as the shelf's ends, one-to-one greedy matching at IoU >= 0.3, difficult gaps
neither hits nor misses) and sorts every empty-facing slot that matched no true gap by kind:
at a row's end (beside the photo's edge) or inside a row; read by the rules alone or changed
or added by the planogram; what the truth has where it stands (a true gap it overlaps at IoU
< 0.3, a product, nothing); for a row's end, what the planogram puts beyond the end product
(a true gap, a product, or nothing in the photo: beyond its edge) and whether it is the same
product. Seeds 9000 and up are held out for measuring: refused unless ``--held-out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_audit", ROOT / "bench" / "audit.py")
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)

from detect.audit.audit import audit_detections  # noqa: E402
from detect.audit.planogram import build_planogram  # noqa: E402
from detect.data.synth.dense import render_dense, truth_json  # noqa: E402
from detect.data.synth.products import CLASSES  # noqa: E402
from detect.utils import atomic_write_text  # noqa: E402

HELD_OUT = 9000  # seeds from here on are for measuring only


def beyond_end(truth: dict, end: dict, outward: int) -> tuple[str, bool]:
    """What stands in the planned facing beyond product ``end`` (a truth product dict) on its
    shelf: "gap", "product" or "none" (not in the photo), and whether it is ``end``'s product."""
    seq = [(q["position"], f, q["product"]) for q in truth["planogram"] if q["shelf"] == end["shelf"]
           for f in range(q["facings"])]
    at = [s[:2] for s in seq].index((end["position"], end["facing"]))
    nxt = at + outward
    if not 0 <= nxt < len(seq):
        return "none", False
    pos, f, lab = seq[nxt]
    where = (end["shelf"], pos, f)
    if any((q["shelf"], q["position"], q["facing"]) == where for q in truth["gaps"]):
        kind = "gap"
    elif any((q["shelf"], q["position"], q["facing"]) == where for q in truth["products"]):
        kind = "product"
    else:
        kind = "none"
    return kind, lab == end["product"]


def false_slots(seed: int, images: int, size: int, noise: float) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)  # the same noise as bench/audit.py --seed seed
    out, tot = [], Counter()
    for i in range(images):
        scene = render_dense(seed, i, size)
        truth = truth_json(scene, f"{i:06d}.jpg")
        plan = build_planogram([(0, p) for p in truth["planogram"]], CLASSES, {}, "truth")
        H, W = scene.image.shape[:2]
        det = B.noisy_truth(scene, rng, noise)
        res = audit_detections(det, W, H, plan, shelf_edges="image")
        rules = {tuple(np.round(g.box, 1)) for g in audit_detections(det, W, H, plan, shelf_edges="image", planned=False).gaps}
        ev = B.evaluate(res, truth)
        tot.update(tp=ev["gap_tp"], pred=ev["gap_pred"], true=ev["gap_true"])
        owner = [g for g in res.gaps for _ in g.slots]
        slots = np.asarray([s for g in res.gaps for s in g.slots], np.float32).reshape(-1, 4)
        gaps = [g for g in truth["gaps"] if not B.below_photo(truth, g)]
        true = np.asarray([g["box"] for g in gaps], np.float32).reshape(-1, 4)
        iou = B.iou_matrix(slots, true)
        hit = B.greedy_pairs(slots, true)
        prods = np.asarray([p["box"] for p in truth["products"]], np.float32).reshape(-1, 4)
        for k, g in enumerate(owner):
            if k in hit:
                continue
            rec = {"seed": seed, "image": i, "row": g.row + 1, "slot": [round(float(v)) for v in slots[k]],
                   "end": g.left < 0 or g.right < 0, "rules": tuple(np.round(g.box, 1)) in rules,
                   "near_true_gap": bool(iou.shape[1] and iou[k].max() > 0.05),
                   "on_product": bool(len(prods) and B.iou_matrix(slots[k:k + 1], prods)[0].max() > 0.3)}
            if rec["end"] and res.columns[g.row]:
                col = res.columns[g.row][0 if g.left < 0 else -1]
                j = int(np.argmax(B.iou_matrix(res.detections.boxes[col.members[0]][None], prods)[0]))
                rec["beyond"], rec["beyond_same"] = beyond_end(truth, truth["products"][j], -1 if g.left < 0 else 1)
            out.append(rec)
    return out, dict(tot)


def kind(r: dict) -> str:
    where = "row end" if r["end"] else "inside"
    src = "rules" if r["rules"] else "planogram"
    if r["end"]:
        what = {"gap": "beside a true gap", "product": "on a product", "none": "nothing beyond in the photo"}[r.get("beyond", "none")]
        what += " (same product)" if r.get("beyond_same") else " (other product)"
    else:
        what = "near a true gap" if r["near_true_gap"] else "on a product" if r["on_product"] else "no true gap near"
    return f"{where}, {src}: {what}"


def seeds_arg(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="5-8", help="comma list, ranges allowed (5-8,10)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--held-out", action="store_true", help=f"allow seeds >= {HELD_OUT} (kept for measuring, never tuned on)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "audit_false_gaps.json"))
    args = ap.parse_args()
    seeds = seeds_arg(args.seeds)
    if not args.held_out and any(s >= HELD_OUT for s in seeds):
        print(f"seeds >= {HELD_OUT} are held out for measuring; pass --held-out to look at them anyway", file=sys.stderr)
        return 2
    recs, per_seed = [], {}
    for s in seeds:
        r, tot = false_slots(s, args.images, args.size, args.noise)
        recs += r
        per_seed[s] = tot
        print(f"seed {s}: gaps P {tot['tp'] / max(tot['pred'], 1):.3f} R {tot['tp'] / max(tot['true'], 1):.3f}, "
              f"{len(r)} false slots ({sum(x['end'] for x in r)} at a row's end)", flush=True)
    tp, pred, true = (sum(t[k] for t in per_seed.values()) for k in ("tp", "pred", "true"))
    print(f"\nall: gaps P {tp / max(pred, 1):.3f} R {tp / max(true, 1):.3f}, {len(recs)} false slots of {pred}")
    for k, n in Counter(kind(r) for r in recs).most_common():
        print(f"{n:5d}  {k}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"argv": sys.argv[1:], "per_seed": per_seed, "false": recs}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
