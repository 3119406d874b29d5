"""``detect train``: the training driver. It knows the data and model *contracts*, never a
particular model. A run: read the data, resolve the config once (:mod:`detect.engine.resolve`),
build the model, loaders and optimizer, then train epochs until the run plan
(:mod:`detect.engine.plan`: epochs, schedule, time budget) says it is done.
``build_resolved(cfg.model, cfg.preprocess)`` returns a module whose train-mode
call ``model(images, targets)`` gives a dict of losses (targets may carry extra keys such as
``proposals``; every tensor in them is moved to the device), and whose eval-mode call gives
detections for :func:`detect.engine.evaluate.evaluate`.

Per epoch: :func:`detect.engine.loop.train_one_epoch`, evaluation on rank 0 (EMA weights when
enabled; photos larger than the model needs sliced as ``detect val`` does, through the
``collect_fn`` the command hands in), a CSV row, ``RUN_DIR/last.pt`` (full state, atomic) and ``RUN_DIR/best.pt`` (weights
only, best val ``voc_ap50``). ``resume`` restarts from ``last.pt`` at the next epoch, with the
optimizer, schedule, scaler, EMA and RNG states; the data order and augmentation are seeded per
(epoch, sample), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from detect.config import ExperimentConfig
from detect.engine import distributed as D
from detect.engine.cpu_alloc import keep_heap_for_training
from detect.engine.datasets import TrainData, load_data, with_val_sheets
from detect.engine.checkpoint import (
    inference_state, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)
from detect.engine.ema import ModelEMA
from detect.engine.loader import eval_loader, seed_everything, train_loader
from detect.engine.loop import EpochStats, train_one_epoch
from detect.engine.optim import build_optimizer, build_scheduler
from detect.engine.plan import RunPlan
from detect.engine.resolve import resolve
from detect.engine import run_eval
from detect.engine.runlog import METRIC_KEYS, RunLog, format_row
from detect.errors import UsageError


def _default_model(cfg: ExperimentConfig) -> torch.nn.Module:
    from detect.models.build import build_resolved

    return build_resolved(cfg.model, cfg.preprocess)  # the config is resolved: its mean/std are the backbone's


def train(
    cfg: ExperimentConfig,
    *,
    progress: bool = True,
    data_fn: Callable[[ExperimentConfig], TrainData] | None = None,
    model_fn: Callable[[ExperimentConfig], torch.nn.Module] | None = None,
    eval_fn: Callable[..., dict] | None = None,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    checkpoint: Optional[dict] = None,
    collect_fn: Callable[..., Optional[dict]] | None = None,
) -> dict[str, Any]:
    """Train as ``cfg`` says (under torchrun: one process per device) and return the final
    metrics (``epochs``, ``best_map``, ``best_epoch``, ``last``, ``best``, ``skipped``,
    ``nonfinite_loss``, ``unreadable`` (images skipped because their file could not be read,
    summed over epochs), ``data_problems`` and the last epoch's CSV row).

    ``data_fn``/``model_fn``/``eval_fn`` replace :func:`load_data`, ``build_resolved`` and
    ``evaluate`` (tests plug tiny ones in; ``data_fn`` may return ready datasets, a
    :class:`TrainData`). ``cfg`` is not changed: the run trains the read-only config
    :func:`detect.engine.resolve.resolve` makes of it and the data (saved in ``RUN_DIR/config.yaml``
    and the checkpoints).
    ``on_epoch_end(epoch, row)`` is called on rank 0 after each epoch's checkpoint (``epoch``
    counts from 1, ``row`` is its CSV row: losses, val metrics); returning True stops training
    there (``detect tune``'s pruner uses it). ``checkpoint``: with ``cfg.train.resume``, the run's
    ``last.pt`` when the caller has read it already (else it is read here).
    ``collect_fn(model, cfg, classes, records, device, max_det)``: how the default evaluation
    (every epoch and the final report) gathers the val split's detections when it returns a dict
    like :func:`detect.engine.evaluate.collect`'s, None: the batched loader. ``detect train``
    hands in ``detect val``'s (:func:`detect.infer.val_cli.sliced_collector`), so photos larger
    than the model needs are sliced at the scale it learned and ``best.pt`` is chosen by the
    score ``detect val`` gives (engine never imports infer).
    """
    started = time.perf_counter()  # a --time budget counts from here: data and model building are inside it
    info, device = D.setup(cfg.train.device)
    final_report = eval_fn is None  # the real evaluation: the run folder also gets detect val's pictures
    try:
        return _train(cfg, info, device, progress, data_fn or load_data, model_fn or _default_model, eval_fn,
                      on_epoch_end, checkpoint, started, final_report, collect_fn)
    finally:
        D.cleanup()


@dataclass
class _Run:
    """What a run trains with, built once from the resolved config (:func:`_build_run`)."""

    model: torch.nn.Module  # DDP-wrapped under torchrun
    bare: torch.nn.Module
    ema: Optional[ModelEMA]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp: bool
    loader: Any
    sampler: Any
    val_loader: Any


@dataclass
class _History:
    """The epochs done so far: their rows, the best one, run totals (restored on a resume)."""

    start: int = 0
    best_map: float = float("nan")
    best_epoch: int = 0
    rows: list = field(default_factory=list)
    totals: dict = field(default_factory=lambda: {"skipped": 0, "nonfinite_loss": 0, "unreadable": 0})
    time_spent: float = 0.0


def _train(
    cfg: ExperimentConfig, info: D.DistInfo, device: torch.device, progress: bool,
    data_fn: Callable, model_fn: Callable, eval_fn: Optional[Callable], on_epoch_end: Optional[Callable[[int, dict], bool]] = None,
    checkpoint: Optional[dict] = None, started: Optional[float] = None, final_report: bool = False,
    collect_fn: Optional[Callable] = None,
) -> dict[str, Any]:
    started = time.perf_counter() if started is None else started
    if device.type == "cpu":
        keep_heap_for_training()  # about 2x faster CPU steps; see detect/engine/cpu_alloc.py
    out = Path(cfg.train.out)
    log = RunLog(out, enabled=info.is_main)
    ckpt = _checkpoint_to_resume(cfg, out, checkpoint, info)
    seed_everything(cfg.train.seed + info.rank)
    splits = with_val_sheets(data_fn(cfg), cfg, log.print)  # the data as read (DataSplits), or ready datasets (TrainData: tests)
    cfg = resolve(cfg, splits.classes, splits.train_records, log.print)  # read-only from here on
    if eval_fn is None:  # the real evaluation, with the resolved config
        eval_fn = run_eval.run_eval_fn(cfg, collect_fn, progress and info.is_main, log)
    data = splits.datasets(cfg)
    if ckpt is not None and list(ckpt["classes"]) != data.classes:
        raise UsageError(f"the data's classes {data.classes} differ from the run's {list(ckpt['classes'])}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest conv kernels once
    run = _build_run(cfg, data, model_fn, info, device, ckpt, log)
    hist = _History() if ckpt is None else _restore(ckpt, run, info, log)
    plan = RunPlan.for_run(cfg.train, run.scheduler, started, len(run.loader), len(run.val_loader or ()), ckpt,
                           final_report, info, log.print)
    if ckpt is not None:
        log.print(f"resuming {out / 'last.pt'} at epoch {hist.start + 1}/{cfg.train.epochs}")
    if info.is_main:
        _announce(cfg, data, run, info, device, out, log)
        if final_report and ckpt is None:
            _train_batch_picture(run.loader, run.sampler, hist.start, data.classes, out / "train_batch.png", log)
    bar = RunBar(len(run.loader), plan.epochs, hist.start) if progress and info.is_main else None
    epoch = hist.start
    while epoch < plan.epochs:
        last, stop = _epoch(cfg, run, plan, hist, data, eval_fn, epoch, bar, info, device, out, log, on_epoch_end)
        if stop:
            log.print(f"stopped after epoch {epoch + 1}: on_epoch_end asked to")
            break
        epoch += 1
        if last:
            break
    if bar is not None:
        bar.close()
    bare = run.ema.module if run.ema else run.bare
    if final_report and info.is_main and hist.best_epoch and run.val_loader is not None:
        run_eval.final_report(cfg, out / "best.pt", bare, run.val_loader, data, device, out, progress, log, collect_fn)
    return _result(hist, data, out, log, info)


def _checkpoint_to_resume(cfg: ExperimentConfig, out: Path, checkpoint: Optional[dict], info: D.DistInfo) -> Optional[dict]:
    """The ``last.pt`` a ``--resume`` continues (``checkpoint`` when the caller read it), None for
    a new run; a :class:`UsageError` when the run folder and ``--resume`` disagree."""
    t, last_pt = cfg.train, out / "last.pt"
    ckpt = None
    if t.resume:
        if checkpoint is None and not last_pt.is_file():
            raise UsageError(f"nothing to resume: {last_pt} not found; start a new run without --resume")
        ckpt = checkpoint if checkpoint is not None else load_checkpoint(last_pt)
    elif last_pt.exists():
        raise UsageError(f"{out} already holds a run ({last_pt.name}); pass --resume to continue it or choose another --out")
    if t.batch % info.world_size:
        raise UsageError(f"--batch {t.batch} (global) is not divisible by the {info.world_size} processes")
    return ckpt


def _build_run(cfg: ExperimentConfig, data: TrainData, model_fn: Callable, info: D.DistInfo, device: torch.device,
               ckpt: Optional[dict], log: RunLog) -> _Run:
    """The model (fine-tuned from ``train.weights`` on a new run), its DDP wrapper and EMA, the
    loaders, the optimizer, the schedule and the AMP scaler."""
    t = cfg.train
    bare = model_fn(cfg).to(device)
    if t.weights and ckpt is None:  # fine-tuning from a detector: detect/engine/finetune.py
        from detect.engine.finetune import load_detector_weights, read_detector

        log.print(load_detector_weights(bare, read_detector(t.weights), data.classes, t.weights).text())
    if t.channels_last:
        bare = bare.to(memory_format=torch.channels_last)
    model = D.wrap_model(bare, info, device, cfg.model.bn)
    bare = D.unwrap(model)  # SyncBN conversion replaces modules
    per_rank, workers = t.batch // info.world_size, data_workers(cfg)
    repeat = _class_balance(data.train, cfg.data.balance, log)
    loader, sampler = train_loader(data.train, per_rank, data.collate, info, t.seed, workers, device, repeat)
    if len(loader) == 0:
        raise UsageError(f"the training split has {len(data.train)} images, too few for one batch")
    val_loader = (eval_loader(data.val, per_rank, data.collate, workers, device)
                  if data.val is not None and info.is_main else None)
    optimizer = build_optimizer(bare, t)
    amp = t.amp and device.type == "cuda"
    return _Run(model, bare, ModelEMA(bare, t.ema_decay) if t.ema else None, optimizer,
                build_scheduler(optimizer, t, len(loader)), torch.amp.GradScaler(device.type, enabled=amp), amp,
                loader, sampler, val_loader)


def _announce(cfg: ExperimentConfig, data: TrainData, run: _Run, info: D.DistInfo, device: torch.device, out: Path,
              log: RunLog) -> None:
    """Rank 0: the run folder with its config.yaml, and one line on what the run trains."""
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_yaml(out / "config.yaml")
    log.print(f"{out}: {len(data.train)} train / {len(data.val) if data.val is not None else 0} val images, "
              f"{len(data.classes)} classes, {len(run.loader)} steps of {cfg.train.batch} per epoch, device {device}"
              + (f" x {info.world_size} processes" if info.distributed else "") + (", AMP" if run.amp else ""))


def _epoch(cfg: ExperimentConfig, run: _Run, plan: RunPlan, hist: _History, data: TrainData, eval_fn: Callable,
           epoch: int, bar: Optional["RunBar"], info: D.DistInfo, device: torch.device, out: Path, log: RunLog,
           on_epoch_end: Optional[Callable[[int, dict], bool]]) -> tuple[bool, bool]:
    """Epoch ``epoch`` (0-based): train, evaluate (every ``eval_every`` epochs and at the last),
    log its row, save ``last.pt`` (and ``best.pt`` when it improved), ask the plan and
    ``on_epoch_end``. Returns (it was the last epoch, ``on_epoch_end`` asked to stop)."""
    t = cfg.train
    run.sampler.set_epoch(epoch)
    t0 = time.perf_counter()
    stats = train_one_epoch(
        run.model, run.bare, run.optimizer, run.scheduler, run.scaler, run.ema, run.loader, device, info,
        amp=run.amp, clip_grad=t.clip_grad, channels_last=t.channels_last, log_every=max(1, t.log_every),
        progress=(lambda n: bar.epoch(epoch, plan.epochs)) if bar else None,
        warn=lambda m: log.print(m, err=True), on_step=plan.step_hook(epoch),
    )
    last = plan.is_last(epoch, cut=stats.steps < len(run.loader))  # a budget-cut epoch is the last
    t_eval = time.perf_counter()
    metrics: dict[str, Any] = {}
    if run.val_loader is not None and ((epoch + 1) % max(1, t.eval_every) == 0 or last):
        metrics = eval_fn(run.ema.module if run.ema else run.bare, run.val_loader, data.classes, device, cfg.model.max_det)
    row = D.broadcast_object(_epoch_row(epoch, stats, metrics, time.perf_counter() - t0, log), info)  # every rank alike
    hist.rows.append(row)
    for k in ("skipped", "nonfinite_loss"):
        hist.totals[k] += getattr(stats, k)
    hist.totals["unreadable"] += row["unreadable"]
    improved = _finite(row.get("voc_ap50")) and not (row["voc_ap50"] <= hist.best_map)
    if improved:
        hist.best_map, hist.best_epoch = row["voc_ap50"], epoch + 1
    plan.close_epoch(epoch, last)
    rngs = D.all_gather_object(rng_state(), info)
    hist.time_spent += time.perf_counter() - t0
    if info.is_main:
        _save(cfg, plan, hist, run, data.classes, epoch + 1, rngs, improved, out)
        log.epoch(hist.rows)
        log.print(format_row(row, plan.epochs))
    plan.after_epoch(epoch + 1, last, time.perf_counter() - t_eval, time.perf_counter() - t0)
    stop = bool(on_epoch_end(epoch + 1, dict(row))) if on_epoch_end is not None and info.is_main else False
    D.barrier(info)
    return last, bool(D.broadcast_object(stop, info))


def _epoch_row(epoch: int, stats: EpochStats, metrics: dict, seconds: float, log: RunLog) -> dict[str, Any]:
    """The CSV row of epoch ``epoch`` (0-based): lr, train losses, val metrics, what was skipped,
    time and speed; warns about images that could not be read."""
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": stats.lr}
    row.update({f"train_{k}": v for k, v in stats.losses.items()})
    row.update(skipped=stats.skipped, nonfinite_loss=stats.nonfinite_loss)
    row.update({k: float(metrics[k]) for k in METRIC_KEYS if k in metrics})
    unreadable = stats.unreadable_files + list(metrics.get("unreadable", []))  # files gone since the cache was built
    row["unreadable"] = stats.unreadable + len(metrics.get("unreadable", []))
    if unreadable:
        log.print(f"warning: epoch {epoch + 1}: {row['unreadable']} unreadable image(s) skipped: "
                  + "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""), err=True)
    row.update(time=seconds, images_per_s=stats.images_per_s,
               data_wait=stats.data_wait_s / max(stats.seconds, 1e-9))  # share of the epoch's steps spent waiting for data
    return row


def _save(cfg: ExperimentConfig, plan: RunPlan, hist: _History, run: _Run, classes: Sequence[str], epoch: int,
          rngs: list, improved: bool, out: Path) -> None:
    """``last.pt`` (the full state, for a ``--resume``) and, when the epoch improved, ``best.pt``."""
    state = {
        "config": plan.saved_config(cfg), "classes": list(classes), "model": run.bare.state_dict(),
        "ema": run.ema.state_dict() if run.ema else None, "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "epoch": epoch,
        "best_map": hist.best_map, "best_epoch": hist.best_epoch, "metrics": list(hist.rows), "rng": rngs,
        "time_spent": hist.time_spent,
    }
    save_checkpoint(out / "last.pt", **state)
    if improved:
        save_checkpoint(out / "best.pt", **inference_state(state))


def _result(hist: _History, data: TrainData, out: Path, log: RunLog, info: D.DistInfo) -> dict[str, Any]:
    """What :func:`train` returns; rank 0 prints the closing line."""
    plot = log.close()
    rows, best_pt = hist.rows, out / "best.pt"
    result = {
        "epochs": len(rows), "best_map": hist.best_map, "best_epoch": hist.best_epoch, "last": str(out / "last.pt"),
        "best": str(best_pt) if hist.best_epoch else None, "plot": str(plot) if plot else None,
        "data_problems": data.problems, **(rows[-1] if rows else {}), **hist.totals,  # run totals, not the last row's
    }
    if info.is_main:
        log.print(f"done: {len(rows)} epochs in {out}; best voc_ap50 {hist.best_map:.4f} (epoch {hist.best_epoch})"
                  if hist.best_epoch else f"done: {len(rows)} epochs in {out} (no validation, no best.pt)")
    return result


def _class_balance(dataset: Any, power: float, log: RunLog) -> Optional[Any]:
    """Repeat factors for class-balanced sampling (``data.balance`` > 0), or None."""
    records = getattr(dataset, "records", None)
    if not power or not records:
        return None
    from detect.engine.loader import repeat_factors

    repeat = repeat_factors([r.labels for r in records], power)
    if repeat.max() > 1:
        log.print(f"class-balanced sampling (power {power:g}): {int((repeat > 1).sum())} of {len(repeat)} images "
                  f"repeated (up to {repeat.max():.2f}x), {round(float(repeat.sum()))} images per epoch")
    return repeat


def data_workers(cfg: ExperimentConfig) -> int:
    return max(0, int(cfg.data.workers))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _restore(ckpt: dict, run: _Run, info: D.DistInfo, log: RunLog) -> _History:
    """Load a training checkpoint's states into ``run``; returns the history it holds."""
    missing = [k for k in ("optimizer", "scheduler", "epoch") if k not in ckpt]
    if missing:
        raise UsageError(f"last.pt has no {missing}: it is a weights-only file and cannot be resumed")
    run.bare.load_state_dict(ckpt["model"])
    if run.ema is not None:
        if ckpt.get("ema"):
            run.ema.load_state_dict(ckpt["ema"])
        else:
            run.ema.module.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng") or []
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank])
    else:
        log.print(f"warning: last.pt has RNG states of {len(rngs)} processes, this run has {info.world_size}; "
                  "model-side randomness will differ from an uninterrupted run", err=True)
    return _History(int(ckpt["epoch"]), float(ckpt.get("best_map", float("nan"))), int(ckpt.get("best_epoch", 0)),
                    list(ckpt.get("metrics", [])), time_spent=float(ckpt.get("time_spent", 0.0)))


def _train_batch_picture(loader: Any, sampler: Any, epoch: int, classes: Sequence[str], path: Path, log: RunLog) -> None:
    """``train_batch.png``: the first batch of the run as the model gets it (augmented, boxes
    and class names drawn), to check the augmentation and the labels before a long run."""
    from detect.engine.report import train_batch_mosaic

    try:
        sampler.set_epoch(epoch)
        images, targets = next(iter(loader))
        if len(targets):
            train_batch_mosaic(images, targets, classes, path)
    except (OSError, ValueError, StopIteration) as e:  # a picture, never a reason to stop a run
        log.print(f"warning: no {path.name}: {e}", err=True)


class RunBar:
    """One progress bar for the whole run (its ETA is the run's, from the steps left in every
    planned epoch); each epoch's loop gets a view of it (:meth:`epoch`) whose ``close`` keeps it."""

    def __init__(self, steps_per_epoch: int, epochs: int, done_epochs: int = 0) -> None:
        from tqdm import tqdm

        self.steps = steps_per_epoch
        self.bar = tqdm(total=steps_per_epoch * epochs, initial=steps_per_epoch * done_epochs, unit="step",
                        dynamic_ncols=True, file=sys.stderr, smoothing=0.05)

    def epoch(self, epoch: int, epochs: int) -> Any:
        """The bar for epoch ``epoch`` (0-based) of ``epochs`` (the plan may have changed)."""
        total = self.steps * epochs
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = self.steps * epoch  # a step count an epoch cut short by the budget left behind
        self.bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
        bar = self.bar

        class View:
            update, set_postfix = bar.update, bar.set_postfix

            @staticmethod
            def close() -> None:
                bar.refresh()

        return View()

    def close(self) -> None:
        self.bar.close()
