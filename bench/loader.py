#!/usr/bin/env python3
"""The training loader alone: images/s out of ``train_loader`` (workers, the run's transform,
the real collate), beside the same loader sending images only (the ceiling the targets'
transport can reach) and one process's own rate (``dataset[i]`` in a loop, x workers).

    python bench/loader.py                       # synthetic shelves 320 px, 2 workers, batch 64
    python bench/loader.py --data datasets/groceries.yaml --workers 2 4 --batch 32

No model runs: this isolates the data side of a training step (on a GPU machine the step
alone is much faster than a CPU loader; see bench/gpu_profile.py). Prints a table and writes
JSON (default ``bench/out/loader.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


def _rate(loader, sampler, epochs: int) -> float:
    """Images/s of the best of ``epochs`` passes after one warm-up pass (workers started)."""
    best = 0.0
    for ep in range(epochs + 1):
        sampler.set_epoch(ep)
        t0, n = time.perf_counter(), 0
        for images, _ in loader:
            n += images.shape[0]
        if ep:
            best = max(best, n / (time.perf_counter() - t0))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset (default: synthetic shelves rendered into --synth)")
    ap.add_argument("--synth", default="/tmp/bench_loader_synth")
    ap.add_argument("--images", type=int, default=512, help="synthetic images to render")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "loader.json"))
    args = ap.parse_args(argv)

    from detect.cli import build_parser
    from detect.engine.distributed import DistInfo
    from detect.engine.loader import EpochShardSampler, SeededDataset, train_loader
    from detect.engine.resolve import resolved_data
    from detect.engine.train_cli import config_from_args

    data = args.data
    if data is None:
        data = args.synth
        if not Path(data).is_dir():
            subprocess.run([sys.executable, "-m", "detect", "synth", data, "--images", str(args.images), "--seed", "3",
                            "--size", str(args.imgsz)], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    torch.set_num_threads(1)
    cfg = config_from_args(build_parser().parse_args(
        ["train", "--data", data, "--imgsz", str(args.imgsz), "--device", "cpu", "--out", "/tmp/bench_loader_unused"]))
    cfg, d = resolved_data(cfg)
    ds = SeededDataset(d.train, 0)
    n = min(len(ds), 256)
    for i in range(8):
        ds[(0, i)]
    t0 = time.perf_counter()
    for i in range(n):
        ds[(0, i)]
    item_s = (time.perf_counter() - t0) / n
    rows = []
    for w in args.workers:
        loader, sampler = train_loader(d.train, args.batch, d.collate, DistInfo(), 0, w, torch.device("cpu"))
        full = _rate(loader, sampler, args.epochs)
        del loader
        s = EpochShardSampler(len(ds), True, 0)
        only = DataLoader(ds, batch_size=args.batch, sampler=s, num_workers=w, persistent_workers=w > 0,
                          prefetch_factor=4 if w else None, collate_fn=lambda b: (torch.stack([x[0] for x in b]), None))
        ceiling = _rate(only, s, args.epochs)
        del only
        rows.append({"workers": w, "batch": args.batch, "loader_images_per_s": round(full, 1),
                     "images_only_images_per_s": round(ceiling, 1),
                     "one_process_x_workers": round(max(w, 1) / item_s, 1)})
    print(f"{len(d.train)} training images at {args.imgsz} px, batch {args.batch}; one sample {item_s * 1e3:.2f} ms in this process")
    print("| workers | loader images/s | images only | one process x workers |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['workers']} | {r['loader_images_per_s']} | {r['images_only_images_per_s']} | {r['one_process_x_workers']} |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"data": str(data), "imgsz": args.imgsz, "sample_ms": round(item_s * 1e3, 3), "rows": rows}, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
