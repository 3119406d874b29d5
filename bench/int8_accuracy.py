#!/usr/bin/env python3
"""INT8 against FP32 accuracy: the same checkpoint, the same images, the same metrics as ``detect val``.

    python bench/int8_accuracy.py                          # shipped weights, synthetic test shelves
    python bench/int8_accuracy.py --weights RUN/best.pt --data datasets/groceries.yaml --split val \\
        --calib datasets/groceries.yaml                    # a trained model on its own val split

Both contenders run on ONNX Runtime on the CPU with the checkpoint's own postprocess settings
(score threshold, NMS, ``max_det``), over ``detect val``'s loader (eval transform, batch
``--batch``) and are scored by :func:`detect.engine.evaluate.compute_metrics`: ``fp32`` is the
graph ``detect export`` writes, ``int8`` the same graph quantized by
:mod:`detect.infer.quantize` (``--calib``: the calibration images; default: synthetic shelves
of another seed than the test images). Without ``--data``, ``--images`` synthetic shelves are
rendered with seed 777 (the seed of the shipped weights' test numbers in weights/README.md).
Prints a table and writes JSON (default ``bench/out/int8_accuracy.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="SSD checkpoint (default: the shipped weights)")
    ap.add_argument("--data", help="dataset to score on (default: rendered synthetic shelves)")
    ap.add_argument("--split", default="val", help="split of --data")
    ap.add_argument("--images", type=int, default=300, help="synthetic test images to render without --data")
    ap.add_argument("--seed", type=int, default=777, help="seed of the synthetic test images")
    ap.add_argument("--calib", help="INT8 calibration images: a dataset (train split) or an image folder")
    ap.add_argument("--calib-images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "int8_accuracy.json"))
    args = ap.parse_args()

    from torch.utils.data import DataLoader

    from detect.data.dataset import collate
    from detect.data.spec import resolve_data
    from detect.engine.checkpoint import load_model
    from detect.engine.datasets import eval_dataset
    from detect.engine.evaluate import _align_classes, collect, compute_metrics
    from detect.infer.export import export_head
    from detect.infer.quantize import int8_model_for
    from detect.infer.weights import resolve_weights
    from detect.models.build import set_postprocess
    from detect.models.onnx_ssd import OnnxSSD
    from detect.utils import atomic_write_text

    torch.set_num_threads(args.threads)
    weights = resolve_weights(args.weights)
    model, cfg, classes = load_model(str(weights), torch.device("cpu"))
    set_postprocess(model, cfg.model)  # the checkpoint's own settings, as detect val
    max_det = int(cfg.model.max_det)
    S = int(cfg.preprocess.imgsz)
    data = args.data
    if data is None:
        from detect.data.synth import render_dataset

        data = str(Path(tempfile.mkdtemp(prefix="int8-acc-")) / f"synth_{args.seed}")
        render_dataset(data, args.images, seed=args.seed, size=S, workers=1, progress=False)
        args.split = "all"
    records = _align_classes(resolve_data(data, args.split), classes)
    loader = DataLoader(eval_dataset(records, cfg), batch_size=args.batch, shuffle=False, num_workers=0, collate_fn=collate)

    t0 = time.perf_counter()
    int8_path = int8_model_for(weights, args.calib, args.calib_images)
    quantize_s = time.perf_counter() - t0
    rows = []
    for name, graph in (("fp32", None), ("int8", int8_path)):
        runner = OnnxSSD.of_model(model, graph or export_head(model, S), threads=args.threads)
        got = collect(runner, loader, "cpu", max_det=max_det)
        m, _ = compute_metrics(got["dets"], got["gts"], got["sizes"], classes, max_det=max_det)
        rows.append({"model": name, **{k: round(float(m[k]), 4) for k in ("voc_ap50", "voc07_ap50", "coco_ap", "coco_ap50", "coco_ap75")},
                     "images": m["images"], "detections": m["detections"], "seconds": round(got["seconds"], 2)})
    delta = round(rows[1]["voc_ap50"] - rows[0]["voc_ap50"], 4)
    cols = ("model", "voc_ap50", "voc07_ap50", "coco_ap", "coco_ap50", "coco_ap75", "images", "detections", "seconds")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"INT8 - FP32 voc_ap50: {delta * 100:+.2f} points (target: within 1.0); quantized in {quantize_s:.1f} s (cached: {int8_path})")
    out = {"weights": str(weights), "data": str(args.data or f"synthetic seed {args.seed} x{args.images}"), "split": args.split,
           "calib": args.calib or "synthetic shelves", "calib_images": args.calib_images, "int8_model": str(int8_path),
           "results": rows, "delta_voc_ap50": delta}
    atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
