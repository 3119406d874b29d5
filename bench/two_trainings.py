#!/usr/bin/env python3
"""Two CPU trainings at once: how much of its solo speed does each keep?

    python bench/two_trainings.py                 # SSD Lite0 224, batch 16, 2 epochs of 160 images

Renders a small synthetic shelf dataset (``detect synth``), then times ``detect train`` on it:
alone, and two processes started together, under each thread wait policy: ``spin`` (OpenMP's
default: a thread that reaches a barrier first keeps its core busy waiting for its siblings)
and ``passive`` (it sleeps; what ``detect train`` sets unless the user chose an
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` of their own; see detect/engine/cpu_alloc.py). Speed is
the trainer's own training images/s, averaged over the epochs after the first. Prints a table
and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {"spin": {"OMP_WAIT_POLICY": "ACTIVE"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def _train(data: Path, out: Path, env: dict, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "detect", "train", "--data", str(data), "--device", "cpu", "--workers", "0",
           "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--epochs", str(args.epochs), "--eval-every", "1000",
           "--out", str(out), "--no-progress"]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _speed(run: Path) -> float:
    rows = list(csv.DictReader(open(run / "results.csv")))
    later = rows[1:] or rows
    return sum(float(r["images_per_s"]) for r in later) / len(later)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--imgsz", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--policies", default="spin,passive")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "two_trainings.json"))
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="two-trainings-"))
    data = tmp / "shelves"
    subprocess.run([sys.executable, "-m", "detect", "synth", str(data), "--images", str(args.images), "--size",
                    str(args.imgsz), "--splits", "1,0,0"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    rows = []
    for name in [s.strip() for s in args.policies.split(",") if s.strip()]:
        env = POLICIES[name]
        t0 = time.perf_counter()
        solo = _train(data, tmp / f"{name}-solo", env, args)
        if solo.wait() != 0 and not (tmp / f"{name}-solo" / "results.csv").is_file():
            print(solo.stderr.read(), file=sys.stderr)
            return 1
        solo_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pair = [_train(data, tmp / f"{name}-pair{i}", env, args) for i in range(2)]
        for proc in pair:
            proc.wait()
        pair_s = time.perf_counter() - t0
        speeds = [_speed(tmp / f"{name}-pair{i}") for i in range(2)]
        row = {"policy": name, "solo_img_s": _speed(tmp / f"{name}-solo"), "pair_img_s": speeds,
               "solo_wall_s": solo_s, "pair_wall_s": pair_s}
        row["kept"] = [s / row["solo_img_s"] for s in speeds]
        rows.append(row)
        print(f"{name}: solo {row['solo_img_s']:.1f} img/s; two at once {speeds[0]:.1f} and {speeds[1]:.1f} img/s "
              f"({min(row['kept']):.0%} and {max(row['kept']):.0%} of solo)", flush=True)
    print("\n| thread wait policy | solo images/s | each of two at once | kept of solo (min) |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['policy']} | {r['solo_img_s']:.1f} | {r['pair_img_s'][0]:.1f}, {r['pair_img_s'][1]:.1f} | {min(r['kept']):.0%} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "cpus": os.cpu_count()}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
