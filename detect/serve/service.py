"""The model behind every route: one :class:`~detect.infer.predict.Predictor` (loaded once),
its :class:`~detect.serve.batcher.Batcher`, and the request options turned into what the
Predictor understands. The web API, the Roboflow route, the Label Studio backend and the CVAT
function all detect through :meth:`Service.detect`, the same ``Predictor.predict`` and
postprocess as ``detect predict``.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from detect.errors import UsageError
from detect.infer.predict import Predictor
from detect.infer.sources import MAX_PIXELS
from detect.serve.batcher import Batcher, Busy, Closed, Key, Result, filter_detections
from detect.serve.errors import ApiError
from detect.serve.metrics import Metrics
from detect.serve.uploads import decode_upload
from detect.structures import Detections


@dataclass
class ServeConfig:
    """Settings of ``detect serve`` (one per option; the CLI fills it, tests build it)."""

    weights: Optional[str] = None  # None: the shipped weights
    device: str = "auto"
    conf: float = 0.05  # the Predictor's score threshold: the lowest ``conf`` a request can ask for
    default_conf: float = 0.25  # a request's conf when it gives none (as detect predict)
    iou: float = 0.45
    max_det: int = 1000
    threads: int = 0  # ONNX Runtime threads (0: as many as torch uses)
    max_batch: int = 0  # 0: 8 on a GPU, 1 on the CPU (where a batch is no faster per image: bench/RESULTS.md)
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_upload_mb: float = 20.0
    max_pixels: int = MAX_PIXELS
    allow_urls: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    slice: Optional[str] = None  # Predictor(slice=...) when this Predictor has sliced inference
    label_studio_url: str = ""  # where Label Studio's own files (/data/upload/...) are read
    label_studio_token: str = field(default="", repr=False)
    label_studio_dir: str = ""  # corrected tasks collected here (Pascal VOC) by the webhook
    finetune_minutes: float = 10.0  # detect train --time of the webhook's START_TRAINING

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_env(self) -> dict:
        """JSON-ready settings, to rebuild this config in a worker process."""
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_env(cls, d: dict) -> "ServeConfig":
        d = dict(d)
        d["allow_urls"] = tuple(d.get("allow_urls") or ())
        d["api_keys"] = tuple(d.get("api_keys") or ())
        return cls(**d)


def read_api_keys(path: str | Path) -> tuple[str, ...]:
    """API keys from a file, one a line (blank lines and ``#`` comments skipped)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--api-key-file {p}: cannot be read ({e})") from None
    keys = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise UsageError(f"--api-key-file {p}: no keys in it (one key a line)")
    short = [k for k in keys if len(k) < 16]
    if short:
        raise UsageError(f"--api-key-file {p}: {len(short)} key(s) shorter than 16 characters; use long random keys "
                         "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return keys


@dataclass
class Options:
    """One request's options, checked: score threshold, NMS IoU, detections kept, classes
    kept (0-based ids, None: all), slicing (None: the server's)."""

    conf: float
    iou: float
    max_det: int
    keep: Optional[np.ndarray] = None
    slice: Optional[str] = None

    def to_dict(self, classes: list[str]) -> dict:
        return {"conf": self.conf, "iou": self.iou, "max_det": self.max_det,
                "classes": None if self.keep is None else [classes[int(i)] for i in self.keep],
                **({"slice": self.slice} if self.slice is not None else {})}


class Service:
    """The loaded model and its batcher (see the module docstring)."""

    def __init__(self, cfg: ServeConfig, predictor: Optional[Predictor] = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        if predictor is None:
            extra = {}
            if cfg.slice is not None:
                if not _init_takes_slice():
                    raise UsageError("--slice: this version's Predictor has no sliced inference")
                extra["slice"] = _slice_value(cfg.slice)
            predictor = Predictor(cfg.weights, device=cfg.device, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det,
                                  threads=cfg.threads or None, **extra)
        self.predictor = predictor
        self.classes: list[str] = list(predictor.classes)
        self.model_name = Path(str(predictor.weights)).stem if predictor.weights else "model"
        self.max_batch = cfg.max_batch or (8 if predictor.device.type == "cuda" else 1)
        self.batcher = Batcher(predictor, max_batch=self.max_batch, max_wait=cfg.max_wait_ms / 1000.0,
                               max_queue=cfg.max_queue, on_batch=self.metrics.on_batch)
        self.started = time.time()
        self.keys = tuple(k.encode() for k in cfg.api_keys)
        self.allow_urls = frozenset(h.lower() for h in cfg.allow_urls)
        # uploads are decoded on as many threads as there are cores, not on the event loop's pool of
        # 40: more at once only compete for the cores, and each holds a decoded photo in memory
        self.decoder = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="detect-decode")

    def decode(self, data: bytes) -> np.ndarray:
        """Uploaded bytes -> a BGR image, within the pixel limit (or an ApiError)."""
        return decode_upload(data, self.cfg.max_pixels)

    def close(self) -> None:
        self.batcher.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    async def decode_async(self, data: bytes) -> np.ndarray:
        """:meth:`decode` on the decoding threads (a photo takes ~5-20 ms: not on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.decoder, self.decode, data)

    # ----------------------------------------------------------------------------- options
    def options(self, conf: Optional[float] = None, iou: Optional[float] = None, max_det: Optional[int] = None,
                classes: Optional[Sequence[str]] = None, slice: Optional[str] = None) -> Options:
        """Check a request's options against this model and server (an :class:`ApiError` 422
        naming the option otherwise). ``conf`` below the server's ``--conf`` is raised to it
        (the model never scored lower); ``max_det`` above ``--max-det`` is lowered to it."""
        c = self.cfg
        conf = c.default_conf if conf is None else float(conf)
        iou = c.iou if iou is None else float(iou)
        for name, v in (("conf", conf), ("iou", iou)):
            if not 0.0 <= v <= 1.0:
                raise ApiError(422, "bad_option", f"{name} must be in [0, 1], got {v}")
        if max_det is not None and max_det < 1:
            raise ApiError(422, "bad_option", f"max_det must be >= 1, got {max_det}")
        keep = self.class_ids(classes) if classes else None
        if slice is not None and self.batcher.slices != "predict":
            if self.batcher.slices is None:
                raise ApiError(422, "bad_option", "slice: this server's Predictor has no sliced inference")
            if slice != (c.slice or ""):
                raise ApiError(422, "bad_option", f"slice is fixed when this server starts (--slice {c.slice}); "
                               "leave it out of the request")
            slice = None
        return Options(max(conf, c.conf), iou, min(max_det or c.max_det, c.max_det), keep, slice)

    def class_ids(self, classes: Sequence[str]) -> np.ndarray:
        """Class names or 0-based indices (comma-separated items allowed) -> sorted ids."""
        ids = set()
        for item in classes:
            for k in str(item).split(","):
                k = k.strip()
                if not k:
                    continue
                if k in self.classes:
                    ids.add(self.classes.index(k))
                elif k.isdigit() and int(k) < len(self.classes):
                    ids.add(int(k))
                else:
                    raise ApiError(422, "unknown_class", f"classes: {k!r} is not a class of this model; it knows "
                                   f"{', '.join(self.classes)} (or indices 0..{len(self.classes) - 1})")
        return np.array(sorted(ids), dtype=np.int64)

    # ----------------------------------------------------------------------------- detect
    def submit(self, image: np.ndarray, opts: Options) -> Future:
        """Queue one BGR image for the model (503 when the queue is full)."""
        try:
            future = self.batcher.submit(image, Key(round(opts.iou, 4), opts.slice))
        except (Busy, Closed) as e:
            raise ApiError(503, "busy", str(e), headers={"Retry-After": "1"}) from None
        self.metrics.queue.set(self.batcher.waiting)
        return future

    async def result(self, future: Future, opts: Options) -> tuple[Detections, Result]:
        """The detections of a :meth:`submit` with the request's own threshold, classes, max_det."""
        result: Result = await asyncio.wrap_future(future)
        return filter_detections(result.detections, opts.conf, opts.max_det, opts.keep), result

    async def detect(self, image: np.ndarray, opts: Options) -> tuple[Detections, Result]:
        """:meth:`submit` then :meth:`result`."""
        return await self.result(self.submit(image, opts), opts)

    def detect_sync(self, image: np.ndarray, opts: Options) -> Detections:
        """:meth:`detect` from a thread that is not running an event loop (the CVAT function)."""
        result: Result = self.submit(image, opts).result()
        return filter_detections(result.detections, opts.conf, opts.max_det, opts.keep)

    # ----------------------------------------------------------------------------- keys
    def authorised(self, key: Optional[str]) -> bool:
        if not self.keys:
            return True
        if not key:
            return False
        given = key.encode()
        return any(hmac.compare_digest(given, k) for k in self.keys)  # no early exit on the first differing byte


def _init_takes_slice() -> bool:
    import inspect

    return "slice" in inspect.signature(Predictor.__init__).parameters


def _slice_value(s: str):
    """``--slice auto|off|N``: the value Predictor's ``slice`` takes."""
    return int(s) if s.isdigit() else s
