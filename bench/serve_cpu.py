#!/usr/bin/env python3
"""Why batching concurrent requests does not pay on a CPU: where ``Predictor.predict``'s time
goes for one photo against eight, and what two model runs side by side give instead.

    python bench/serve_cpu.py                      # shipped weights, bench/serve.py's 1-MP JPEG
    python bench/serve_cpu.py --rounds 10 --threads 2

Measured in one process, in turns (a machine whose load changes weighs on every row alike):
1. ``Predictor.predict`` of 1 photo against 8 photos at once, per photo, split into the
   slicing plan's probe, the network calls (preprocess, ONNX Runtime, the SSD's selection) and
   the rest (merging, mapping back), with the network inputs per photo and per call (a 1-MP
   photo is a probe of several views and a few slices: one request is a batch already);
2. the network alone (``Predictor._detect``) per input at batch 1, 2, 4, 8, 16, 48;
3. throughput of ``--threads`` ONNX Runtime threads on one run against that many runs side by
   side (threads of this process, each its own Predictor on one thread): what a CPU server
   gains from serving requests at once instead of batching them.
Prints a table and writes JSON (default ``bench/out/serve_cpu.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


class Stopwatch:
    """Seconds spent inside wrapped callables, by name (nested calls counted in each)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return timed


def split_predict(pred, images: list, rounds: int) -> dict:
    """Per-photo ms of ``pred.predict(images)``, split (see the module docstring), median of ``rounds``."""
    from detect.infer import slice_run

    parts: dict[str, list[float]] = {}
    for _ in range(rounds):
        sw = Stopwatch()
        orig = (pred._detect, pred.preprocess, pred.runner, slice_run.plan)
        inputs = []
        counted = sw.wrap("network calls", orig[0])
        pred._detect = lambda crops: (inputs.append(len(crops)), counted(crops))[1]
        pred.preprocess = sw.wrap("preprocess", orig[1])
        pred.runner = sw.wrap("onnx runtime + selection", orig[2])
        slice_run.plan = sw.wrap("plan (probe)", orig[3])
        try:
            t0 = time.perf_counter()
            pred.predict(images)
            total = time.perf_counter() - t0
        finally:
            pred._detect, pred.preprocess, pred.runner, slice_run.plan = orig
        sw.seconds["total"] = total
        for k, v in sw.seconds.items():
            parts.setdefault(k, []).append(v * 1000.0 / len(images))
    out = {k: round(float(np.median(v)), 1) for k, v in parts.items()}
    out["network inputs per photo"] = round(sum(inputs) / len(images), 2)
    out["inputs per network call"] = round(sum(inputs) / len(inputs), 2)
    return out


def network_batches(pred, image, sizes: list[int], rounds: int) -> dict:
    """Per-input ms of one network call (``Predictor._detect``) on ``b`` copies of the photo's
    probe-sized centre crop, for each ``b``, median of ``rounds`` (in turns)."""
    S = pred.imgsz
    h, w = image.shape[:2]
    side = min(h, w, 2 * S)
    crop = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            t0 = time.perf_counter()
            pred._detect([crop] * b)
            times[b].append((time.perf_counter() - t0) * 1000.0 / b)
    return {str(b): round(float(np.median(v)), 2) for b, v in times.items()}


def side_by_side(weights, image, threads: int, seconds: float, rounds: int) -> dict:
    """Photos per second: one Predictor on ``threads`` ONNX Runtime threads, one photo at a time,
    against ``threads`` Predictors on one thread each running at once (threads of this process),
    in alternating rounds of ``seconds``; the median round of each."""
    from detect.infer.predict import Predictor

    one = Predictor(weights, device="cpu", conf=0.05, threads=threads)
    many = [Predictor(weights, device="cpu", conf=0.05, threads=1) for _ in range(threads)]
    for p in [one, *many]:
        p.predict([image])  # warm-up

    def loop(p, end: float, counts: list, k: int) -> None:
        while time.perf_counter() < end:
            p.predict([image])
            counts[k] += 1

    rates: dict[str, list[float]] = {"one run, threads": [], "runs side by side, 1 thread each": []}
    for _ in range(rounds):
        counts = [0]
        t0 = time.perf_counter()
        loop(one, t0 + seconds, counts, 0)
        rates["one run, threads"].append(counts[0] / (time.perf_counter() - t0))
        counts = [0] * len(many)
        t0 = time.perf_counter()
        workers = [threading.Thread(target=loop, args=(p, t0 + seconds, counts, k)) for k, p in enumerate(many)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        rates["runs side by side, 1 thread each"].append(sum(counts) / (time.perf_counter() - t0))
    out = {k: round(float(np.median(v)), 2) for k, v in rates.items()}
    out["rounds"] = {k: [round(x, 2) for x in v] for k, v in rates.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="default: the shipped weights")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="cores to compare on (step 3)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each throughput round (step 3)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "serve_cpu.json"))
    args = ap.parse_args(argv)

    import cv2
    import torch

    from detect.data.synth import render_scene
    from detect.infer.predict import Predictor
    from detect.utils import atomic_write_text

    image = render_scene(7, 0, size=1155, kind="shelf").image  # bench/serve.py's photo: 1155 x 866
    image = cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)
    pred = Predictor(args.weights, device="cpu", conf=0.05)
    pred.predict([image])
    sides = pred.slice_sides([image])
    out: dict = {"image": list(image.shape[:2]), "imgsz": pred.imgsz, "slice_side": sides[0],
                 "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    one, eight = [], []
    for _ in range(args.rounds):  # in turns
        one.append(split_predict(pred, [image], 1))
        eight.append(split_predict(pred, [image] * 8, 1))
    med = lambda rows: {k: round(float(np.median([r.get(k, 0.0) for r in rows])), 2) for k in rows[0]}  # noqa: E731
    out["predict_1"], out["predict_8"] = med(one), med(eight)
    out["network_per_input_ms"] = network_batches(pred, image, [1, 2, 4, 8, 16, 48], args.rounds)
    out["side_by_side"] = side_by_side(args.weights, image, args.threads, args.seconds, args.rounds)

    print(f"photo {image.shape[1]}x{image.shape[0]}, model input {pred.imgsz}, slice side {sides[0]}; "
          f"{os.cpu_count()} CPUs, torch threads {out['torch_threads']}")
    print(f"{'Predictor.predict, ms per photo':<34}{'1 photo':>10}{'8 photos':>10}")
    for k in out["predict_1"]:
        print(f"  {k:<32}{out['predict_1'][k]:>10}{out['predict_8'].get(k, 0.0):>10}")
    print("network call, ms per input at batch " + ", ".join(f"{b}: {v}" for b, v in out["network_per_input_ms"].items()))
    s = out["side_by_side"]
    print(f"photos/s: one run on {args.threads} threads {s['one run, threads']}; {args.threads} runs side by side "
          f"{s['runs side by side, 1 thread each']} (rounds {s['rounds']})")
    save = Path(args.json)
    save.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(save, json.dumps(out, indent=2) + "\n")
    print(f"wrote {save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
