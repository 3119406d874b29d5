"""``detect val`` with sliced inference: a split holding photos larger than the model needs (store
shelves) is evaluated through :class:`~detect.infer.predict.Predictor`, which cuts each into
slices at the scale of the products the model learned and merges them, so the score is the one a
user of ``detect predict`` gets. Splits of photos the model reads whole (and ``--slice off``) go
through the batched loader of :func:`detect.engine.evaluate.cmd_val` as before.

Engine never imports infer (docs/ARCHITECTURE.md): this command lives here and hands
:func:`~detect.engine.evaluate.cmd_val` the collector.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from detect.engine.evaluate import _gt_from_record, cmd_val as _engine_cmd_val


def needs_slicing(records: Sequence[Any], imgsz: int, mode: Any) -> bool:
    """Whether any image is larger than the model reads whole (the rule of ``slice="auto"``:
    longer side over 1.5 ``imgsz``; a fixed side: over that side)."""
    if mode == "off":
        return False
    limit = 1.5 * imgsz if mode == "auto" else int(mode)
    return any(max(int(r.width or 0), int(r.height or 0)) > limit for r in records)


def sliced_collector(args: argparse.Namespace):
    """``collect_fn`` for :func:`~detect.engine.evaluate.cmd_val`: None (the batched loader)
    unless the split needs slicing; then every image through a :class:`Predictor` around the
    loaded model with the ``--slice`` options, one photo at a time (a store photo is its own batch
    of slices), its detections in original pixels."""

    def collect_fn(model: torch.nn.Module, cfg: Any, classes: Sequence[str], records: Sequence[Any],
                   device: torch.device, max_det: int) -> Optional[dict]:
        from detect.data.dataset import read_image_rgb
        from detect.infer.predict import Predictor
        from detect.infer.predict_cli import slice_options

        opts = slice_options(args)
        if not needs_slicing(records, int(cfg.preprocess.imgsz), opts["slice"]):
            return None
        conf = float(getattr(model, "score_thresh", cfg.model.score_thresh))
        pred = Predictor.from_model(model, cfg.preprocess, classes, device=device, conf=conf, **opts)
        pred.max_det = max_det
        dets, gts, sizes, ids = [], [], [], []
        t0 = time.perf_counter()
        for i, r in enumerate(records):
            image = cv2.cvtColor(read_image_rgb(r.image), cv2.COLOR_RGB2BGR)  # ImageReadError: an OSError, cmd_val stops
            (d,) = pred.predict([image])
            dets.append({"boxes": d.boxes.astype(np.float64)[:max_det], "scores": d.scores[:max_det],
                         "labels": d.labels[:max_det]})
            gts.append(_gt_from_record(r))
            sizes.append(image.shape[:2])
            ids.append(i)
            if sys.stderr.isatty():
                print(f"\rval (sliced): {i + 1}/{len(records)}", end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        return {"dets": dets, "gts": gts, "sizes": sizes, "image_ids": ids, "seconds": time.perf_counter() - t0,
                "unreadable": []}

    return collect_fn


def cmd_val(args: argparse.Namespace) -> int:
    """``detect val`` (see :func:`detect.engine.evaluate.cmd_val`), large photos sliced."""
    return _engine_cmd_val(args, collect_fn=sliced_collector(args))
