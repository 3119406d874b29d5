"""One training epoch and its parts: skipped non-finite steps, the time spent waiting for data,
parameter groups, the learning-rate schedule, EMA, the epoch-seeded shard sampler, and (GPU)
AMP steps that never sync the host. The whole run (resume, run folder, CLI) is test_train.py."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_detector import NaNOnImage, TinyDataset, TinyDetector, assert_same_state, collate

from detect.config import TrainConfig
from detect.engine.distributed import DistInfo
from detect.engine.ema import ModelEMA
from detect.engine.loader import EpochShardSampler
from detect.engine.loop import train_one_epoch
from detect.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_skipped_step_leaves_weights_and_momentum_untouched(optimizer):
    torch.manual_seed(0)
    model = NaNOnImage(3, 32)
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.9, warmup_epochs=0, epochs=1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = TinyDataset(16, augment=False)
    batch = collate([ds[5], ds[6]])
    stats = train_one_epoch(model, model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), None, [batch],
                            torch.device("cpu"), DistInfo(), log_every=1, warn=lambda m: None)
    assert stats.skipped == 1 and stats.nonfinite_loss == 1 and stats.steps == 1
    assert_same_state(before, model.state_dict())
    for group in opt.param_groups:  # the first skipped step must not leave garbage momentum (SGD) or moments (AdamW)
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
                if state.get(key) is not None:
                    assert torch.count_nonzero(state[key]) == 0, key
            if "step" in state:
                assert float(state["step"]) == 0  # AdamW's bias correction counts applied steps only
    batch = collate([ds[1], ds[2]])
    train_one_epoch(model, model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), None, [batch],
                    torch.device("cpu"), DistInfo(), log_every=1)
    assert not torch.equal(before["cls.weight"], model.cls.weight)


def test_param_groups_no_decay_on_norm_and_bias():
    model = TinyDetector(3, 32, bn="train")
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["body.0.weight", "body.3.weight", "box.weight", "cls.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["body.1.bias", "body.1.weight", "body.3.bias", "box.bias", "cls.bias"]
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", momentum=0.8, beta2=0.99))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, TrainConfig(optimizer="lion"))


def test_backbone_lr_gives_the_backbone_its_own_groups():
    model = TinyDetector(3, 32, bn="train")
    model.backbone = model.body  # a detector's pretrained part
    groups = {g["name"]: g for g in param_groups(model, 5e-4, lr=0.1, backbone_lr=0.25)}
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups["decay_backbone"]["params"]) == ["body.0.weight", "body.3.weight"]
    assert sorted(names[id(p)] for p in groups["decay"]["params"]) == ["box.weight", "cls.weight"]
    assert groups["decay_backbone"]["lr"] == pytest.approx(0.025) and groups["decay"]["lr"] == 0.1
    assert groups["no_decay_backbone"]["weight_decay"] == 0.0
    opt = build_optimizer(model, TrainConfig(lr=0.1, backbone_lr=0.25))
    sched = build_scheduler(opt, TrainConfig(epochs=2, warmup_epochs=0), 1)
    opt.step()
    sched.step()  # the schedule scales every group's own lr
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["decay_backbone"] / lrs["decay"] == pytest.approx(0.25)


def test_lr_schedule_warmup_cosine_step():
    assert lr_factor(0, 100, 10) == pytest.approx(0.001)
    assert lr_factor(5, 100, 10) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the cosine
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)
    assert lr_factor(30, 100, 0, "step", [50, 80]) == 1.0
    assert lr_factor(50, 100, 0, "step", [50, 80]) == pytest.approx(0.1)
    assert lr_factor(90, 100, 0, "step", [50, 80]) == pytest.approx(0.01)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, TrainConfig(epochs=10, warmup_epochs=1, scheduler="step", milestones=[0.5, 8]), 10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[10] == 1.0 and lrs[50] == pytest.approx(0.1) and lrs[80] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_scheduler(opt, TrainConfig(scheduler="poly"), 10)


def test_ema_averages_params_and_buffers_with_ramp():
    model = TinyDetector(3, 32, bn="train")
    ema = ModelEMA(model, decay=0.5, tau=1.0)
    with torch.no_grad():
        for v in model.state_dict().values():
            v.add_(1) if v.is_floating_point() else v.fill_(7)
    ema.update(model)
    d = 0.5 * (1 - math.exp(-1))
    e, m = ema.module.state_dict(), model.state_dict()
    torch.testing.assert_close(e["cls.weight"], m["cls.weight"] - d)  # ema = d * (m - 1) + (1 - d) * m
    torch.testing.assert_close(e["body.1.running_mean"], m["body.1.running_mean"] - d)  # BN buffer averaged
    assert e["body.1.num_batches_tracked"].item() == 7  # integer buffer copied
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_shard_sampler_splits_global_batches_and_is_epoch_seeded():
    one = list(EpochShardSampler(16, seed=3))
    r0, r1 = list(EpochShardSampler(16, seed=3, rank=0, world=2)), list(EpochShardSampler(16, seed=3, rank=1, world=2))
    for step in range(4):  # global batch 4 = 2 per rank
        assert sorted(r0[2 * step : 2 * step + 2] + r1[2 * step : 2 * step + 2]) == sorted(one[4 * step : 4 * step + 4])
    s = EpochShardSampler(16, seed=3)
    s.set_epoch(1)
    assert list(s) != one and sorted(i for _, i in s) == list(range(16)) and {e for e, _ in s} == {1}
    assert len(EpochShardSampler(5, rank=1, world=2)) == 3


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_cuda_amp_steps_never_sync_the_host(optimizer):
    """On CUDA with AMP, channels-last, clipping and EMA, a training step (NaN check and skip
    included) makes no host sync: torch's sync debug mode raises on any. A NaN batch is skipped."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = NaNOnImage(3, 32, bn="train").to(dev).to(memory_format=torch.channels_last)
    cfg = TrainConfig(optimizer=optimizer, lr=0.01, warmup_epochs=0, epochs=1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 8)
    ema = ModelEMA(model)
    ds = TinyDataset(16, augment=False)
    batches = [collate([ds[i] for i in range(j, j + 2)]) for j in range(0, 16, 2)]  # image 5 -> batch 2
    pin = lambda t: {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in t.items()}  # noqa: E731 (as the DataLoader does)
    batches = [(x.pin_memory(), [pin(t) for t in ts]) for x, ts in batches]

    def stream():
        try:
            for k, b in enumerate(batches):
                if k == 1:  # after the first step (lazy CUDA/cuDNN initialisation)
                    torch.cuda.set_sync_debug_mode("error")
                yield b
        finally:
            torch.cuda.set_sync_debug_mode("default")

    stats = train_one_epoch(model, model, opt, sched, torch.amp.GradScaler("cuda"), ema, stream(), dev, DistInfo(),
                            amp=True, clip_grad=10.0, channels_last=True, log_every=10**9, warn=lambda m: None)
    assert stats.nonfinite_loss == 2 and stats.skipped >= 2  # images 5 and 9 (+ possible fp16 overflows)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_epoch_reports_the_time_spent_waiting_for_data():
    """data_wait_s is the time the step loop waited on the loader: a loader that takes 40 ms a
    batch shows at least that per step, and a share of the epoch that says the loader limits it."""
    import time as _time

    torch.manual_seed(0)
    model = NaNOnImage(3, 32)
    cfg = TrainConfig(lr=0.01, warmup_epochs=0, epochs=1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 3)
    ds = TinyDataset(16, augment=False)
    batches = [collate([ds[1], ds[2]]), collate([ds[3], ds[4]]), collate([ds[7], ds[8]])]

    class SlowLoader:
        def __len__(self):
            return len(batches)

        def __iter__(self):
            for b in batches:
                _time.sleep(0.04)
                yield b

    stats = train_one_epoch(model, model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), None, SlowLoader(),
                            torch.device("cpu"), DistInfo(), log_every=1)
    assert stats.steps == 3 and stats.data_wait_s >= 3 * 0.04 and stats.data_wait_s <= stats.seconds
    fast = train_one_epoch(model, model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), None, batches,
                           torch.device("cpu"), DistInfo(), log_every=1)
    assert fast.data_wait_s < 0.04  # a list hands its batches over at once
    from detect.engine.runlog import format_row

    line = format_row({"epoch": 1, "lr": 0.01, "time": 1.0, "images_per_s": 6.0, "data_wait": 0.5}, 1)
    assert line.endswith("data wait 50%")
