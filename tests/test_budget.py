"""``--time``: the epoch plan from measured step times (pure logic on a fake clock) and a real
run of the trainer inside a budget of a few seconds."""

from __future__ import annotations

import time

import pytest
import torch

from detect.engine import train as T
from detect.engine.budget import SKIP_STEPS, TIMED_STEPS, TimeBudget
from detect.engine.checkpoint import load_checkpoint
from detect.engine.optim import LRSchedule
from detect.config import TrainConfig
from tiny_detector import TinyDetector, tiny_config, tiny_data, tiny_eval


def _timed(budget: TimeBudget, step_s: float, steps: int, t: float) -> float:
    budget.epoch_started(t)
    for _ in range(steps):
        t += step_s
        budget.step_done(t)
    return t


def test_plan_fits_the_budget_from_measured_step_time():
    # 10 minutes, 100 steps of 0.5 s per epoch (50 s), 10 eval batches (est. 2.5 s), start at t=0
    b = TimeBudget(10, 0.0, steps_per_epoch=100, eval_batches=10)
    t = _timed(b, 0.5, SKIP_STEPS + TIMED_STEPS, 0.0)
    assert b.ready and b.step_s == pytest.approx(0.5)
    # left 600 - 6 - margin 12 = 582; rest of epoch 1: 88 * 0.5 + 2.5 = 46.5; then 52.5 s per epoch
    assert b.plan(0, SKIP_STEPS + TIMED_STEPS, now=t) == 1 + int((582 - 46.5) // 52.5)
    # measured epochs that cost more shrink the plan at an epoch boundary
    b.epoch_done(100.0)
    assert b.plan(3, now=300.0) == 3 + int((600 - 300 - 12) // 100)
    assert b.another_epoch_fits(now=300.0) and not b.another_epoch_fits(now=520.0)
    assert not b.must_stop(now=500.0) and b.must_stop(now=590.0)


def test_budget_rejects_nonsense_and_counts_earlier_time():
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number of minutes"):
            TimeBudget(bad, 0.0, 10)
    assert TimeBudget(1, 100.0, 10, spent=20.0).left(now=100.0) == pytest.approx(40.0)


def test_lr_schedule_replan_keeps_warmup_and_ends_at_the_new_length():
    s = LRSchedule(TrainConfig(epochs=10, warmup_epochs=1), iters_per_epoch=10)
    early = [s(i) for i in range(5)]
    s.replan(4)
    assert [s(i) for i in range(5)] == early  # warmup is in iterations: unchanged
    assert s.total == 40 and s(40) == pytest.approx(0.01) and s(39) > s(40)
    state = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), s).state_dict()
    fresh = LRSchedule(TrainConfig(epochs=10, warmup_epochs=1), iters_per_epoch=10)
    fresh.__dict__.update(state["lr_lambdas"][0])  # what LambdaLR.load_state_dict does on --resume
    assert fresh.epochs == 4 and fresh(39) == s(39)


class FakeClock:
    """Simulated wall time: only the detector's training steps take time (``step_s`` each), so
    the plan is the same on a quiet and a loaded machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


class SlowDetector(TinyDetector):
    """A tiny detector whose training step takes ``step_s`` seconds of the fake clock."""

    step_s = 0.2
    clock: FakeClock | None = None

    def forward(self, images, targets=None):
        if self.training:
            self.clock.now += self.step_s
        return super().forward(images, targets)


def _run_on_clock(monkeypatch, cfg, data, step_s: float) -> tuple[dict, float]:
    clock = FakeClock()
    monkeypatch.setattr(T, "time", clock)  # the trainer's and the budget's clocks
    monkeypatch.setattr("detect.engine.budget.time", clock)
    start = clock.now

    def model_fn(c):
        m = SlowDetector(c.model.num_classes, c.preprocess.imgsz)
        m.clock, m.step_s = clock, step_s
        return m

    res = T.train(cfg, progress=False, data_fn=data, eval_fn=tiny_eval, model_fn=model_fn)
    return res, clock.now - start


def test_train_with_a_time_budget_plans_epochs_and_closes_with_best_pt(tmp_path, monkeypatch):
    # 16 images, batch 4: 4 steps of 0.2 s per epoch; 9 s less the 3 s margin hold 7 epochs
    # (30 steps), not the configured 1000
    cfg = tiny_config(tmp_path / "run", epochs=1000, time=0.15)
    res, took = _run_on_clock(monkeypatch, cfg, tiny_data(), 0.2)
    assert res["epochs"] == 7 and took <= 9.0
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["config"]["train"]["epochs"] == res["epochs"] == ck["epoch"]  # what the run really did
    assert ck["scheduler"]["lr_lambdas"][0]["epochs"] == res["epochs"]
    assert ck["time_spent"] > 0
    assert (tmp_path / "run" / "best.pt").is_file()
    assert ck["metrics"][-1]["lr"] < 0.02 * cfg.train.lr  # the cosine ran to its end with the budget


def test_a_budget_shorter_than_one_epoch_stops_inside_it(tmp_path, monkeypatch):
    # 16 steps of 0.6 s (an epoch is ~10 s) in a 6 s budget: the first epoch stops once only the
    # closing evaluation and the 3 s margin still fit
    cfg = tiny_config(tmp_path / "run", epochs=5, time=0.1)
    res, took = _run_on_clock(monkeypatch, cfg, tiny_data(n=64), 0.6)
    assert res["epochs"] == 1 and took <= 6.0 and (tmp_path / "run" / "best.pt").is_file()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["metrics"][0]["images_per_s"] > 0


def test_a_real_budget_of_a_few_seconds(tmp_path):
    """The same on the real clock (sleeping steps): the run ends near the budget, with best.pt."""
    class Sleepy(TinyDetector):
        def forward(self, images, targets=None):
            if self.training:
                time.sleep(0.2)
            return super().forward(images, targets)

    cfg = tiny_config(tmp_path / "run", epochs=1000, time=0.15)
    t0 = time.perf_counter()
    res = T.train(cfg, progress=False, data_fn=tiny_data(), eval_fn=tiny_eval,
                  model_fn=lambda c: Sleepy(c.model.num_classes, c.preprocess.imgsz))
    assert time.perf_counter() - t0 <= 9.0 * 1.6  # slack for a loaded machine; 1000 epochs would take minutes
    assert 1 <= res["epochs"] < 1000 and (tmp_path / "run" / "best.pt").is_file()
