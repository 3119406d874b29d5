"""``detect train --time MINUTES``: fit a whole training run into a wall-clock budget.

The run is planned from measured speed, not from a guess: after the first steps of the first
epoch the mean step time gives the epoch's cost, an evaluation is estimated from it (then
measured), and the number of epochs is the largest that fits what is left of the budget after
the closing evaluation and checkpoint. The learning-rate schedule is re-planned to that many
epochs (:class:`detect.engine.optim.LRSchedule`, warmup unchanged), so the cosine ends where
the budget ends. At each epoch end the plan is checked against the measured epoch cost
(training + evaluation + checkpoint): in the first half of the run it may grow or shrink, later
only shrink (a stretched cosine late in the run would raise the learning rate again). When
time runs out inside an epoch (a budget shorter than one epoch, or a machine that slowed
down), the epoch stops early and the run closes with its evaluation and ``best.pt``.

Times are ``time.perf_counter()`` seconds; the budget counts from ``start`` (the trainer's
entry, so reading the data and building the model are inside it).
"""

from __future__ import annotations

import math
import time
from typing import Optional

# Steps timed before the first plan (after SKIP warm-up steps, which include allocator and
# kernel-selection costs): enough for a stable mean, few enough to plan early.
SKIP_STEPS = 2
TIMED_STEPS = 10
# Held back from the budget for the closing work beyond the last epoch's own evaluation
# (checkpoint, plots, process exit) and for noise in the estimates.
MARGIN_FRACTION = 0.02
MARGIN_MIN_S = 3.0
REPORT_S = 10.0  # drawing the final report's pictures (matplotlib, the mosaic)


class TimeBudget:
    """Plans epochs to fit ``minutes`` of wall-clock time from ``start``.

    Args:
        minutes: the budget (> 0).
        start: ``time.perf_counter()`` when the run began.
        steps_per_epoch: training steps in one epoch.
        eval_batches: batches of one evaluation (0 when the run has no validation).
        spent: seconds already spent by earlier processes of this run (``--resume``).
        final_report: the run ends with ``best.pt`` evaluated once more and its pictures drawn
            (one more evaluation and :data:`REPORT_S` for the plots, kept back too).
    """

    def __init__(self, minutes: float, start: float, steps_per_epoch: int, eval_batches: int = 0, spent: float = 0.0,
                 final_report: bool = False):
        if not minutes > 0 or not math.isfinite(minutes):
            raise ValueError(f"the time budget must be a positive number of minutes, got {minutes}")
        self.seconds = float(minutes) * 60.0
        self.deadline = start + self.seconds - float(spent)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.eval_batches = int(eval_batches)
        self.margin = max(MARGIN_MIN_S, MARGIN_FRACTION * self.seconds)
        self.final_report = final_report
        self.step_s: Optional[float] = None  # mean seconds per training step
        self.eval_s: Optional[float] = None  # measured evaluation + checkpoint seconds
        self.epoch_s: Optional[float] = None  # measured cost of a whole epoch (train + eval + save)
        self._t_step = 0.0
        self._steps_seen = 0
        self._timed: list[float] = []

    # ------------------------------------------------------------------ measurements
    def step_done(self, now: Optional[float] = None) -> None:
        """Record the end of a training step (call after every step)."""
        now = time.perf_counter() if now is None else now
        if self._steps_seen >= SKIP_STEPS and self._t_step:
            self._timed.append(now - self._t_step)
            self.step_s = sum(self._timed[-50:]) / len(self._timed[-50:])
        self._steps_seen += 1
        self._t_step = now

    def epoch_started(self, now: Optional[float] = None) -> None:
        self._t_step = time.perf_counter() if now is None else now

    def eval_done(self, seconds: float) -> None:
        self.eval_s = float(seconds)

    def epoch_done(self, seconds: float) -> None:
        self.epoch_s = float(seconds)

    @property
    def ready(self) -> bool:
        """True once enough steps are timed to plan."""
        return len(self._timed) >= min(TIMED_STEPS, max(1, self.steps_per_epoch - SKIP_STEPS))

    # ------------------------------------------------------------------ decisions
    def left(self, now: Optional[float] = None) -> float:
        return self.deadline - (time.perf_counter() if now is None else now)

    def closing_s(self) -> float:
        """Seconds the closing evaluation + checkpoint (and the final report) need, plus the margin."""
        return self._eval_estimate() + self._report_estimate() + self.margin

    def _report_estimate(self) -> float:
        return self._eval_estimate() + REPORT_S if self.final_report else 0.0

    def _eval_estimate(self) -> float:
        if self.eval_s is not None:
            return self.eval_s
        if self.step_s is None or not self.eval_batches:
            return 0.0
        return 0.5 * self.step_s * self.eval_batches  # forward only (about a third of a step) + metrics

    def _epoch_estimate(self) -> float:
        train_s = (self.step_s or 0.0) * self.steps_per_epoch
        if self.epoch_s is not None:
            return max(self.epoch_s, train_s)
        return train_s + self._eval_estimate()

    def plan(self, epochs_done: int, steps_done: int = 0, now: Optional[float] = None) -> int:
        """Total epochs that fit: ``epochs_done`` finished epochs, the current one (``steps_done``
        of its steps taken; 0 at an epoch boundary) and as many more as the time left holds."""
        left = self.left(now) - self.margin - self._report_estimate()
        per_epoch = self._epoch_estimate()
        if per_epoch <= 0:
            return epochs_done + 1
        if steps_done:
            rest = (self.steps_per_epoch - steps_done) * (self.step_s or 0.0) + self._eval_estimate()
            return max(epochs_done + 1, epochs_done + 1 + int((left - rest) // per_epoch))
        return max(epochs_done + 1 if epochs_done == 0 else epochs_done, epochs_done + int(left // per_epoch))

    def another_epoch_fits(self, now: Optional[float] = None) -> bool:
        """At the end of an epoch's training, before its evaluation: does one more whole epoch
        (training + evaluation) fit after this evaluation, with the margin?"""
        return self.left(now) - self._eval_estimate() - self._epoch_estimate() - self.margin - self._report_estimate() >= 0

    def must_stop(self, now: Optional[float] = None) -> bool:
        """True when the time left only just holds the closing evaluation: stop this epoch now."""
        step = self.step_s or 0.0
        return self.left(now) < self.closing_s() + step
