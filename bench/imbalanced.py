#!/usr/bin/env python3
"""A small, imbalanced product dataset cut from groceries-voc, trained with the defaults inside a
time budget: does every class, the rare one included, get detected?

    python bench/imbalanced.py                       # defaults, --time 10 on the CPU
    python bench/imbalanced.py --name old --train-args "--optimizer sgd --lr 0.01 --no-context"

The dataset (written as a dataset YAML + split files under OUT; the images and XML stay in
../shared, nothing is copied): three drink classes photographed alike (``juice`` and ``water``
common, ``milk`` rare), about 300 training images drawn from the groceries train split with the
rare class held to at most ``--rare-share`` of the boxes, and for validation every image of the
three classes in the groceries val split. Then ``detect train --data YAML --device cpu --time
MINUTES`` with no other option (``--train-args`` adds some, to measure what a change does) and
``detect val --json`` on ``best.pt``. Prints the per-class table, checks the targets (every
class AP50 >= 0.5, mean >= 0.7) and writes ``OUT/NAME/result.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROCERIES = ROOT.parent / "shared" / "data" / "groceries-voc"
CLASSES = ("juice", "milk", "water")
RARE = "milk"


def count_boxes(xml: Path) -> int:
    from lxml import etree

    return len(etree.parse(str(xml)).findall("object"))


def build_dataset(src: Path, out: Path, n_train: int, rare_share: float, seed: int) -> dict:
    """Write ``out/imbalanced.yaml`` + classes and split files; returns the split statistics."""
    rng = random.Random(seed)
    ids = {s: (src / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val")}
    by_class = {c: [i for i in ids["train"] if i.split("/")[0] == c] for c in CLASSES}
    boxes = {i: count_boxes(src / "annotations" / f"{i}.xml") for c in CLASSES for i in by_class[c]}
    common = [c for c in CLASSES if c != RARE]
    picked: list[str] = []
    for c in common:  # the common classes share what the rare one leaves, about equally
        pool = sorted(by_class[c])
        rng.shuffle(pool)
        picked += pool[: round(n_train * (1 - rare_share) / len(common))]
    common_boxes = sum(boxes[i] for i in picked)
    pool = sorted(by_class[RARE])
    rng.shuffle(pool)
    rare: list[str] = []
    for i in pool:  # rare images while its share of the boxes stays <= rare_share
        b = sum(boxes[j] for j in rare) + boxes[i]
        if b / (common_boxes + b) > rare_share:
            break
        rare.append(i)
    train = sorted(picked + rare)
    val = sorted(i for i in ids["val"] if i.split("/")[0] in CLASSES)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "val.txt").write_text("\n".join(val) + "\n")
    (out / "imbalanced.yaml").write_text(
        f"# written by bench/imbalanced.py: {len(train)} train images of {CLASSES} ({RARE} rare), val from the val split\n"
        f"name: imbalanced-{seed}\nroot: {src}\nannotations: annotations\nimages: images\nclasses: {out / 'classes.txt'}\n"
        f"splits:\n  train: {out / 'train.txt'}\n  val: {out / 'val.txt'}\n"
    )
    per_class = {c: {"images": sum(1 for i in train if i.startswith(c + "/")),
                     "boxes": sum(boxes[i] for i in train if i.startswith(c + "/"))} for c in CLASSES}
    total = sum(v["boxes"] for v in per_class.values())
    for v in per_class.values():
        v["share"] = v["boxes"] / total
    return {"train_images": len(train), "val_images": len(val), "train_boxes": total, "per_class": per_class}


def run(cmd: list[str], log: Path) -> int:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(GROCERIES), help="the groceries-voc folder")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "imbalanced"))
    p.add_argument("--name", default="defaults", help="run name (folder under OUT)")
    p.add_argument("--train-images", type=int, default=300)
    p.add_argument("--rare-share", type=float, default=0.12, help="the rare class's share of the boxes (at most)")
    p.add_argument("--seed", type=int, default=0, help="which images are drawn")
    p.add_argument("--time", type=float, default=10.0, help="training budget in minutes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-args", default="", help="more `detect train` options (default: none)")
    args = p.parse_args()
    src, out = Path(args.src), Path(args.out)
    if not (src / "splits" / "train.txt").is_file():
        print(f"error: {src} is not the groceries-voc folder (no splits/train.txt)", file=sys.stderr)
        return 2
    stats = build_dataset(src, out, args.train_images, args.rare_share, args.seed)
    print(json.dumps(stats, indent=1))
    run_dir = out / args.name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    yaml_path = out / "imbalanced.yaml"
    py = sys.executable
    t0 = time.perf_counter()
    rc = run([py, "-m", "detect", "train", "--data", str(yaml_path), "--device", args.device, "--time", str(args.time),
              "--out", str(run_dir), "--no-progress", *shlex.split(args.train_args)], out / f"{args.name}.train.log")
    train_s = time.perf_counter() - t0
    if rc not in (0, 1) or not (run_dir / "best.pt").is_file():
        print(f"training failed (exit {rc}); see {out / f'{args.name}.train.log'}", file=sys.stderr)
        return 1
    val_json = run_dir / "val.json"
    rc = run([py, "-m", "detect", "val", "--weights", str(run_dir / "best.pt"), "--data", str(yaml_path), "--split", "val",
              "--device", args.device, "--json", str(val_json)], out / f"{args.name}.val.log")
    if rc not in (0, 1):
        print(f"detect val failed (exit {rc})", file=sys.stderr)
        return 1
    m = json.loads(val_json.read_text())
    ap = {c: m["per_class"][c]["ap50"] for c in CLASSES}
    ok = all(v >= 0.5 for v in ap.values()) and m["voc_ap50"] >= 0.7
    print("\n| class | train boxes (share) | val boxes | AP50 |\n| --- | --- | --- | --- |")
    for c in CLASSES:
        pc = stats["per_class"][c]
        print(f"| {c}{' (rare)' if c == RARE else ''} | {pc['boxes']} ({pc['share']:.1%}) | {m['per_class'][c]['n_gt']} | {ap[c]:.4f} |")
    print(f"| **mean** | {stats['train_boxes']} | {m['instances']} | **{m['voc_ap50']:.4f}** |")
    print(f"\ntargets (every class >= 0.5, mean >= 0.7): {'met' if ok else 'NOT met'}; training took {train_s / 60:.1f} min")
    result = {"args": vars(args), "dataset": stats, "ap50": ap, "voc_ap50": m["voc_ap50"], "coco_ap": m["coco_ap"],
              "train_seconds": train_s, "targets_met": ok}
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {run_dir / 'result.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
