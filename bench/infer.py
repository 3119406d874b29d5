#!/usr/bin/env python3
"""Inference speed, end to end from uint8 BGR images to boxes in original pixels.

    python bench/infer.py                                   # CPU, 2 threads, batch 1, 640x480
    python bench/infer.py --device cuda --half --batch 256  # GPU throughput
    python bench/infer.py --video-frames 5000               # video: memory flat over 5,000 frames
    python bench/infer.py --models ssd_int8,tv_ssdlite320 --video-model ssd_int8   # INT8, video included

Contenders get the same images, the same number of classes, score threshold and maximum
detections, and random weights: the default SSD (``detect.models.build``, the whole
:class:`~detect.infer.predict.Predictor` path; ``ssd`` with the default backend, ONNX Runtime
on a CPU, and ``ssd_torch`` on eager PyTorch with BatchNorm folded), torchvision's ``ssdlite320_mobilenet_v3_large``
and ``fasterrcnn_mobilenet_v3_large_320_fpn`` (each with its own transform, as users run them),
and our Fast R-CNN with each proposal source that works on a new image. Ours is also timed with
the shipped trained weights (reported beside; trained weights give real detections, so NMS has
real work); ``ssd_int8`` is the shipped weights with the network quantized to INT8
(``detect predict --int8``: ONNX Runtime QDQ, calibrated on synthetic shelves, quantized on
first use and cached, outside the timed loop). Each model runs in its own subprocess so its peak RSS is its own.

Video: a 1280x720 30 fps MP4 is rendered (a panning synthetic shelf), then ``detect predict``'s
loop decodes it, detects, draws and writes the annotated MP4; fps and RSS (sampled every
250 frames) are reported. Prints a table and writes JSON (default ``bench/out/infer.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTENDERS = ("ssd", "ssd_torch", "ssd_trained", "ssd_int8", "tv_ssdlite320", "tv_fasterrcnn_mnv3_320", "fast_rcnn_rpn", "fast_rcnn_selective_search")


SPEEDUP_TARGETS = {"ssd": 1.5, "ssd_int8": 3.0}  # over ssdlite320 on the CPU at batch 1 (ssd_int8: issue 14)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _images(n: int, w: int, h: int, seed: int = 0):
    """``n`` synthetic shelf photos resized to w x h (same inputs for every contender)."""
    import cv2

    from detect.data.synth import render_scene

    return [cv2.resize(render_scene(seed, i, size=max(w, h), kind="shelf").image, (w, h)) for i in range(n)]


def _our_predictor(name: str, args, threads: int | None = None):
    """Ours through :class:`Predictor`; ``threads``: ONNX Runtime's operator threads (None: the
    predictor's own choice)."""
    import torch

    from detect.config import ModelConfig, Preprocess
    from detect.infer.predict import Predictor
    from detect.models.build import build_model

    device = torch.device(args.device)
    if name in ("ssd_trained", "ssd_int8"):
        return Predictor(args.weights, device=device, half=args.half, conf=args.conf, max_det=args.max_det,
                         int8=name == "ssd_int8", threads=threads)
    cfg = ModelConfig(name="fast_rcnn" if name.startswith("fast_rcnn") else "ssd", pretrained="none",
                      num_classes=args.classes, score_thresh=args.conf, max_det=args.max_det)
    if name.startswith("fast_rcnn_"):
        cfg.fast_rcnn.proposals = name[len("fast_rcnn_"):]
    torch.manual_seed(0)
    model = build_model(cfg, Preprocess(imgsz=args.imgsz))
    names = [f"class{i}" for i in range(args.classes)]
    backend = "torch" if name == "ssd_torch" else "auto"  # auto: ONNX Runtime on the CPU
    return Predictor.from_model(model, Preprocess(imgsz=args.imgsz), names, device=device, half=args.half, conf=args.conf,
                                backend=backend, threads=threads)


def _torchvision_runner(name: str, args):
    """torchvision's own end-to-end path: uint8 BGR -> float RGB tensor -> model([img])."""
    import numpy as np
    import torch
    from torchvision.models import detection as tvd

    device = torch.device(args.device)
    kw = dict(weights=None, weights_backbone=None, num_classes=args.classes + 1)  # + background
    if name == "tv_ssdlite320":
        model = tvd.ssdlite320_mobilenet_v3_large(score_thresh=args.conf, detections_per_img=args.max_det, **kw)
    else:
        model = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(box_score_thresh=args.conf, box_detections_per_img=args.max_det, **kw)
    model.eval().to(device)
    if args.half:
        model.half()
    dtype = torch.float16 if args.half else torch.float32

    @torch.inference_mode()
    def run(images: list) -> list:
        batch = [torch.from_numpy(np.ascontiguousarray(im[..., ::-1])).to(device).permute(2, 0, 1).to(dtype) / 255 for im in images]
        out = model(batch)
        return [{k: v.cpu() for k, v in o.items()} for o in out]

    return run


def bench_one(name: str, args) -> dict:
    """Time one contender in this process: images/s, latency percentiles, peak RSS."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    w, h = args.size
    images = _images(max(args.batch, 8), w, h)
    import torchvision  # noqa: F401  (imported by every contender: part of the baseline)

    base_rss = _peak_rss_mb()  # torch + libraries + the input images, before any model exists
    if name.startswith("tv_"):
        run = _torchvision_runner(name, args)
    else:
        pred = _our_predictor(name, args, threads=args.threads)  # the same threads as torchvision's models
        run = pred.predict
    batches = [[images[(i * args.batch + j) % len(images)] for j in range(args.batch)] for i in range(args.iters + args.warmup)]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    ndet = 0
    for b in batches[: args.warmup]:
        run(b)
    sync()
    times = []
    for b in batches[args.warmup :]:
        t0 = time.perf_counter()
        out = run(b)
        sync()
        times.append(time.perf_counter() - t0)
        ndet += sum(len(o) if not isinstance(o, dict) else len(o["boxes"]) for o in out)
    t = np.asarray(times)
    return {
        "model": name, "device": args.device, "half": args.half, "batch": args.batch, "input": f"{w}x{h}",
        "imgsz": args.imgsz, "threads": args.threads, "iters": args.iters,
        "images_per_s": round(args.batch * len(t) / t.sum(), 2),
        "images_per_s_p50": round(args.batch / float(np.median(t)), 2),  # robust to a shared, busy CPU
        "latency_ms_p50": round(float(np.median(t)) * 1000, 2), "latency_ms_p90": round(float(np.percentile(t, 90)) * 1000, 2),
        "detections_per_image": round(ndet / (len(t) * args.batch), 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_above_imports_mb": round(_peak_rss_mb() - base_rss, 1),
        "gpu_peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if args.device.startswith("cuda") else None,
    }


def make_clip(path: Path, frames: int, w: int = 1280, h: int = 720, fps: float = 30.0) -> Path:
    """A panning view over a wide synthetic shelf (the camera moves 4 px a frame)."""
    import cv2
    import numpy as np

    from detect.data.synth import render_scene

    scenes = [render_scene(7, i, size=h * 4 // 3, kind="shelf").image for i in range(3)]
    wide = np.concatenate([cv2.resize(s, (s.shape[1] * h // s.shape[0], h)) for s in scenes], axis=1)  # same height
    span = wide.shape[1] - w
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        x = (4 * i) % (2 * span)
        x = x if x < span else 2 * span - x  # back and forth
        vw.write(np.ascontiguousarray(wide[:, x : x + w]))
    vw.release()
    return path


def bench_video(args) -> dict:
    """``detect predict`` on a 1280x720 30 fps clip: decode, detect, draw, write MP4."""
    import threading

    import torch

    from detect.infer.predict_cli import predict_batch, run as predict_run

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-video-"))
    clip = make_clip(tmp / "clip.mp4", args.video_frames)
    name = args.video_model
    if name == "auto":
        name = "ssd_trained" if Path(args.weights or "").is_file() or _shipped() else "ssd"
    pred = _our_predictor(name, args, threads=args.video_threads or None)
    samples, stop = [], threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            samples.append(round(_rss_mb(), 1))

    t = threading.Thread(target=sample, daemon=True)
    rss0 = _rss_mb()
    t.start()
    batch = args.video_batch or predict_batch(([str(clip)], None))  # detect predict's default for a video file
    summary = predict_run(pred, str(clip), tmp / "out", batch=batch, save=True, progress=False)
    stop.set()
    t.join()
    n = summary.frames
    k = max(len(samples) // 4, 1)
    return {
        "model": f"{name} (video)", "input": "1280x720 mp4v 30 fps", "frames": n, "threads": args.threads, "batch": batch,
        "fps": round(n / summary.elapsed, 2), "seconds": round(summary.elapsed, 2), "failed": len(summary.failed),
        "rss_mb_start": round(rss0, 1), "rss_mb_first_quarter_max": max(samples[:k], default=None),
        "rss_mb_last_quarter_max": max(samples[-k:], default=None), "rss_mb_samples": samples[:: max(len(samples) // 40, 1)],
        "output": str(tmp / "out"),
    }


def _shipped() -> bool:
    from detect.infer.weights import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS.is_file()


def _child(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--one", name] + [a for a in sys.argv[1:] if a != "--one"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"model": name, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    cols = ("model", "device", "batch", "input", "images_per_s", "images_per_s_p50", "latency_ms_p50", "detections_per_image", "peak_rss_mb",
            "peak_rss_above_imports_mb")
    lines = [" | ".join(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']} | error: {r['error']}")
        else:
            lines.append(" | ".join(str(r.get(c, "")) for c in cols))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="640x480", help="input images WxH")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--classes", type=int, default=10, help="object classes (synthetic shelves: 10)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--weights", help="trained checkpoint (default: the shipped weights)")
    ap.add_argument("--models", default=",".join(CONTENDERS), help="comma-separated subset of " + ",".join(CONTENDERS))
    ap.add_argument("--video-frames", type=int, default=300, help="frames of the 1280x720 clip (0: skip the video run)")
    ap.add_argument("--video-model", default="auto", choices=["auto", "ssd", "ssd_trained", "ssd_int8"],
                    help="model of the video run (auto: the trained FP32 SSD when there are weights)")
    ap.add_argument("--video-threads", type=int, default=0,
                    help="ONNX Runtime threads of the video run (0: detect predict's default, --threads of this script)")
    ap.add_argument("--video-batch", type=int, default=0, help="frames per batch of the video run (0: detect predict's default)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "infer.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.half and not args.device.startswith("cuda"):
        ap.error("--half needs --device cuda")
    if args.one:  # child process: one contender, JSON on the last stdout line
        res = bench_video(args) if args.one == "video" else bench_one(args.one, args)
        print(json.dumps(res))
        return 0
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        if name in ("ssd_trained", "ssd_int8") and not (args.weights or _shipped()):
            rows.append({"model": name, "error": "no trained weights (weights/ missing); pass --weights"})
            continue
        rows.append(_child(name, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    base = {r["model"]: r.get("images_per_s") for r in rows if "images_per_s" in r}
    p50 = {r["model"]: r.get("images_per_s_p50") for r in rows if "images_per_s_p50" in r}
    ours = [m for m in base if not m.startswith("tv_")]
    if ours and base.get("tv_ssdlite320"):  # the first of ours over ssdlite320, then the others
        for m in ours:
            target = f" (target >= {SPEEDUP_TARGETS[m]}x on CPU)" if m in SPEEDUP_TARGETS and args.device == "cpu" else ""
            print(f"speed-up of {m} over ssdlite320_mobilenet_v3_large: {base[m] / base['tv_ssdlite320']:.2f}x{target}")
            if p50.get(m) and p50.get("tv_ssdlite320"):
                print(f"  (from median latencies: {p50[m] / p50['tv_ssdlite320']:.2f}x)")
    if args.device.startswith("cuda"):
        for m in ("ssd", "ssd_trained"):
            if base.get(m):
                print(f"GPU {m}: {base[m]:.0f} images/s at batch {args.batch}{' fp16' if args.half else ''} (target >= 3000 at batch 256, --half)")
    video = _child("video", args) if args.video_frames > 0 and not args.device.startswith("cuda") else None
    if video:
        print(f"video: {video.get('frames')} frames of 1280x720 at {video.get('fps')} fps, {video.get('batch')} per batch (target >= 60); "
              f"RSS first quarter {video.get('rss_mb_first_quarter_max')} MB, last quarter {video.get('rss_mb_last_quarter_max')} MB"
              if "error" not in video else f"video: error: {video['error']}")
    print(table(rows))
    out = {"host": {"cpus": os.cpu_count(), "torch_threads": args.threads, "platform": sys.platform}, "args": {k: v for k, v in vars(args).items() if k != "one"},
           "results": rows, "video": video}
    from detect.utils import atomic_write_text

    atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
