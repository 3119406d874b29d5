"""``detect val`` with sliced inference: a split holding photos larger than the model needs (store
shelves) is evaluated through :class:`~detect.infer.predict.Predictor`, which cuts each into
slices at the scale of the products the model learned and merges them, so the score is the one a
user of ``detect predict`` gets. Splits of photos the model reads whole (and ``--slice off``) go
through the batched loader of :func:`detect.engine.evaluate_cli.cmd_val` as before.

Engine never imports infer (docs/ARCHITECTURE.md): this command lives here and hands
:func:`~detect.engine.evaluate_cli.cmd_val` the collector.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from detect.checks import COUNT, NONNEG
from detect.errors import UsageError
from detect.engine.evaluate import _gt_from_record
from detect.engine.evaluate_cli import cmd_val as _engine_cmd_val
from detect.infer.common_cli import add_classifier_option, add_slicing_options
from detect.infer.slicing import may_slice


def needs_slicing(records: Sequence[Any], imgsz: int, mode: Any) -> bool:
    """Whether any image may be sliced under ``mode`` (:func:`~detect.infer.slicing.may_slice`)."""
    return any(may_slice(int(r.height or 0), int(r.width or 0), imgsz, mode) for r in records)


def sliced_collector(args: argparse.Namespace, live: bool = False):
    """``collect_fn`` for :func:`~detect.engine.evaluate_cli.cmd_val` (and for the validation of
    :func:`detect.engine.train.train`): None (the batched loader) unless the split needs slicing
    (and the model finds its own proposals: a proposal file's boxes are for whole photos); then every image through a :class:`Predictor` around the model with the ``--slice`` options,
    one photo at a time (a store photo is its own batch of slices), its detections in original
    pixels. The slices are cut at the scale of ``cfg.preprocess.object_size``, the product size
    the model learned (a run's resolved config, a checkpoint's). ``live``: the model is being
    trained (``detect train``'s validation every epoch): it runs as it is in PyTorch (no
    BatchNorm folding, no ONNX export of weights that change every epoch), and an image that cannot
    be read is skipped and named in ``unreadable`` as the batched loader does (``detect val``
    stops). Either way the model gets back its train/eval mode and postprocess settings."""

    def collect_fn(model: torch.nn.Module, cfg: Any, classes: Sequence[str], records: Sequence[Any],
                   device: torch.device, max_det: int) -> Optional[dict]:
        from detect.data.dataset import ImageReadError, read_image_rgb
        from detect.infer.predict import Predictor
        from detect.infer.predict_cli import slice_options
        from detect.models.build import POSTPROCESS

        opts = slice_options(args)
        classifier = getattr(args, "classifier", None)  # the second look runs in the Predictor: every photo through it
        if not classifier and not needs_slicing(records, int(cfg.preprocess.imgsz), opts["slice"]):
            return None
        if getattr(model, "proposal_source", None) == "file":  # a Fast R-CNN whose proposals come from a file, made
            if classifier:
                raise UsageError("--classifier: a Fast R-CNN reading proposal files is evaluated by the batched loader, "
                                 "which has no second look; use one with its own proposals (RPN or selective search)")
            return None  # for whole photos: they come with the images of the batched loader, a slice has none
        if live:
            opts.update(backend="torch", fuse=False)
        conf = float(getattr(model, "score_thresh", cfg.model.score_thresh))
        was_training, post = model.training, {k: getattr(model, k) for k in POSTPROCESS if hasattr(model, k)}
        try:
            pred = Predictor.from_model(model, cfg.preprocess, classes, device=device, conf=conf, classifier=classifier, **opts)
            pred.max_det = max_det
            dets, gts, sizes, ids, unreadable = [], [], [], [], []
            t0 = time.perf_counter()
            for i, r in enumerate(tqdm(records, desc="val (sliced)", unit="img", leave=False, file=sys.stderr,
                                       disable=not sys.stderr.isatty())):
                # the dataset's reader (as stored, no EXIF turn: the boxes were drawn on these pixels); an unreadable
                # image raises ImageReadError, an OSError: cmd_val stops, a training skips it
                try:
                    image = cv2.cvtColor(read_image_rgb(r.image), cv2.COLOR_RGB2BGR)
                except ImageReadError as e:
                    if not live:
                        raise
                    unreadable.append(str(e))
                    continue
                (d,) = pred.predict([image])  # at most max_det, by decreasing score
                dets.append({"boxes": d.boxes.astype(np.float64), "scores": d.scores, "labels": d.labels})
                gts.append(_gt_from_record(r))
                sizes.append(image.shape[:2])
                ids.append(i)
        finally:
            for k, v in post.items():
                setattr(model, k, v)
            model.train(was_training)
        return {"dets": dets, "gts": gts, "sizes": sizes, "image_ids": ids, "seconds": time.perf_counter() - t0,
                "unreadable": unreadable,
                "sliced": {"slice": opts["slice"], "object_size": float(cfg.preprocess.object_size)}}

    return collect_fn


def add_val_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect val``."""
    p.add_argument("--weights", required=True, help="checkpoint (RUN/best.pt) or the .onnx file of detect export")
    p.add_argument("--data", required=True, help="dataset YAML, VOC folder or cache .pkl")
    p.add_argument("--split", default="val", help="split to evaluate")
    p.add_argument("--json", help="write metrics JSON here")
    p.add_argument("--plots", help="folder for PR curves and the confusion matrix (default: beside --json, else runs/val)")
    p.add_argument("--batch", type=COUNT, default=16, help="images per batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    p.add_argument("--max-det", type=COUNT, help="max detections per image (COCO maxDets too), up to 1000 "
                   "(default: the checkpoint's model.max_det; must be >= 1)")
    p.add_argument("--workers", type=NONNEG, default=2, help="data loader processes (0: in this process)")
    add_slicing_options(p)
    add_classifier_option(p)


def cmd_val(args: argparse.Namespace) -> int:
    """``detect val`` (see :func:`detect.engine.evaluate_cli.cmd_val`), large photos sliced."""
    return _engine_cmd_val(args, collect_fn=sliced_collector(args))
