"""The run plan: how many epochs a run trains, the one place that number lives.

A :class:`RunPlan` owns the learning-rate schedule's length (:class:`~detect.engine.optim.LRSchedule`,
which ``LambdaLR`` saves with the run, so a resume continues the same curve) and, under
``--time``, the :class:`~detect.engine.budget.TimeBudget`. The trainer asks it at each step
(:meth:`step_hook`: end the epoch now?) and at each epoch end (:meth:`is_last`, :meth:`close_epoch`,
:meth:`after_epoch`); it never reads ``train.epochs`` again once the plan is made. Under DDP
every decision is rank 0's, broadcast, so every rank stops alike.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from detect.config import ExperimentConfig, TrainConfig
from detect.engine import distributed as D
from detect.engine.budget import TimeBudget
from detect.engine.optim import LRSchedule


class RunPlan:
    """Epochs, schedule and time budget of a run.

    Args:
        schedule: the scheduler's :class:`LRSchedule` (restored from ``last.pt`` on a resume).
        epochs: ``train.epochs``; without a budget the run is this long (a resume may extend it).
        budget: the ``--time`` budget, or None.
        info, log: the process group (decisions are broadcast from rank 0) and the run log.
    """

    def __init__(self, schedule: LRSchedule, epochs: int, budget: Optional[TimeBudget], info: D.DistInfo,
                 log: Callable[[str], Any] = print) -> None:
        self.schedule, self.budget, self.info, self.log = schedule, budget, info, log
        if budget is None:
            schedule.replan(epochs)  # a resumed run may be extended with --epochs

    @classmethod
    def for_run(cls, t: TrainConfig, scheduler: Any, started: float, steps: int, eval_batches: int,
                ckpt: Optional[dict], final_report: bool, info: D.DistInfo, log: Callable[[str], Any]) -> "RunPlan":
        """The plan of a run: ``scheduler`` a ``LambdaLR`` over an :class:`LRSchedule`, ``steps``
        per epoch, ``eval_batches`` per evaluation (0: none), ``ckpt`` the resumed ``last.pt``."""
        budget = None
        if t.time:
            spent = float(ckpt.get("time_spent", 0.0)) if ckpt is not None else 0.0
            budget = TimeBudget(t.time, started, steps, eval_batches, spent, final_report=final_report and eval_batches > 0)
        return cls(scheduler.lr_lambdas[0], t.epochs, budget, info, log)

    @property
    def epochs(self) -> int:
        """The run's length in epochs, as planned now."""
        return self.schedule.epochs

    def saved_config(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """``cfg`` as a checkpoint stores it: ``train.epochs`` is the plan's (what a ``--resume`` continues)."""
        d = cfg.to_dict()
        d["train"]["epochs"] = self.epochs
        return d

    def step_hook(self, epoch: int) -> Optional[Callable[[int], bool]]:
        """The per-step callback of epoch ``epoch`` (0-based) under a budget, else None: it times
        the steps, plans the run's epochs once the first steps are timed, and ends the epoch when
        only the closing evaluation still fits."""
        budget = self.budget
        if budget is None:
            return None
        budget.epoch_started(time.perf_counter())
        planned = [epoch > 0]

        def on_step(steps_done: int) -> bool:
            budget.step_done()
            if not planned[0] and budget.ready:
                planned[0] = True
                before = self.epochs
                self.schedule.replan(D.broadcast_object(budget.plan(epoch, steps_done), self.info))
                self.log(f"time budget {budget.seconds / 60:g} min: {budget.step_s:.3f} s/step measured, "
                         f"{self.epochs} epochs planned" + (f" (was {before})" if before != self.epochs else ""))
            stop = budget.must_stop()
            return bool(D.broadcast_object(stop, self.info)) if self.info.distributed else stop

        return on_step

    def is_last(self, epoch: int, cut: bool) -> bool:
        """After epoch ``epoch``'s training, before its evaluation: is it the run's last? ``cut``:
        the budget ended it early. Under a budget, also when another whole epoch would not fit."""
        last = cut or epoch + 1 >= self.epochs
        if self.budget is not None and not last and not D.broadcast_object(self.budget.another_epoch_fits(), self.info):
            last = True  # this epoch's evaluation closes the run
        return last

    def close_epoch(self, epoch: int, last: bool) -> None:
        """Before the epoch's checkpoint: the last epoch makes the plan what the run really did
        (for the saved config and a ``--resume``)."""
        if last:
            self.schedule.replan(epoch + 1)

    def after_epoch(self, epochs_done: int, last: bool, eval_s: float, epoch_s: float) -> None:
        """After the checkpoint, under a budget: record the epoch's measured cost and fit the plan
        to it (grow or shrink in the first half of the run, only shrink later)."""
        budget = self.budget
        if budget is None or last:
            return
        budget.eval_done(eval_s)
        budget.epoch_done(epoch_s)
        fits = D.broadcast_object(budget.plan(epochs_done), self.info)
        new = fits if epochs_done <= self.epochs / 2 else min(fits, self.epochs)
        new = max(new, epochs_done + 1)  # another epoch fits (checked before this epoch's evaluation)
        if new != self.epochs:
            self.log(f"time budget: {new} epochs now planned (was {self.epochs}; {budget.epoch_s:.0f} s per epoch measured)")
            self.schedule.replan(new)
