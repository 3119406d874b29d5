"""A training run's validation: every epoch's scores (:func:`epoch_eval`, the ``eval_fn`` of
:func:`detect.engine.train.train` made by :func:`run_eval_fn`) and the final report of
``best.pt`` (:func:`final_report`). The val split's detections come from the batched loader, or
from the ``collect_fn`` the command hands in (``detect train``'s is ``detect val``'s sliced
collector: photos larger than the model needs are sliced at the scale it learned; engine never
imports infer)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from detect.config import ExperimentConfig
from detect.engine.checkpoint import load_checkpoint
from detect.engine.datasets import TrainData
from detect.engine.runlog import RunLog


def epoch_eval(model: torch.nn.Module, loader: Any, classes: Sequence[str], device: torch.device, max_det: int,
               progress: bool = False, cfg: Optional[ExperimentConfig] = None, collect_fn: Optional[Callable] = None) -> dict:
    """The validation of an epoch: :func:`detect.engine.evaluate.evaluate`'s metrics, the
    detections gathered by :func:`collect_split` (sliced like ``detect val`` where the split needs it)."""
    from detect.engine.evaluate import score

    t0 = time.perf_counter()
    return score(collect_split(model, loader, classes, device, max_det, progress, cfg, collect_fn), classes, max_det, t0)


def run_eval_fn(cfg: ExperimentConfig, collect_fn: Optional[Callable], progress: bool, log: RunLog) -> Callable[..., dict]:
    """A run's default ``eval_fn``: :func:`epoch_eval` with the resolved config (its imgsz and
    the object size the slicing follows) and ``collect_fn``; says once when the val split is sliced."""
    told = False

    def eval_fn(model: torch.nn.Module, loader: Any, classes: Sequence[str], device: torch.device, max_det: int) -> dict:
        nonlocal told
        metrics = epoch_eval(model, loader, classes, device, max_det, progress, cfg, collect_fn)
        if metrics.get("sliced") and not told:
            told = True
            log.print(f"val: photos larger than the model needs are sliced as detect val does ({_sliced_text(metrics['sliced'])})")
        return metrics

    return eval_fn


def collect_split(model: torch.nn.Module, loader: Any, classes: Sequence[str], device: torch.device, max_det: int,
                  progress: bool, cfg: Optional[ExperimentConfig], collect_fn: Optional[Callable]) -> dict:
    """The val split's detections and ground truth: ``collect_fn(model, cfg, classes, records,
    device, max_det)`` (``detect val``'s sliced collector, handed down by the command: engine
    never imports infer) when it takes the split, else the batched loader
    (:func:`detect.engine.evaluate.collect`), as ``detect val`` chooses."""
    from detect.engine.evaluate import collect

    records = getattr(loader.dataset, "records", None) if collect_fn is not None and cfg is not None else None  # not a Subset's
    got = collect_fn(model, cfg, classes, records, device, max_det) if records else None
    return got if got is not None else collect(model, loader, device, max_det=max_det, progress=progress)


def _sliced_text(sliced: dict) -> str:
    size = float(sliced.get("object_size") or 0)
    return f"--slice {sliced.get('slice')}" + (f", learned object size {size:.0f} px" if size else "")


def final_report(cfg: ExperimentConfig, best_pt: Path, model: torch.nn.Module, val_loader: Any, data: TrainData,
                 device: torch.device, out: Path, progress: bool, log: RunLog, collect_fn: Optional[Callable] = None) -> None:
    """Evaluate ``best.pt`` once more, as ``detect val`` does (large photos sliced through
    ``collect_fn``), and leave in the run folder what ``detect val`` writes: val.json (metrics
    and the error breakdown) and the pictures of :mod:`detect.engine.report`."""
    from detect.engine.evaluate import report

    best = load_checkpoint(best_pt)
    model.load_state_dict(best["model"])  # best.pt holds the weights that scored best (EMA when on)
    got = collect_split(model, val_loader, data.classes, device, cfg.model.max_det, progress, cfg, collect_fn)
    records = getattr(val_loader.dataset, "records", None)
    res = report(got, data.classes, out, records, cfg.model.max_det,
                 extra={"weights": str(best_pt), "data": cfg.data.data, "split": cfg.data.val_split,
                        "epoch": int(best.get("epoch", 0)), "imgsz": int(cfg.preprocess.imgsz),
                        "sliced": got.get("sliced")})
    from detect.engine.error_breakdown import format_breakdown

    log.print(f"best.pt (epoch {best.get('epoch')}): voc_ap50 {res['voc_ap50']:.4f}, coco_ap {res['coco_ap']:.4f}; "
              f"val.json and plots in {out}")
    log.print(format_breakdown(res["errors"]))
