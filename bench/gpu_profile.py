#!/usr/bin/env python3
"""Where a GPU batch's time goes, for inference and for training, and what each option buys.

    python bench/gpu_profile.py                          # both parts, JSON to bench/out/gpu_profile.json
    python bench/gpu_profile.py --parts infer --iters 30 # inference only

Inference (issue 14's GPU target: >= 5,000 images/s end to end at 320x320, batch 256, fp16,
trained weights): the shipped weights through :class:`~detect.infer.predict.Predictor`, timed
stage by stage with a CUDA synchronisation after each (host copy into the pinned buffer, the
upload, preprocessing, the network with its box decoding, selection (threshold, NMS), mapping to
image pixels and the copy to the host), then end to end with the options that can change the
network's time: cuDNN's autotuner, NCHW against channels_last, a CUDA graph of the network.

Training (target: >= 900 images/s at 320 px with the loader never the bottleneck): synthetic
shelves at 320 px; the loader alone (images/s out of ``train_loader`` with the run's workers),
the step alone (``train_one_epoch`` over one batch already on the GPU, repeated), and both
together, for a few batch sizes. The loader's rate beside the step's says which one limits.

Each part also writes the top CUDA kernels of one batch (``torch.profiler``) as text. Prints a
table and writes JSON.
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
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, iters: int, warmup: int = 3) -> dict:
    """Median and mean wall time of ``fn()`` (ms), CUDA-synchronised around each call."""
    for _ in range(warmup):
        fn()
    _sync()
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync()
        t.append(time.perf_counter() - t0)
    return {"p50_ms": round(float(np.median(t)) * 1e3, 3), "mean_ms": round(float(np.mean(t)) * 1e3, 3)}


def _top_kernels(prof, n: int = 25) -> str:
    for key in ("self_device_time_total", "self_cuda_time_total", "self_cpu_time_total"):
        try:
            return prof.key_averages().table(sort_by=key, row_limit=n, max_name_column_width=70)
        except (KeyError, AttributeError, RuntimeError):
            continue
    return ""


def _graphed(fn, example: torch.Tensor):
    """``fn`` captured as a CUDA graph on a static copy of ``example``'s shape; returns a
    callable that copies its input in, replays, and returns the static outputs."""
    static_x = example.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(static_x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_out = fn(static_x)

    def run(x: torch.Tensor):
        static_x.copy_(x)
        g.replay()
        return static_out

    return run


def _batch(S: int, B: int) -> list[np.ndarray]:
    """``B`` synthetic shelves S x S (64 distinct ones, repeated): bench/infer.py's inputs."""
    from infer import _images

    distinct = _images(min(B, 64), S, S)
    return [distinct[i % len(distinct)] for i in range(B)]


@torch.inference_mode()
def infer_part(args, out_dir: Path) -> dict:
    from detect.infer.predict import Predictor

    S, B = args.size, args.batch
    images = _batch(S, B)
    sizes = [im.shape[:2] for im in images]
    res: dict = {"batch": B, "input": f"{S}x{S}"}
    for bench_flag in (False, True):
        torch.backends.cudnn.benchmark = bench_flag
        pred = Predictor(args.weights, device=args.device, half=True, conf=args.conf, max_det=args.max_det)
        tag = "cudnn_benchmark" if bench_flag else "default"
        st: dict = {}
        host = np.empty((B, S, S, 3), np.uint8)

        def host_copy():
            for i, im in enumerate(images):
                host[i] = im

        st["host_copy"] = _timed(host_copy, args.iters)
        if args.device != "cpu":
            st["upload"] = _timed(lambda: pred._upload(images), args.iters)
        st["preprocess"] = _timed(lambda: pred.preprocess(images), args.iters)
        x = pred.preprocess(images)
        st["network"] = _timed(lambda: pred.model.decoded(x), args.iters)
        boxes, scores = pred.model.decoded(x)
        st["select"] = _timed(lambda: pred.model.postprocess(boxes, scores), args.iters)
        outs = pred.model.postprocess(boxes, scores)
        st["to_image"] = _timed(lambda: pred._postprocess(outs, sizes), args.iters)
        st["end_to_end"] = _timed(lambda: pred.predict(images), args.iters)
        st["detections_per_image"] = round(sum(len(d) for d in pred.predict(images)) / B, 2)
        st["network_nchw"] = _timed(lambda: pred.model.decoded(x.contiguous()), args.iters)
        try:
            if args.device == "cpu":
                raise RuntimeError("CUDA graphs need CUDA")
            g = _graphed(pred.model.decoded, x)
            st["network_cuda_graph"] = _timed(lambda: g(x), args.iters)
        except Exception as e:  # report, do not stop the profile
            st["network_cuda_graph"] = f"failed: {type(e).__name__}: {e}"
        for k, v in st.items():
            if isinstance(v, dict):
                v["images_per_s"] = round(B / (v["p50_ms"] / 1e3), 1)
        res[tag] = st
        if bench_flag:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                pred.predict(images)
                _sync()
            (out_dir / "infer_kernels.txt").write_text(_top_kernels(prof))
    return res


@torch.inference_mode()
def compile_part(args) -> dict:
    """The network under ``torch.compile(mode=args.compile)`` (compile time reported apart)."""
    from detect.infer.predict import Predictor

    S, B = args.size, args.batch
    images = _batch(S, B)
    res: dict = {"mode": args.compile}
    torch.backends.cudnn.benchmark = True
    pred = Predictor(args.weights, device=args.device, half=True, conf=args.conf, max_det=args.max_det)
    x = pred.preprocess(images)
    t0 = time.perf_counter()
    try:
        comp = torch.compile(pred.model.decoded, mode=args.compile)
        comp(x)
        _sync()
        res["compile_s"] = round(time.perf_counter() - t0, 1)
        r = _timed(lambda: comp(x), args.iters)
        r["images_per_s"] = round(B / (r["p50_ms"] / 1e3), 1)
        res["network_compiled"] = r
        eager = _timed(lambda: pred.model.decoded(x), args.iters)
        eager["images_per_s"] = round(B / (eager["p50_ms"] / 1e3), 1)
        res["network_eager"] = eager
    except Exception as e:
        res["network_compiled"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    return res


def _train_args(data: str, batch: int, workers: int, device: str, extra: list[str]) -> list[str]:
    return ["train", "--data", data, "--imgsz", "320", "--batch", str(batch), "--workers", str(workers),
            "--device", device, "--pretrained", "none", "--no-progress", *extra]


def train_part(args, out_dir: Path) -> dict:
    from detect.cli import build_parser
    from detect.engine.distributed import DistInfo
    from detect.engine.ema import ModelEMA
    from detect.engine.loader import to_device, train_loader
    from detect.engine.loop import train_one_epoch
    from detect.engine.optim import build_optimizer, build_scheduler
    from detect.engine.resolve import resolved_data
    from detect.engine.train_cli import config_from_args
    from detect.models.build import build_resolved
    from loader import _rate

    data = args.synth
    if not Path(data).is_dir():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "detect", "synth", data, "--images", str(args.train_images), "--seed", "1",
                        "--size", "320", "--workers", str(args.workers)], check=True, stdout=subprocess.DEVNULL)
        print(f"synth: {args.train_images} images in {time.perf_counter() - t0:.1f} s", flush=True)
    res: dict = {"images": args.train_images, "workers": args.workers}
    torch.backends.cudnn.benchmark = True
    info = DistInfo()
    device = torch.device(args.device)
    for batch in args.train_batches:
        cfg = config_from_args(build_parser().parse_args(_train_args(data, batch, args.workers, args.device, ["--out", "/tmp/gp_unused"])))
        cfg, d = resolved_data(cfg)  # classes, mean/std: the run's own config
        loader, sampler = train_loader(d.train, batch, d.collate, info, 0, args.workers, device)
        row: dict = {}
        row["loader_images_per_s"] = round(_rate(loader, sampler, 1), 1)  # the loader alone, after a warm-up epoch
        # the step alone: one batch already on the GPU, repeated
        model = build_resolved(cfg.model, cfg.preprocess).to(device).to(memory_format=torch.channels_last)
        t = cfg.train
        optimizer = build_optimizer(model, t)
        steps = max(10, args.train_steps)
        scheduler = build_scheduler(optimizer, t, steps)
        amp = t.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        ema = ModelEMA(model, t.ema_decay) if t.ema else None
        imgs, targets = next(iter(loader))
        imgs, targets = to_device(imgs, targets, device, True)
        fixed = [(imgs, targets)] * steps
        kw = dict(amp=amp, clip_grad=t.clip_grad, channels_last=True, log_every=10**9)
        train_one_epoch(model, model, optimizer, scheduler, scaler, ema, fixed[:5], device, info, **kw)  # warm-up, autotune
        _sync()
        t0 = time.perf_counter()
        train_one_epoch(model, model, optimizer, scheduler, scaler, ema, fixed, device, info, **kw)
        _sync()
        row["step_images_per_s"] = round(steps * batch / (time.perf_counter() - t0), 1)
        # both: one epoch through the real loader
        sampler.set_epoch(2)
        _sync()
        stats = train_one_epoch(model, model, optimizer, scheduler, scaler, ema, loader, device, info, **kw)
        _sync()
        row["train_images_per_s"] = round(stats.images_per_s, 1)
        row["data_wait_pct"] = round(100 * stats.data_wait_s / max(stats.seconds, 1e-9), 1)
        if batch == args.train_batches[0]:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                train_one_epoch(model, model, optimizer, scheduler, scaler, ema, fixed[:3], device, info, **kw)
                _sync()
            (out_dir / "train_kernels.txt").write_text(_top_kernels(prof))
            (out_dir / "train_cpu_ops.txt").write_text(
                prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70))
        res[f"batch_{batch}"] = row
        print(f"train batch {batch}: {row}", flush=True)
        del loader
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="infer,train", help="comma-separated: infer, train, compile")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to check the script itself")
    ap.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--compile", default="default", help="part compile: torch.compile's mode for the network")
    ap.add_argument("--synth", default="/tmp/gp_synth")
    ap.add_argument("--train-images", type=int, default=3072)
    ap.add_argument("--train-batches", type=lambda s: [int(v) for v in s.split(",")], default=[32, 64, 128])
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1))
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_profile: no CUDA device (--device cpu for a dry run of the script)", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__}
    parts = args.parts.split(",")
    if "infer" in parts:
        result["infer"] = infer_part(args, out_dir)
        print(json.dumps(result["infer"], indent=1), flush=True)
    if "train" in parts:
        result["train"] = train_part(args, out_dir)
    if "compile" in parts and args.compile:
        result["compile"] = compile_part(args)
        print(json.dumps(result["compile"]), flush=True)
    path = Path(args.json or out_dir / "gpu_profile.json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    if "infer" in result:
        print("\n| stage (batch %d, fp16) | p50 ms default | p50 ms cudnn.benchmark | images/s (benchmark) |" % args.batch)
        print("| --- | --- | --- | --- |")
        a, b = result["infer"]["default"], result["infer"]["cudnn_benchmark"]
        for k, v in b.items():
            if isinstance(v, dict):
                av = a.get(k, {})
                print(f"| {k} | {av.get('p50_ms', '-') if isinstance(av, dict) else av} | {v['p50_ms']} | {v['images_per_s']} |")
    if "train" in result:
        print("\n| batch | loader images/s | step images/s | train images/s | data wait % |")
        print("| --- | --- | --- | --- | --- |")
        for k, v in result["train"].items():
            if k.startswith("batch_"):
                print(f"| {k[6:]} | {v['loader_images_per_s']} | {v['step_images_per_s']} | {v['train_images_per_s']} | {v['data_wait_pct']} |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
