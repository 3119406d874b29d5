#!/usr/bin/env python3
"""Fast R-CNN with selective search, Fast R-CNN with RPN proposals, and SSD, on one backbone and
one training budget; VOC AP50 and COCO AP on the dataset's val split; selective-search time.

    python bench/fast_rcnn.py                                   # groceries-voc, GPU when present
    python bench/fast_rcnn.py --limit 64 --epochs 1 --device cpu --imgsz 128   # smoke test

Steps: (1) an annotation cache of *all* images (train and val share one proposal cache);
(2) ``detect proposals`` on it in a background process (``--ss-workers`` cores) while (3) the
SSD and the RPN Fast R-CNN train on the GPU; (4) the selective-search Fast R-CNN trains once
its proposals are ready. Every model gets the same backbone, input size, epochs, batch,
optimizer and schedule (the trainer's defaults unless given here) and is scored by the
trainer's own end-of-training evaluation (``detect.engine.evaluate``), with precomputed
proposals passed to the selective-search model. Prints a markdown table and writes JSON
(``OUT/results.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detect.engine.cpu_alloc import keep_heap_for_training  # noqa: E402

keep_heap_for_training()  # as `detect train` does, before torch allocates anything
import torch  # noqa: E402

from detect.config import ExperimentConfig  # noqa: E402
from detect.engine.runlog import METRIC_KEYS  # noqa: E402
from detect.engine.datasets import DataSplits, load_data  # noqa: E402
from detect.engine.train import train  # noqa: E402

MODELS = {  # name -> (model.name, model.proposals)
    "ssd": ("ssd", "rpn"),
    "fast_rcnn_rpn": ("fast_rcnn", "rpn"),
    "fast_rcnn_ss": ("fast_rcnn", "selective_search"),
}


def _all_images_cache(data: str, out: Path) -> str:
    """One annotation cache of every image of the dataset YAML (no split)."""
    from detect.data.formats.voc_dataset import load_spec
    from detect.data.cache.xml2pkl import build_cache

    spec = load_spec(data)
    path = out / f"{spec.name}-all.pkl"
    build_cache(spec.annotations, path, images=spec.images, classes=spec.classes, workers=0, progress=False)
    return str(path)


def _config(args: argparse.Namespace, name: str, out: Path, proposal_file: str = "") -> ExperimentConfig:
    cfg = ExperimentConfig()
    model_name, source = MODELS[name]
    cfg.model.name, cfg.model.fast_rcnn.proposals, cfg.model.backbone = model_name, source, args.backbone
    cfg.data.proposal_file = proposal_file or None
    cfg.preprocess.imgsz = args.imgsz
    cfg.data.data, cfg.data.workers = args.data, args.workers
    t = cfg.train
    t.epochs, t.batch, t.device, t.seed, t.out = args.epochs, args.batch, args.device, 0, str(out / name)
    t.eval_every = args.epochs  # score once, at the end
    if args.lr:
        t.lr = args.lr
    if args.optimizer:
        t.optimizer = args.optimizer
    return cfg


def _data_fn(limit: int):
    """The trainer's data (which carries precomputed proposals for a selective-search model),
    cut to the first ``limit`` train images for smoke runs."""

    def data_fn(cfg: ExperimentConfig) -> DataSplits:
        d = load_data(cfg)
        if not limit:
            return d
        val = d.val_records[: max(8, limit // 4)] if d.val_records is not None else None
        return DataSplits(d.classes, d.train_records[:limit], val, d.problems)

    return data_fn


def _run(args: argparse.Namespace, name: str, out: Path, proposal_file: str = "") -> dict[str, Any]:
    shutil.rmtree(out / name, ignore_errors=True)
    cfg = _config(args, name, out, proposal_file)
    t0 = time.perf_counter()
    res = train(cfg, progress=False, data_fn=_data_fn(args.limit))
    keep = (*METRIC_KEYS, "images_per_s", "epochs")
    row = {k: res.get(k) for k in keep}
    row.update(model=name, seconds=time.perf_counter() - t0, params_m=None)
    print(f"{name}: voc_ap50 {row['voc_ap50']}, coco_ap {row['coco_ap']} ({row['seconds']:.0f} s)", flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "datasets" / "groceries.yaml"))
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--imgsz", type=int, default=224)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, help="default: the trainer's")
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=4, help="data loader workers per training run")
    p.add_argument("--ss-workers", type=int, default=12, help="selective-search processes")
    p.add_argument("--mode", choices=["fast", "quality"], default="fast")
    p.add_argument("--proposals", help="reuse this proposal cache instead of computing one")
    p.add_argument("--models", default="ssd,fast_rcnn_rpn,fast_rcnn_ss")
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only (smoke tests)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "fast_rcnn"))
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    ss_proc, ss_file, ss_log = None, args.proposals or "", out / "proposals.log"
    if "fast_rcnn_ss" in models and not ss_file:
        ann = _all_images_cache(args.data, out)
        ss_file = str(out / f"proposals-{args.mode}.pkl")
        cmd = [sys.executable, "-m", "detect", "proposals", ann, "-o", ss_file, "--mode", args.mode,
               "--workers", str(args.ss_workers), "--no-progress"]
        ss_proc = subprocess.Popen(cmd, stdout=open(ss_log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)
        print(f"selective search running in the background: {' '.join(cmd)}", flush=True)

    rows = []
    for name in models:
        if name == "fast_rcnn_ss":
            continue
        rows.append(_run(args, name, out))
    proposals_info: dict[str, Any] = {}
    if "fast_rcnn_ss" in models:
        if ss_proc is not None:
            rc = ss_proc.wait()
            text = ss_log.read_text()
            print(text, flush=True)
            if rc not in (0, 1):
                print(f"detect proposals failed (exit {rc}); see {ss_log}", file=sys.stderr)
                return 1
            proposals_info["log"] = text
        from detect.data.proposal_files import ProposalFileError, load_proposals, read_proposal_cache

        ps = load_proposals(ss_file)
        proposals_info.update(file=ss_file, method=ps.method, images=len(ps), seconds_per_image=math.nan,
                              mean_proposals=float(sum(len(b) for b in ps.boxes.values()) / max(1, len(ps))))
        try:  # a proposal cache of ours also knows how long each image took
            secs = read_proposal_cache(ss_file)["seconds"]
            proposals_info["seconds_per_image"] = float(secs[secs > 0].mean()) if (secs > 0).any() else math.nan
        except ProposalFileError:
            pass
        rows.append(_run(args, "fast_rcnn_ss", out, ss_file))

    print("\n| model | proposals | voc_ap50 | coco_ap | train+eval s |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        src = {"ssd": "-", "fast_rcnn_rpn": "RPN", "fast_rcnn_ss": f"selective search ({args.mode})"}[r["model"]]
        f = lambda v: "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"  # noqa: E731
        print(f"| {r['model']} | {src} | {f(r['voc_ap50'])} | {f(r['coco_ap'])} | {r['seconds']:.0f} |")
    if proposals_info:
        print(f"\nselective search: {proposals_info['seconds_per_image']:.3f} s/image on one CPU core, "
              f"{proposals_info['mean_proposals']:.0f} proposals/image ({args.mode} mode)")
    result = {"args": vars(args), "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "rows": rows, "proposals": proposals_info, "seconds": time.perf_counter() - t_all}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {out / 'results.json'} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
