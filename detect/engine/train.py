"""``detect train``: the training driver. It knows the data and model *contracts*, never a
particular model: ``build_model(cfg.model, cfg.preprocess)`` returns a module whose train-mode
call ``model(images, targets)`` gives a dict of losses (targets may carry extra keys such as
``proposals``; every tensor in them is moved to the device), and whose eval-mode call gives
detections for :func:`detect.engine.evaluate.evaluate`.

Per epoch: :func:`detect.engine.loop.train_one_epoch`, evaluation on rank 0 (EMA weights when
enabled), a CSV row, ``RUN_DIR/last.pt`` (full state, atomic) and ``RUN_DIR/best.pt`` (weights
only, best val ``voc_ap50``). ``resume`` restarts from ``last.pt`` at the next epoch, with the
optimizer, schedule, scaler, EMA and RNG states; the data order and augmentation are seeded per
(epoch, sample), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from detect.config import ExperimentConfig
from detect.engine import distributed as D
from detect.engine.budget import TimeBudget
from detect.engine.cpu_alloc import keep_heap_for_training
from detect.engine.datasets import TrainData, load_data
from detect.engine.checkpoint import (
    inference_state, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)
from detect.engine.ema import ModelEMA
from detect.engine.loader import eval_loader, seed_everything, train_loader
from detect.engine.loop import train_one_epoch
from detect.engine.optim import build_optimizer, build_scheduler
from detect.engine.runlog import METRIC_KEYS, RunLog, format_row
from detect.errors import UsageError


def _default_model(cfg: ExperimentConfig) -> torch.nn.Module:
    from detect.models.build import build_model

    return build_model(cfg.model, cfg.preprocess)


def _default_eval(model: torch.nn.Module, loader: Any, classes: Sequence[str], device: torch.device, max_det: int,
                  progress: bool = False) -> dict:
    from detect.engine.evaluate import evaluate

    return evaluate(model, loader, classes, device, max_det=max_det, progress=progress)


def train(
    cfg: ExperimentConfig,
    *,
    progress: bool = True,
    data_fn: Callable[[ExperimentConfig], TrainData] | None = None,
    model_fn: Callable[[ExperimentConfig], torch.nn.Module] | None = None,
    eval_fn: Callable[..., dict] | None = None,
    on_epoch_end: Callable[[int, dict], bool] | None = None,
    checkpoint: Optional[dict] = None,
) -> dict[str, Any]:
    """Train as ``cfg`` says (under torchrun: one process per device) and return the final
    metrics (``epochs``, ``best_map``, ``best_epoch``, ``last``, ``best``, ``skipped``,
    ``nonfinite_loss``, ``unreadable`` (images skipped because their file could not be read,
    summed over epochs), ``data_problems`` and the last epoch's CSV row).

    ``data_fn``/``model_fn``/``eval_fn`` replace :func:`load_data`, ``build_model`` and
    ``evaluate`` (tests plug tiny ones in). ``cfg`` is updated in place (``num_classes``).
    ``on_epoch_end(epoch, row)`` is called on rank 0 after each epoch's checkpoint (``epoch``
    counts from 1, ``row`` is its CSV row: losses, val metrics); returning True stops training
    there (``detect tune``'s pruner uses it). ``checkpoint``: with ``cfg.train.resume``, the run's
    ``last.pt`` when the caller has read it already (else it is read here).
    """
    started = time.perf_counter()  # a --time budget counts from here: data and model building are inside it
    info, device = D.setup(cfg.train.device)
    final_report = eval_fn is None  # the real evaluation: the run folder also gets detect val's pictures
    if eval_fn is None:
        eval_fn = lambda *a: _default_eval(*a, progress=progress and info.is_main)  # noqa: E731
    try:
        return _train(cfg, info, device, progress, data_fn or load_data, model_fn or _default_model, eval_fn,
                      on_epoch_end, checkpoint, started, final_report)
    finally:
        D.cleanup()


def _train(
    cfg: ExperimentConfig, info: D.DistInfo, device: torch.device, progress: bool,
    data_fn: Callable, model_fn: Callable, eval_fn: Callable, on_epoch_end: Optional[Callable[[int, dict], bool]] = None,
    checkpoint: Optional[dict] = None, started: Optional[float] = None, final_report: bool = False,
) -> dict[str, Any]:
    t = cfg.train
    started = time.perf_counter() if started is None else started
    if device.type == "cpu":
        keep_heap_for_training()  # about 2x faster CPU steps; see detect/engine/cpu_alloc.py
    out = Path(t.out)
    log = RunLog(out, enabled=info.is_main)
    last_pt, best_pt = out / "last.pt", out / "best.pt"
    ckpt: Optional[dict] = None
    if t.resume:
        if checkpoint is None and not last_pt.is_file():
            raise UsageError(f"nothing to resume: {last_pt} not found; start a new run without --resume")
        ckpt = checkpoint if checkpoint is not None else load_checkpoint(last_pt)
    elif last_pt.exists():
        raise UsageError(f"{out} already holds a run ({last_pt.name}); pass --resume to continue it or choose another --out")
    if t.batch % info.world_size:
        raise UsageError(f"--batch {t.batch} (global) is not divisible by the {info.world_size} processes")

    seed_everything(t.seed + info.rank)
    data = data_fn(cfg)
    cfg.model.num_classes = len(data.classes)
    if ckpt is not None and list(ckpt["classes"]) != data.classes:
        raise UsageError(f"the data's classes {data.classes} differ from the run's {list(ckpt['classes'])}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest conv kernels once

    if cfg.model.fit_anchors and cfg.model.anchor_sizes is None:
        _fit_anchors(cfg, data, log)
    from detect.models.backbones import input_preprocess

    cfg.preprocess = input_preprocess(cfg.model, cfg.preprocess)  # the mean/std the model will use, saved with the run
    bare = model_fn(cfg).to(device)
    if t.weights and ckpt is None:  # fine-tuning from a detector: detect/engine/finetune.py
        from detect.engine.finetune import load_detector_weights, read_detector

        log.print(load_detector_weights(bare, read_detector(t.weights), data.classes, t.weights).text())
    channels_last = t.channels_last
    if channels_last:
        bare = bare.to(memory_format=torch.channels_last)
    model = D.wrap_model(bare, info, device, cfg.model.bn)
    bare = D.unwrap(model)  # SyncBN conversion replaces modules
    ema = ModelEMA(bare, t.ema_decay) if t.ema else None

    per_rank = t.batch // info.world_size
    repeat = _class_balance(data.train, cfg.data.balance, log)
    loader, sampler = train_loader(data.train, per_rank, data.collate, info, t.seed, data_workers(cfg), device, repeat)
    if len(loader) == 0:
        raise UsageError(f"the training split has {len(data.train)} images, too few for one batch")
    val_loader = eval_loader(data.val, per_rank, data.collate, data_workers(cfg), device) if data.val is not None and info.is_main else None
    optimizer = build_optimizer(bare, t)
    scheduler = build_scheduler(optimizer, t, len(loader))
    amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    start, best_map, best_epoch, rows = 0, float("nan"), 0, []
    if ckpt is not None:
        start, best_map, best_epoch, rows = _restore(ckpt, bare, ema, optimizer, scheduler, scaler, info, log)
        log.print(f"resuming {last_pt} at epoch {start + 1}/{t.epochs}")
    plan = scheduler.lr_lambdas[0]  # LRSchedule: the run's length in epochs, re-planned under --time
    if not t.time:
        plan.replan(t.epochs)  # a resumed run may be extended with --epochs
    budget = None
    if t.time:
        spent = float(ckpt.get("time_spent", 0.0)) if ckpt is not None else 0.0
        budget = TimeBudget(t.time, started, len(loader), len(val_loader) if val_loader is not None else 0, spent,
                            final_report=final_report and val_loader is not None)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(out / "config.yaml")
        log.print(f"{out}: {len(data.train)} train / {len(data.val) if data.val is not None else 0} val images, "
                  f"{len(data.classes)} classes, {len(loader)} steps of {t.batch} per epoch, device {device}"
                  + (f" x {info.world_size} processes" if info.distributed else "") + (", AMP" if amp else ""))
        if final_report and ckpt is None:
            _train_batch_picture(loader, sampler, start, data.classes, out / "train_batch.png", log)

    bar = RunBar(len(loader), plan.epochs, start) if progress and info.is_main else None
    totals = {"skipped": 0, "nonfinite_loss": 0, "unreadable": 0}
    time_spent = float(ckpt.get("time_spent", 0.0)) if ckpt is not None else 0.0
    epoch = start
    while epoch < plan.epochs:
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        on_step = _budget_hook(budget, plan, epoch, info, log) if budget is not None else None
        if budget is not None:
            budget.epoch_started(t0)
        stats = train_one_epoch(
            model, bare, optimizer, scheduler, scaler, ema, loader, device, info,
            amp=amp, clip_grad=t.clip_grad, channels_last=channels_last, log_every=max(1, t.log_every),
            progress=(lambda n, e=epoch: bar.epoch(e, plan.epochs)) if bar else None,
            warn=lambda m: log.print(m, err=True), on_step=on_step,
        )
        cut = stats.steps < len(loader)  # the time budget ended this epoch early: it is the last
        last_epoch = cut or epoch + 1 >= plan.epochs
        if budget is not None and not last_epoch and not D.broadcast_object(budget.another_epoch_fits(), info):
            last_epoch = True  # this epoch's evaluation closes the run
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": stats.lr}
        row.update({f"train_{k}": v for k, v in stats.losses.items()})
        row.update(skipped=stats.skipped, nonfinite_loss=stats.nonfinite_loss)
        metrics: dict[str, Any] = {}
        t_eval = time.perf_counter()
        if val_loader is not None and ((epoch + 1) % max(1, t.eval_every) == 0 or last_epoch):
            metrics = eval_fn(ema.module if ema else bare, val_loader, data.classes, device, cfg.model.max_det)
            row.update({k: float(metrics[k]) for k in METRIC_KEYS if k in metrics})
        unreadable = stats.unreadable_files + list(metrics.get("unreadable", []))  # files gone since the cache was built
        row["unreadable"] = stats.unreadable + len(metrics.get("unreadable", []))
        if unreadable:
            log.print(f"warning: epoch {epoch + 1}: {row['unreadable']} unreadable image(s) skipped: "
                      + "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""), err=True)
        row.update(time=time.perf_counter() - t0, images_per_s=stats.images_per_s,
                   data_wait=stats.data_wait_s / max(stats.seconds, 1e-9))  # share of the epoch's steps spent waiting for data
        row = D.broadcast_object(row, info)  # every rank keeps the same history
        rows.append(row)
        totals["skipped"] += stats.skipped
        totals["nonfinite_loss"] += stats.nonfinite_loss
        totals["unreadable"] += row["unreadable"]
        improved = _finite(row.get("voc_ap50")) and not (row["voc_ap50"] <= best_map)
        if improved:
            best_map, best_epoch = row["voc_ap50"], epoch + 1
        if last_epoch:  # what the run really did, for the saved config and a --resume
            plan.replan(epoch + 1)
            t.epochs = epoch + 1
        elif budget is not None:
            t.epochs = plan.epochs
        rngs = D.all_gather_object(rng_state(), info)
        time_spent += time.perf_counter() - t0
        if info.is_main:
            state = _state(cfg, data.classes, bare, ema, optimizer, scheduler, scaler, epoch + 1, best_map, best_epoch, rows, rngs)
            state["time_spent"] = time_spent
            save_checkpoint(last_pt, **state)
            if improved:
                save_checkpoint(best_pt, **inference_state(state))
            log.epoch(rows)
            log.print(format_row(row, plan.epochs))
        if budget is not None and not last_epoch:
            budget.eval_done(time.perf_counter() - t_eval)
            budget.epoch_done(time.perf_counter() - t0)
            _replan(budget, plan, epoch + 1, info, log)
            t.epochs = plan.epochs
        stop = bool(on_epoch_end(epoch + 1, dict(row))) if on_epoch_end is not None and info.is_main else False
        D.barrier(info)
        if D.broadcast_object(stop, info):
            log.print(f"stopped after epoch {epoch + 1}: on_epoch_end asked to")
            break
        epoch += 1
        if last_epoch:
            break

    if bar is not None:
        bar.close()
    if final_report and info.is_main and best_epoch and val_loader is not None:
        _final_report(cfg, best_pt, ema.module if ema else bare, val_loader, data, device, out, progress, log)
    plot = log.close()
    result = {
        "epochs": len(rows), "best_map": best_map, "best_epoch": best_epoch, "last": str(last_pt),
        "best": str(best_pt) if best_epoch else None, "plot": str(plot) if plot else None,
        "data_problems": data.problems, **(rows[-1] if rows else {}), **totals,  # run totals, not the last row's
    }
    if info.is_main:
        log.print(f"done: {len(rows)} epochs in {out}; best voc_ap50 {best_map:.4f} (epoch {best_epoch})"
                  if best_epoch else f"done: {len(rows)} epochs in {out} (no validation, no best.pt)")
    return result


def _budget_hook(budget: TimeBudget, plan: Any, epoch: int, info: D.DistInfo, log: RunLog) -> Callable[[int], bool]:
    """The per-step callback of a ``--time`` run: time the steps, plan the run's epochs once the
    first steps are timed, and end the epoch when only the closing evaluation still fits (every
    rank decides alike: rank 0's clock is broadcast under DDP)."""
    state = {"planned": epoch > 0}

    def on_step(steps_done: int) -> bool:
        budget.step_done()
        if not state["planned"] and budget.ready:
            state["planned"] = True
            before = plan.epochs
            plan.replan(D.broadcast_object(budget.plan(epoch, steps_done), info))
            log.print(f"time budget {budget.seconds / 60:g} min: {budget.step_s:.3f} s/step measured, "
                      f"{plan.epochs} epochs planned" + (f" (was {before})" if before != plan.epochs else ""))
        stop = budget.must_stop()
        return bool(D.broadcast_object(stop, info)) if info.distributed else stop

    return on_step


def _replan(budget: TimeBudget, plan: Any, epochs_done: int, info: D.DistInfo, log: RunLog) -> None:
    """At an epoch end: fit the plan to the measured epoch cost (grow or shrink in the first
    half of the run, only shrink later)."""
    fits = D.broadcast_object(budget.plan(epochs_done), info)
    new = fits if epochs_done <= plan.epochs / 2 else min(fits, plan.epochs)
    new = max(new, epochs_done + 1)  # another epoch fits (checked before this epoch's evaluation)
    if new != plan.epochs:
        log.print(f"time budget: {new} epochs now planned (was {plan.epochs}; {budget.epoch_s:.0f} s per epoch measured)")
        plan.replan(new)


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


def _fit_anchors(cfg: ExperimentConfig, data: TrainData, log: RunLog) -> None:
    """SSD ``fit_anchors``: fit default-box scales/ratios to the training boxes, into the config
    (so checkpoints rebuild the same model and a resumed run does not fit again)."""
    if cfg.model.name != "ssd":
        raise UsageError(f"fit_anchors is an SSD option; model {cfg.model.name!r} has no default boxes")
    from detect.models.anchors import record_box_shapes
    from detect.models.ssd import fit_anchor_config

    wh = record_box_shapes(getattr(data.train, "records", None) or [])  # (M, 2) w, h / image size
    fit_anchor_config(cfg.model, cfg.preprocess.imgsz, wh)
    log.print(f"default boxes fitted to {len(wh)} training boxes: scales {[round(x, 3) for x in cfg.model.anchor_sizes]}, "
              f"ratios {[round(x, 2) for x in cfg.model.aspect_ratios[0]]}")


def data_workers(cfg: ExperimentConfig) -> int:
    return max(0, int(cfg.data.workers))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _state(cfg, classes, bare, ema, optimizer, scheduler, scaler, epoch, best_map, best_epoch, rows, rngs) -> dict:
    return {
        "config": cfg.to_dict(), "classes": list(classes), "model": bare.state_dict(), "ema": ema.state_dict() if ema else None,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
        "epoch": epoch, "best_map": best_map, "best_epoch": best_epoch, "metrics": list(rows), "rng": rngs,
    }


def _restore(ckpt, bare, ema, optimizer, scheduler, scaler, info: D.DistInfo, log: RunLog) -> tuple[int, float, int, list]:
    """Load a training checkpoint's states; returns (start epoch, best_map, best_epoch, rows)."""
    missing = [k for k in ("optimizer", "scheduler", "epoch") if k not in ckpt]
    if missing:
        raise UsageError(f"last.pt has no {missing}: it is a weights-only file and cannot be resumed")
    bare.load_state_dict(ckpt["model"])
    if ema is not None:
        if ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        else:
            ema.module.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng") or []
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank])
    else:
        log.print(f"warning: last.pt has RNG states of {len(rngs)} processes, this run has {info.world_size}; "
                  "model-side randomness will differ from an uninterrupted run", err=True)
    return int(ckpt["epoch"]), float(ckpt.get("best_map", float("nan"))), int(ckpt.get("best_epoch", 0)), list(ckpt.get("metrics", []))


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


def _final_report(cfg: ExperimentConfig, best_pt: Path, model: torch.nn.Module, val_loader: Any, data: TrainData,
                  device: torch.device, out: Path, progress: bool, log: RunLog) -> None:
    """Evaluate ``best.pt`` once more and leave in the run folder what ``detect val`` writes:
    val.json (metrics and the error breakdown) and the pictures of :mod:`detect.engine.report`."""
    from detect.engine.evaluate import collect, report

    best = load_checkpoint(best_pt)
    model.load_state_dict(best["model"])  # best.pt holds the weights that scored best (EMA when on)
    got = collect(model, val_loader, device, max_det=cfg.model.max_det, progress=progress)
    records = getattr(val_loader.dataset, "records", None)
    res = report(got, data.classes, out, records, cfg.model.max_det,
                 extra={"weights": str(best_pt), "data": cfg.data.data, "split": cfg.data.val_split,
                        "epoch": int(best.get("epoch", 0)), "imgsz": int(cfg.preprocess.imgsz)})
    from detect.engine.error_breakdown import format_breakdown

    log.print(f"best.pt (epoch {best.get('epoch')}): voc_ap50 {res['voc_ap50']:.4f}, coco_ap {res['coco_ap']:.4f}; "
              f"val.json and plots in {out}")
    log.print(format_breakdown(res["errors"]))


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
