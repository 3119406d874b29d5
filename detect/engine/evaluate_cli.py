"""``detect val``'s run on the engine side: weights and data loaded, the split's detections gathered
(by the batched loader, or by the ``collect_fn`` that :mod:`detect.infer.val_cli`, the command,
hands in for photos that need slicing: engine never imports infer), metrics, the table, the JSON
and the plots. The metrics themselves are :mod:`detect.engine.evaluate`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from detect.engine.evaluate import _align_classes, collect, format_table, json_ready, report
from detect.errors import UsageError
from detect.models.build import set_postprocess


def cmd_val(args: argparse.Namespace, collect_fn: Optional[Callable[..., Optional[dict]]] = None) -> int:
    """``detect val``: evaluate weights on a dataset split, print a table, write JSON and plots.
    Exit 0 when done, 1 when done but the data had problems or an image could not be read;
    raises :class:`~detect.errors.UsageError` for unusable weights, data or options.
    ``collect_fn(model, cfg, classes, records, device, max_det)`` gathers the detections
    instead of the batched loader when it returns a dict like :func:`collect`'s (the sliced
    evaluation of large photos in :mod:`detect.infer.val_cli`; engine never imports infer)."""
    from torch.utils.data import DataLoader

    from detect.data.dataset import collate
    from detect.data.spec import input_files, resolve_data
    from detect.engine.checkpoint import load_model
    from detect.engine.datasets import eval_dataset
    from detect.engine.error_breakdown import format_breakdown
    from detect.engine.report import VAL_OUTPUTS
    from detect.utils import atomic_write_text, check_output_folder, check_output_path, select_device

    t0 = time.perf_counter()
    if not Path(args.weights).is_file():
        raise UsageError(f"weights file {args.weights} not found")
    folder = Path(args.plots) if args.plots else (Path(args.json).parent if args.json else Path("runs")) / f"val-{args.split}"

    def check_outputs(inputs: list[str]) -> None:  # before the work, and again once the dataset's files are known
        if args.json:
            check_output_path(args.json, inputs, what="--json")
        check_output_folder(folder, VAL_OUTPUTS, inputs, what="--plots folder" if args.plots else "plots folder")

    check_outputs([args.weights, args.data])
    if args.max_det is not None and args.max_det < 1:
        raise UsageError(f"--max-det must be >= 1, got {args.max_det}")
    device = select_device(args.device)
    try:
        model, cfg, classes = load_model(args.weights, device)
    except (ValueError, KeyError, RuntimeError, OSError) as e:  # CheckpointError included
        raise UsageError(f"cannot load {args.weights}: {e}") from None
    max_det = int(args.max_det or cfg.model.max_det)
    set_postprocess(model, cfg.model, max_det=max_det)
    try:
        cache = resolve_data(args.data, args.split, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:  # DatasetError included
        raise UsageError(f"cannot read data {args.data!r} split {args.split!r}: {e}") from None
    check_outputs([args.weights, *input_files(args.data, cache)])
    for p in cache.problems:
        print(f"warning: {p}", file=sys.stderr)
    records = _align_classes(cache, classes)
    if not records:
        raise UsageError(f"data {args.data!r} split {args.split!r} has no images")

    try:
        got = collect_fn(model, cfg, classes, records, device, max_det) if collect_fn else None
        if got is None:
            dataset = eval_dataset(records, cfg)  # Fast R-CNN with precomputed proposals: they come with the images
            loader = DataLoader(dataset, batch_size=args.batch, shuffle=False, num_workers=args.workers,
                                collate_fn=collate, pin_memory=device.type == "cuda")
            got = collect(model, loader, device, max_det=max_det, progress=sys.stderr.isatty())
    except OSError as e:  # ImageReadError: a file moved, truncated or changed since the cache was built
        print(f"detect val: stopped, an image cannot be read: {e}", file=sys.stderr)
        return 1
    extra = {"weights": str(args.weights), "data": str(args.data), "split": args.split, "device": str(device),
             "imgsz": int(cfg.preprocess.imgsz), "problems": len(cache.problems), "sliced": got.get("sliced"),
             "images_per_s": len(got["gts"]) / max(got["seconds"], 1e-9)}
    out = report(got, classes, folder, records, max_det, extra)
    out["seconds"] = time.perf_counter() - t0
    print(format_table(out))
    print(f"{out['images']} images in {out['seconds']:.1f} s ({out['images_per_s']:.1f} images/s on {device})")
    print(format_breakdown(out["errors"]))
    print(f"plots and val.json: {folder}")
    if args.json:
        atomic_write_text(args.json, json.dumps(json_ready(out), indent=2) + "\n")
        print(f"metrics: {args.json}")
    if cache.problems:
        print(f"{len(cache.problems)} problems in the data (see warnings above)", file=sys.stderr)
        return 1
    return 0
