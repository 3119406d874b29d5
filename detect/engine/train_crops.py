"""Training of the second look's crop classifier (:mod:`detect.models.crop_classifier`) on the
ground-truth boxes of a detection dataset: ``detect train-classifier``.

The recipe (the detector's, where it applies): AdamW (lr 1e-3, weight decay 0.05), a 50-step
warm-up then cosine decay over the budget, label smoothing 0.1, batch 64, crops of
:class:`~detect.data.crops.CropDataset` (jittered windows, foreign surroundings). The budget is
``epochs`` or ``minutes`` (the step count is planned from the first 20 steps' speed, as the
detector's ``--time`` does from its first epoch). Top-1 accuracy on the val split's boxes after
every epoch chooses ``best.pt``; ``last.pt`` is the end. Both are written atomically.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from detect.data.crops import CropDataset
from detect.engine.checkpoint import save_checkpoint
from detect.models.crop_classifier import KIND, CropClassifier, CropClassifierConfig

PLAN_STEPS = 20  # steps timed before a --time budget is turned into a step count


@dataclass
class CropTrainSettings:
    epochs: int = 0  # 0: run for ``minutes``
    minutes: float = 0.0
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    workers: int = 0
    seed: int = 0
    pretrained: str = "imagenet"


def _lr_at(step: int, total: int, base: float, warmup: int = 50) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to 0 at ``total``."""
    return base * min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


@torch.inference_mode()
def accuracy(model: CropClassifier, loader: DataLoader, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` over ``loader``'s crops (nan without any)."""
    model.eval()
    right = seen = 0
    for x, y in loader:
        right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        seen += len(y)
    return right / seen if seen else float("nan")


def train_crop_classifier(train_records, val_records, classes: list[str], out: Path, cfg: CropClassifierConfig,
                          settings: CropTrainSettings, device: torch.device,
                          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Train on ``train_records``' boxes, keep the best by ``val_records``' accuracy (the last
    when there are no val boxes). Returns the summary also written to ``out/summary``."""
    if settings.epochs <= 0 and settings.minutes <= 0:
        raise ValueError("a crop classifier needs a budget: epochs > 0 or minutes > 0")
    torch.manual_seed(settings.seed)
    cfg.num_classes = len(classes)
    train_set = CropDataset(train_records, cfg.size, cfg.expand, train=True, seed=settings.seed)
    val_set = CropDataset(val_records, cfg.size, cfg.expand, train=False)
    if len(train_set) == 0:
        raise ValueError("no ground-truth boxes to train the crop classifier on")
    loader = DataLoader(train_set, batch_size=settings.batch, shuffle=True, drop_last=len(train_set) > settings.batch,
                        num_workers=settings.workers, persistent_workers=settings.workers > 0)
    val_loader = DataLoader(val_set, batch_size=128, num_workers=settings.workers)
    model = CropClassifier(cfg, settings.pretrained).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = len(loader)
    total = settings.epochs * per_epoch if settings.epochs > 0 else None
    out.mkdir(parents=True, exist_ok=True)
    log(f"crop classifier: {len(train_set)} train crops, {len(val_set)} val crops, {len(classes)} classes, "
        f"{cfg.backbone} at {cfg.size} px, {'%d epochs' % settings.epochs if total else '%.1f min' % settings.minutes}")
    best, best_epoch, step, epoch, t0 = -1.0, 0, 0, 0, time.perf_counter()
    history = []

    def save(path: Path, acc: float) -> None:
        save_checkpoint(path, kind=KIND, config=cfg.to_dict(), classes=list(classes), model=model.state_dict(),
                        epoch=epoch, val_accuracy=acc)

    while total is None or step < total:
        model.train()
        seen = loss_sum = 0.0
        for x, y in loader:
            if total is None and step == PLAN_STEPS:
                total = max(int(step * settings.minutes * 60 / (time.perf_counter() - t0)), step + 1)
                log(f"planned {total} steps ({total / per_epoch:.1f} epochs) for {settings.minutes:g} min")
            if total is not None and step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total or 10**9, settings.lr)
            loss = F.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=settings.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
        epoch += 1
        acc = accuracy(model, val_loader, device)
        history.append({"epoch": epoch, "loss": loss_sum / max(seen, 1), "val_accuracy": acc})
        log(f"epoch {epoch}: loss {loss_sum / max(seen, 1):.4f}  val top-1 {acc:.4f}  ({time.perf_counter() - t0:.0f} s)")
        save(out / "last.pt", acc)
        if math.isnan(acc) or acc > best:  # no val boxes: best.pt is the last epoch
            best, best_epoch = acc, epoch
            save(out / "best.pt", acc)
        if seen == 0:
            break
    summary = {"best_val_accuracy": None if math.isnan(best) else best, "best_epoch": best_epoch, "epochs": epoch, "steps": step,
               "seconds": round(time.perf_counter() - t0, 1), "history": history}
    return summary
