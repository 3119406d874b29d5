"""One training epoch over any model that honours the contract
``model(images, targets) -> dict[str, Tensor]`` of losses (their sum is minimised).

Per step: autocast forward (fp16 on CUDA when AMP is on), scaled backward, unscale, gradient
clipping, then an optimizer step that is skipped when the loss or the gradient norm is not
finite (NaN/inf never reaches the weights), LR schedule step and EMA update. The skip is
decided on the device (fused optimizers take a ``found_inf`` flag; under DDP the flag is
all-reduced so every rank skips together), and losses accumulate on the device: the host
syncs only every ``log_every`` steps, to update the progress bar. Images the collate dropped
because their file could not be read are counted and named; a batch left with none is a
skipped step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from torch import nn

from detect.engine.distributed import DistInfo, all_reduce_
from detect.engine.ema import ModelEMA
from detect.engine.loader import to_device
from detect.engine.optim import step_unless


@dataclass
class EpochStats:
    """Means over the epoch's applied steps (all ranks), and what was skipped."""

    losses: dict[str, float] = field(default_factory=dict)  # includes "loss" (the total)
    lr: float = 0.0
    steps: int = 0
    skipped: int = 0  # steps not applied: non-finite loss or gradient
    nonfinite_loss: int = 0  # steps (summed over ranks) whose loss was NaN/inf
    unreadable: int = 0  # images (summed over ranks) dropped from their batch: the file could not be read
    unreadable_files: list[str] = field(default_factory=list)  # this rank's, "path: reason"
    images_per_s: float = 0.0
    seconds: float = 0.0
    data_wait_s: float = 0.0  # this rank's time waiting for the loader's next batch: near 0, the step limits the speed


def _timed(batches: Iterable, waited: list[float]) -> Iterator:
    """The batches of ``batches``, adding the time each took to arrive to ``waited[0]``."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - t
        yield batch


def _loss_dict(out: Any) -> dict[str, torch.Tensor]:
    if not isinstance(out, dict) or not out or not all(torch.is_tensor(v) for v in out.values()):
        raise TypeError(
            f"in train mode the model must return a non-empty dict of loss tensors, got {type(out).__name__}; "
            "see the model contract in docs/ARCHITECTURE.md"
        )
    return out


class _Postfix:
    """The progress bar's loss at every step without stalling a GPU: on the CPU the running mean
    is read directly; on CUDA it is copied to pinned host memory without blocking and shown at the
    next step once the copy has landed (one step late, never a sync)."""

    def __init__(self, bar: Any, device: torch.device) -> None:
        self.bar, self.cuda = bar, device.type == "cuda"
        self.host: Optional[torch.Tensor] = None
        self.event: Any = None
        self.lr, self.img_s = 0.0, float("nan")

    def update(self, means: torch.Tensor, lr: float) -> None:
        if not self.cuda:
            self._show(means.tolist(), lr)
            return
        if self.event is not None and self.event.query():
            self._show(self.host.tolist(), self.lr)
        if self.host is None or self.host.shape != means.shape:
            self.host = torch.empty(means.shape, dtype=means.dtype, pin_memory=True)
        self.host.copy_(means, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()
        self.lr = lr

    def _show(self, means: list[float], lr: float) -> None:
        post = {"loss": f"{means[0]:.4g}", "lr": f"{lr:.3g}"}
        if self.img_s == self.img_s:  # known after the first log_every steps
            post["img_s"] = f"{self.img_s:.0f}"
        self.bar.set_postfix(post, refresh=False)


class _Tally:
    """The epoch's running sums, on the device (the host reads them every ``log_every`` steps and
    at the end): per-loss sums over applied steps, applied and non-finite step counts, images."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.keys: list[str] = []
        self.sums = torch.zeros(0, device=device)
        self.zero = torch.zeros((), device=device)
        self.n_ok = torch.zeros((), device=device)
        self.n_bad_loss = torch.zeros((), device=device)
        self.steps = self.images = self.images_log = self.reported_bad = 0
        self.unreadable: list[str] = []

    def values(self, losses: dict[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        """Tensor[1 + L]: the total and each loss of this step (the keys of the first step)."""
        if not self.keys:
            self.keys = list(losses)
            self.sums = torch.zeros(len(self.keys) + 1, device=self.device)
        return torch.stack([loss.detach()] + [losses[k].detach().float() if k in losses else self.zero for k in self.keys])

    def add(self, vals: torch.Tensor, ok: torch.Tensor, loss_ok: torch.Tensor, images: int) -> None:
        self.sums += torch.where(ok > 0, vals, self.zero)
        self.n_ok += ok
        self.n_bad_loss += (~loss_ok).float()
        self.steps += 1
        self.images += images
        self.images_log += images

    def stats(self, optimizer: torch.optim.Optimizer, info: DistInfo, t0: float, waited: float) -> EpochStats:
        """The :class:`EpochStats` over all ranks (two all-reduces) of the epoch begun at ``t0``."""
        counts = torch.stack([self.n_ok, self.n_bad_loss, torch.tensor(float(self.steps), device=self.device),
                              torch.tensor(float(len(self.unreadable)), device=self.device)])
        all_reduce_(self.sums, info, "sum")
        all_reduce_(counts, info, "sum")
        w = info.world_size
        n_ok_all, n_bad_all, n_steps_all, n_unreadable = counts.tolist()
        # every rank adds its local-batch means; the global mean of a step is their average
        means = (self.sums / max(n_ok_all, 1.0)).tolist()
        seconds = time.perf_counter() - t0
        return EpochStats(
            losses=dict(zip(["loss"] + self.keys, means)) if self.keys else {},
            lr=float(optimizer.param_groups[0]["lr"]),
            steps=int(round(n_steps_all / w)),
            skipped=int(round((n_steps_all - n_ok_all) / w)),
            nonfinite_loss=int(n_bad_all),
            unreadable=int(n_unreadable),
            unreadable_files=self.unreadable,
            images_per_s=self.images / max(seconds, 1e-9),
            seconds=seconds,
            data_wait_s=waited,
        )


def _update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list[torch.Tensor],
            loss_ok: torch.Tensor, clip_grad: float, info: DistInfo, zero: torch.Tensor) -> torch.Tensor:
    """After backward: unscale, clip, and step unless the loss or the gradient norm is not finite
    on some rank. Returns ``ok`` (1.0 applied, 0.0 skipped), on the device (no host sync)."""
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad)
    else:
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else zero
    ok = (loss_ok & torch.isfinite(norm)).float()
    all_reduce_(ok, info, "min")  # a step happens on every rank or on none
    step_unless(optimizer, 1.0 - ok)
    if scaler.is_enabled():
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return ok


def train_one_epoch(
    model: nn.Module,
    bare: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ema: Optional[ModelEMA],
    loader: Iterable,
    device: torch.device,
    info: DistInfo,
    *,
    amp: bool = False,
    clip_grad: float = 0.0,
    channels_last: bool = False,
    log_every: int = 20,
    progress: Optional[Callable[[int], Any]] = None,
    warn: Callable[[str], None] = print,
    on_step: Optional[Callable[[int], bool]] = None,
) -> EpochStats:
    """Train ``model`` (possibly DDP-wrapped ``bare``) for one pass over ``loader``.

    ``progress(total_steps)`` returns a tqdm-like bar (``update``, ``set_postfix``, ``close``)
    or None. ``on_step(steps_done)`` is called after every step; True ends the epoch there (the
    time budget; under DDP the caller must make every rank agree). Returns :class:`EpochStats`.
    """
    model.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    tally = _Tally(device)
    steps = len(loader) if hasattr(loader, "__len__") else 0
    bar = progress(steps) if progress else None
    shown = _Postfix(bar, device)
    t0 = t_log = time.perf_counter()
    waited = [0.0]  # seconds spent in the loader's next(), filled by _timed
    try:
        for i, (imgs, targets) in enumerate(_timed(loader, waited)):
            tally.unreadable += map(str, getattr(targets, "unreadable", ()))  # dropped by the collate (detect.data.dataset)
            if not len(targets):  # no image of the batch could be read: a skipped step
                if info.distributed:  # the other ranks would wait in backward forever
                    raise RuntimeError(f"rank {info.rank}: no image of batch {i + 1} could be read: {tally.unreadable[-1]}")
                scheduler.step()
                tally.steps += 1
                if bar is not None:
                    bar.update(1)
                if on_step is not None and on_step(i + 1):
                    break
                continue
            imgs, targets = to_device(imgs, targets, device, channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                losses = _loss_dict(model(imgs, targets))
            loss = sum(v.float() for v in losses.values())
            vals = tally.values(losses, loss)
            loss_ok = torch.isfinite(loss.detach())
            scaler.scale(loss).backward()
            ok = _update(optimizer, scaler, params, loss_ok, clip_grad, info, tally.zero)
            scheduler.step()
            if ema is not None:
                ema.update(bare)
            tally.add(vals, ok, loss_ok, imgs.shape[0] * info.world_size)
            if bar is not None:
                shown.update(tally.sums / tally.n_ok.clamp(min=1), optimizer.param_groups[0]["lr"])  # the running mean loss
                bar.update(1)
            if (i + 1) % log_every == 0 or i + 1 == steps:
                bad = int(tally.n_bad_loss.item())  # the host sync, every log_every steps
                now = time.perf_counter()
                if bad > tally.reported_bad:
                    warn(f"warning: {bad - tally.reported_bad} step(s) with a non-finite loss skipped (step {i + 1})")
                    tally.reported_bad = bad
                shown.img_s = tally.images_log / max(now - t_log, 1e-9)
                t_log, tally.images_log = now, 0
            if on_step is not None and on_step(i + 1):
                break
    finally:
        if bar is not None:
            bar.close()
    return tally.stats(optimizer, info, t0, waited[0])
