"""Evaluation: run a detector over a loader and score it with VOC and COCO AP (``detect val``'s
run: :mod:`detect.engine.evaluate_cli`).

Boxes are compared in the pixels of the original images. Predictions come out of the model in
the S x S input's pixels and are mapped back with each target's ``orig_size`` and ``input_hw``
(where the image landed in the input: letterboxed, x scales by w / w' and y by h / h'; without
``input_hw`` the image filled the input, stretched: w / S and h / S). Ground truth is taken from the
dataset's records (the boxes as annotated, before any resize or float round trip) when the
loader's dataset exposes them, else from the targets mapped back the same way.

The metric math lives in :mod:`detect.engine.metrics` (pure numpy); this module only gathers
arrays and formats results.

``detect val --json OUT`` writes one object (NaN becomes ``null``: a metric with nothing to
average, e.g. the AP of a class without ground truth):
  voc_ap50, voc07_ap50          VOC AP@0.5 all-point / 11-point, mean over classes with GT
  coco_ap, coco_ap50, coco_ap75 COCO AP@[.5:.95], @.5, @.75 at maxDets = max_det
  coco_ap_small/_medium/_large  COCO AP by box area (< 32^2, 32^2..96^2, > 96^2 original pixels)
  coco_ar, coco_max_dets        COCO AR@[.5:.95] at max_det; the maxDets list used [1, 10, max_det]
  per_class                     name -> {ap50, ap50_07, coco_ap, coco_ap50, n_gt (non-difficult),
                                n_difficult, n_det, tp, fp, max_recall, precision, recall, f1, conf
                                (the last four at the score threshold of best F1)}
  images, instances, difficult, detections, max_det, seconds, images_per_s
  weights, data, split, device, imgsz, classes, problems (defects found in the data)
  sliced                        how large photos were sliced (--slice, the learned object_size), or
                                null: every image read whole by the batched loader
  confusion_matrix              {conf, iou, rows, columns, last, matrix: int[C+1][C+1]}
  plots                         {pr_curve, confusion_matrix}: PNG paths
  errors                        where the AP50 goes, TIDE-style (detect.engine.error_breakdown.error_breakdown):
                                {ap50, lost, dap: {cls, loc, both, dupe, bkg, missed}, counts,
                                per_class: name -> {ap50, dap, counts, main}, weakest: the 5 lowest
                                classes with their main error type}
:func:`evaluate` returns the same keys up to ``images_per_s`` (what the trainer logs).
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from detect.data.dataset import float_images
from detect.engine import metrics as M
from detect.errors import UsageError

CONF_MATRIX_CONF = 0.25  # score threshold of the confusion matrix (ultralytics' default)
CONF_MATRIX_IOU = 0.45


def _dataset_records(dataset: Any) -> Optional[list]:
    """The ImageRecords behind a dataset (through torch Subsets), or None."""
    while hasattr(dataset, "dataset") and not hasattr(dataset, "records"):  # torch.utils.data.Subset
        dataset = dataset.dataset
    records = getattr(dataset, "records", None)
    return list(records) if records is not None else None


def _gt_from_record(record: Any) -> dict:
    return {"boxes": np.asarray(record.boxes, np.float64).reshape(-1, 4),
            "labels": np.asarray(record.labels, np.int64).reshape(-1),
            "difficult": np.asarray(record.difficult, bool).reshape(-1)}


@torch.inference_mode()
def collect(
    model: torch.nn.Module, loader: Any, device: torch.device | str, max_det: int = 300,
    amp: bool = True, progress: bool = False,
) -> dict[str, Any]:
    """Run ``model`` (eval mode) over ``loader`` and gather predictions and ground truth in
    original-image pixels.

    Returns ``dets`` / ``gts`` (per-image dicts, see :mod:`detect.engine.metrics`), ``sizes``
    ((h, w) per image), ``image_ids``, ``seconds`` (the loop, data loading included) and
    ``unreadable`` ("path: reason" of the images the collate dropped: they are not scored).
    Detections are cut to the ``max_det`` best per image (the model's own cap applies first).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    records = _dataset_records(loader.dataset)
    use_amp = amp and device.type == "cuda"
    dets, gts, sizes, ids, unreadable = [], [], [], [], []
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="val", unit="batch", dynamic_ncols=True, leave=False, file=sys.stderr)
    t0 = time.perf_counter()
    try:
        for images, targets in it:
            unreadable += map(str, getattr(targets, "unreadable", ()))
            if not len(targets):
                continue
            images = float_images(images.to(device, non_blocking=True))  # uint8 travels, floats on the device
            s_h, s_w = images.shape[-2:]  # (B, 3, S, S)
            ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
            with ctx:
                if targets and "proposals" in targets[0]:  # Fast R-CNN with precomputed proposals
                    outputs = model(images, proposals=[t["proposals"].to(device) for t in targets])
                else:
                    outputs = model(images)
            # the batch's detections as one (M, 6) copy: one host sync per batch, not three per image
            rows = torch.cat([torch.cat([o["boxes"].reshape(-1, 4).float(), o["scores"].reshape(-1, 1).float(),
                                         o["labels"].reshape(-1, 1).float()], 1) for o in outputs]).cpu().numpy()
            counts = np.cumsum([int(o["scores"].numel()) for o in outputs])[:-1]  # shapes: no sync
            for det, tgt in zip(np.split(rows.astype(np.float64), counts), targets):
                h, w = (int(v) for v in tgt["orig_size"])
                i_h, i_w = (int(v) for v in tgt["input_hw"]) if "input_hw" in tgt else (s_h, s_w)
                scale = np.array([w / i_w, h / i_h, w / i_w, h / i_h])
                order = np.argsort(-det[:, 4], kind="stable")[:max_det]
                det = det[order]
                dets.append({"boxes": np.clip(det[:, :4] * scale, 0, [w, h, w, h]), "scores": det[:, 4].astype(np.float32),
                             "labels": det[:, 5].astype(np.int64)})
                image_id = int(tgt["image_id"])
                rec = records[image_id] if records is not None and 0 <= image_id < len(records) else None
                if rec is not None and (int(rec.height), int(rec.width)) == (h, w):
                    gts.append(_gt_from_record(rec))
                else:  # no records (or they do not fit): the resized targets mapped back
                    n = len(tgt["labels"])
                    diff = tgt.get("difficult", torch.zeros(n, dtype=torch.bool))
                    gts.append({"boxes": tgt["boxes"].double().cpu().numpy().reshape(-1, 4) * scale,
                                "labels": tgt["labels"].cpu().numpy().reshape(-1).astype(np.int64),
                                "difficult": diff.cpu().numpy().reshape(-1).astype(bool)})
                sizes.append((h, w))
                ids.append(image_id)
    finally:
        model.train(was_training)
    return {"dets": dets, "gts": gts, "sizes": sizes, "image_ids": ids, "seconds": time.perf_counter() - t0,
            "unreadable": unreadable}


def compute_metrics(
    dets: Sequence[dict], gts: Sequence[dict], sizes: Sequence[tuple[int, int]], classes: Sequence[str],
    max_det: int = 300,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """VOC and COCO metrics of gathered arrays.

    Returns ``(metrics, details)``: ``metrics`` is JSON-ready (floats, NaN where undefined: a
    class without ground truth); ``details`` holds the PR curves (class name -> (recall,
    precision)) and the confusion matrix (int[C + 1, C + 1]) for plotting.
    """
    nc = len(classes)
    for i, d in enumerate(dets):
        bad = np.asarray(d["labels"]).reshape(-1)
        if bad.size and (bad.min() < 0 or bad.max() >= nc):
            raise ValueError(f"image {i}: detection label {int(bad.max())} outside the {nc} classes; "
                             "the model's classes do not match the data")
    voc = M.voc_evaluate(dets, gts, nc, iou_thr=0.5)
    coco = M.coco_evaluate(dets, gts, sizes, nc, max_det=max_det)
    cm = M.confusion_matrix(dets, gts, nc, conf_thr=CONF_MATRIX_CONF, iou_thr=CONF_MATRIX_IOU)
    per_class = {}
    for c, name in enumerate(classes):
        best = M.best_f1_point(voc["precision"][c], voc["recall"][c], voc["scores"][c])
        per_class[name] = {
            "ap50": voc["ap"][c], "ap50_07": voc["ap07"][c],
            "coco_ap": coco["per_class_ap"][c], "coco_ap50": coco["per_class_ap50"][c],
            "n_gt": voc["n_gt"][c], "n_difficult": voc["n_difficult"][c], "n_det": voc["n_det"][c],
            "tp": voc["tp"][c], "fp": voc["fp"][c],
            "max_recall": float(voc["recall"][c][-1]) if len(voc["recall"][c]) and voc["n_gt"][c] else float("nan"),
            "precision": best["precision"], "recall": best["recall"], "f1": best["f1"], "conf": best["conf"],
        }
    metrics = {
        "voc_ap50": voc["map"], "voc07_ap50": voc["map07"],
        "coco_ap": coco["ap"], "coco_ap50": coco["ap50"], "coco_ap75": coco["ap75"],
        "coco_ap_small": coco["ap_small"], "coco_ap_medium": coco["ap_medium"], "coco_ap_large": coco["ap_large"],
        "coco_ar": coco["ar"], "coco_max_dets": coco["max_dets"],
        "per_class": per_class,
        "images": len(gts),
        "instances": int(sum(voc["n_gt"])), "difficult": int(sum(voc["n_difficult"])),
        "detections": int(sum(len(np.asarray(d["scores"]).reshape(-1)) for d in dets)),
        "max_det": int(max_det),
    }
    details = {"curves": {n: (voc["recall"][c], voc["precision"][c]) for c, n in enumerate(classes)},
               "confusion_matrix": cm}
    return metrics, details


def evaluate(
    model: torch.nn.Module, loader: Any, classes: Sequence[str], device: torch.device | str,
    max_det: int = 300, amp: bool = True, progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on ``loader`` (batches of ``(Tensor[B, 3, S, S], list[target])``).

    Returns the metrics of :func:`compute_metrics` plus ``seconds`` (wall time of the whole
    evaluation), ``images_per_s`` (inference loop, data loading included) and ``unreadable``
    (see :func:`collect`). The model is put back in the train/eval mode it came in.
    """
    t0 = time.perf_counter()
    return score(collect(model, loader, device, max_det=max_det, amp=amp, progress=progress), classes, max_det, t0)


def score(got: dict[str, Any], classes: Sequence[str], max_det: int, started: float) -> dict[str, Any]:
    """:func:`evaluate`'s result from gathered detections (:func:`collect`'s dict, or a
    ``collect_fn``'s: sliced inference): the metrics, ``seconds`` since ``started``
    (``time.perf_counter()``), ``images_per_s``, ``unreadable``, and ``sliced`` (the slicing
    settings when the detections came through sliced inference, else None)."""
    metrics, _ = compute_metrics(got["dets"], got["gts"], got["sizes"], classes, max_det=max_det)
    metrics["seconds"] = time.perf_counter() - started
    metrics["images_per_s"] = len(got["gts"]) / max(got["seconds"], 1e-9)
    metrics["unreadable"] = got["unreadable"]
    metrics["sliced"] = got.get("sliced")
    return metrics


def report(got: dict[str, Any], classes: Sequence[str], folder: str | Path, records: Optional[Sequence[Any]] = None,
           max_det: int = 300, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Everything ``detect val`` leaves, from :func:`collect`'s arrays: the metrics, the
    TIDE-style error breakdown, the pictures of :mod:`detect.engine.report` in ``folder`` and
    ``folder/val.json``. Returns the dict written there (``extra`` merged in; NaN where
    undefined, None in the file)."""
    from detect.engine.error_breakdown import error_breakdown
    from detect.engine.report import write_val_plots
    from detect.utils import atomic_write_text

    metrics, details = compute_metrics(got["dets"], got["gts"], got["sizes"], classes, max_det=max_det)
    errors = error_breakdown(got["dets"], got["gts"], classes)
    try:  # pictures to look at: never a reason to lose the metrics (a plot that failed left no val.json)
        plots = write_val_plots(folder, metrics, details, classes, errors, records, got["dets"], got["gts"])
    except (MemoryError, RuntimeError, ValueError, OSError) as e:
        if isinstance(e, UsageError):  # an output the rule refused: not a drawing problem
            raise
        print(f"warning: the evaluation plots could not be drawn ({type(e).__name__}: {str(e)[:200]}); "
              "val.json is written", file=sys.stderr)
        plots = {}
    out = dict(metrics)
    out.update(extra or {})
    out.update({
        "classes": list(classes),
        "confusion_matrix": {"conf": CONF_MATRIX_CONF, "iou": CONF_MATRIX_IOU, "rows": "true class",
                             "columns": "predicted class", "last": "background", "matrix": details["confusion_matrix"]},
        "plots": plots, "errors": errors,
    })
    atomic_write_text(Path(folder) / "val.json", json.dumps(json_ready(out), indent=2) + "\n")
    return out


# --------------------------------------------------------------------------------- detect val


def json_ready(x: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), numpy scalars/arrays -> Python values."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_ready(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def format_table(metrics: dict[str, Any]) -> str:
    """Per-class table: ground truth, detections, P/R at best F1, VOC AP50 (all-point, 07), COCO AP."""

    def f(v: Any) -> str:
        return "    -" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    per = metrics["per_class"]
    width = max([5] + [len(n) for n in per])
    head = f"{'class':<{width}} {'gt':>6} {'diff':>5} {'det':>7} {'P':>6} {'R':>6} {'AP50':>6} {'AP50-07':>7} {'AP':>6}"
    rows = [head, "-" * len(head)]
    mean_p = [v["precision"] for v in per.values() if v["n_gt"]]
    mean_r = [v["recall"] for v in per.values() if v["n_gt"]]
    rows.append(f"{'all':<{width}} {metrics['instances']:>6} {metrics['difficult']:>5} {metrics['detections']:>7} "
                f"{f(M._nanmean(mean_p)):>6} {f(M._nanmean(mean_r)):>6} {f(metrics['voc_ap50']):>6} "
                f"{f(metrics['voc07_ap50']):>7} {f(metrics['coco_ap']):>6}")
    for name, v in per.items():
        rows.append(f"{name:<{width}} {v['n_gt']:>6} {v['n_difficult']:>5} {v['n_det']:>7} {f(v['precision']):>6} "
                    f"{f(v['recall']):>6} {f(v['ap50']):>6} {f(v['ap50_07']):>7} {f(v['coco_ap']):>6}")
    rows.append(f"COCO AP@[.5:.95] {f(metrics['coco_ap'])}  AP50 {f(metrics['coco_ap50'])}  AP75 {f(metrics['coco_ap75'])}"
                f"  AR@{metrics['max_det']} {f(metrics['coco_ar'])}  (maxDets {metrics['coco_max_dets']})")
    if any(metrics.get(f"coco_ap_{s}") is not None for s in ("small", "medium", "large")):
        rows.append("COCO AP by size (box area, pixels of the photo): "
                    + "  ".join(f"{s} {f(metrics.get(f'coco_ap_{s}'))}" for s in ("small", "medium", "large"))
                    + "  (small < 32^2, medium < 96^2, large above)")
    return "\n".join(rows)


def _align_classes(cache: Any, classes: Sequence[str]) -> list:
    """The cache's records with labels re-indexed to the model's class order. Raises UsageError
    naming the classes that differ when the two class sets are not the same."""
    import dataclasses

    data_classes = list(cache.classes)
    if data_classes == list(classes):
        return list(cache.records)
    missing = sorted(set(data_classes) - set(classes))
    extra = sorted(set(classes) - set(data_classes))
    if missing or extra or len(data_classes) != len(classes):
        raise UsageError(f"the data's classes do not match the model's: only in the data {missing}, "
                         f"only in the model {extra}; evaluate on data with the classes the model was trained on")
    remap = np.array([list(classes).index(n) for n in data_classes], np.int64)
    return [dataclasses.replace(r, labels=remap[np.asarray(r.labels, np.int64)]) for r in cache.records]
