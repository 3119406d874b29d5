"""``detect serve``: its options (:func:`add_serve_options`, called by :mod:`detect.cli`) and the command.

    detect serve [--weights W] [--host 127.0.0.1] [--port 8000] [--workers 1] [--max-batch 8]
                 [--max-wait-ms 5] [--api-key-file FILE] [--allow-urls HOST,...] ...

One worker process holds the model once and batches concurrent requests; ``--workers N`` starts
N such processes on one port (each with its own model and batcher, sharing the CPU cores), the
same as N replicas behind a load balancer: the service keeps no state between requests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from detect.checks import COUNT, FRACTION, NONNEG, checked
from detect.errors import UsageError
from detect.infer.sources import MAX_PIXELS

_ENV = "DETECT_SERVE_CONFIG"  # the settings handed to worker processes (--workers > 1)


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect serve`` (argparse only: fastapi loads when the command runs)."""
    count, nonneg, fraction, positive = COUNT, NONNEG, FRACTION, checked(float, "> 0")
    p.description = ("POST /v1/detect, a Roboflow-compatible route, Label Studio's ML backend, "
                     "GET /health, /metrics (Prometheus), /docs (OpenAPI) and a web page at /.")
    p.add_argument("--weights", help="checkpoint (RUN/best.pt) or the .onnx file of detect export (default: the shipped weights)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; put TLS and "
                   "--api-key-file in front of a public one)")
    p.add_argument("--port", type=checked(int, ">= 0"), default=8000, help="port (0: any free one, shown in the log)")
    p.add_argument("--workers", type=count, default=1, help="server processes, each holding the model once")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    p.add_argument("--threads", type=nonneg, default=0, help="CPU threads of ONNX Runtime per worker (0: as many as torch "
                   "uses; with --workers N, the cores shared out among the N)")
    p.add_argument("--conf", type=fraction, default=0.05, help="the model's score threshold: the lowest conf a "
                   "request can ask for (requests default to 0.25)")
    p.add_argument("--iou", type=fraction, default=0.45, help="NMS IoU threshold when a request gives none")
    p.add_argument("--max-det", type=count, default=1000, help="detections per image at most")
    p.add_argument("--max-batch", type=nonneg, default=0, help="images per forward pass at most (1: no batching; 0: 8 "
                   "on a GPU, 1 on the CPU, where a batch was no faster per image)")
    p.add_argument("--max-wait-ms", type=checked(float, ">= 0"), default=5.0,
                   help="how long the first image of a batch waits for more")
    p.add_argument("--max-queue", type=count, default=256, help="images waiting at most; beyond, requests get 503")
    p.add_argument("--max-upload-mb", type=positive, default=20.0, help="largest request body (413 above)")
    p.add_argument("--max-pixels", type=nonneg, default=MAX_PIXELS, help="larger images (width x height, read from "
                   "the header) are refused with 413, not decoded (0: no limit)")
    p.add_argument("--allow-urls", metavar="HOST[,HOST...]", default="",
                   help="hosts whose image URLs the server may fetch (?url=, Roboflow's ?image=); none by default")
    p.add_argument("--api-key-file", help="file of API keys, one a line; requests must send one")
    p.add_argument("--slice", help="sliced inference for large photos (auto | off | tile size), when this "
                   "version's Predictor has it")
    p.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL", ""),
                   help="Label Studio's address, to read its task images (/data/upload/...) for the ML backend; "
                   "its API token from $LABEL_STUDIO_API_KEY (default: $LABEL_STUDIO_URL)")
    p.add_argument("--label-studio-dir", metavar="DIR", default="",
                   help="collect the tasks corrected in Label Studio here (Pascal VOC, from its webhook); its "
                   "START_TRAINING event fine-tunes the served weights on them (detect train --weights)")
    p.add_argument("--finetune-minutes", type=positive, default=10.0, help="--time of that fine-tuning run")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level")


def config_from_args(args: argparse.Namespace):
    from detect.serve.service import ServeConfig, read_api_keys

    hosts = tuple(h.strip().lower() for h in (args.allow_urls or "").split(",") if h.strip())
    return ServeConfig(weights=args.weights, device=args.device, conf=args.conf, iou=args.iou, max_det=args.max_det,
                       threads=args.threads, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                       max_queue=args.max_queue, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                       allow_urls=hosts, api_keys=read_api_keys(args.api_key_file) if args.api_key_file else (),
                       slice=args.slice, label_studio_url=args.label_studio_url,
                       label_studio_token=os.environ.get("LABEL_STUDIO_API_KEY", ""),
                       label_studio_dir=args.label_studio_dir, finetune_minutes=args.finetune_minutes)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from detect.serve.app import create_app
    except ImportError as e:
        raise UsageError(f"detect serve needs the serve extra: pip install 'retail-detect[serve]' ({e})") from None
    cfg = config_from_args(args)
    if args.workers == 1:
        app = create_app(cfg)  # the model loads here: bad weights are a usage error before the port opens
        print(f"detect serve: {app.state.service.model_name}, {len(app.state.service.classes)} classes; "
              f"http://{args.host}:{args.port}/ (docs at /docs)", file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    from detect.infer.weights import resolve_weights

    resolve_weights(cfg.weights)  # each worker loads it: at least say now when it is missing
    cfg.threads = worker_threads(cfg.threads, args.workers)
    os.environ[_ENV] = json.dumps(cfg.to_env())
    uvicorn.run("detect.serve.serve_cli:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level)
    return 0


def worker_threads(threads: int, workers: int) -> int:
    """ONNX Runtime threads of each of ``workers`` processes: ``--threads`` when given, else the
    cores shared out (every process taking every core ran 2N threads on N cores, each waiting
    for the others at every operator)."""
    return threads or max(1, (os.cpu_count() or 1) // workers)


def app_from_env():
    """The app of one worker process of ``--workers N`` (settings from the parent's environment)."""
    import torch

    from detect.serve.app import create_app
    from detect.serve.service import ServeConfig

    cfg = ServeConfig.from_env(json.loads(os.environ[_ENV]))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # torch's own ops (decode, NMS) on this worker's share too
    return create_app(cfg)
