"""``detect tune``: grid with 2 workers, pruning, report files, failing trials, storages, GPU
workers (resuming and recovering from kills: test_tune_recovery.py).

Most tests train with ``fake_train`` (a deterministic stand-in with the trainer's contract:
``train(cfg, on_epoch_end) -> dict``, a per-epoch CSV in ``cfg.train.out``) so the study
machinery is tested in seconds; ``test_real_trainer_grid_two_workers`` runs the real training loop
with the tiny test detector, and the slow ``test_cli_tune_real_ssd_on_synth_data`` the real SSD.
"""

from __future__ import annotations

import json
import math
import re
import os
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")  # the `tune` extra (in `dev`): a machine without it skips these
import yaml

from detect.cli import main
from detect.config import ExperimentConfig
from detect.tune.search import run_tune
from detect.tune.space import load_space
from detect.tune.worker import open_storage

FAKE = "test_tune:fake_train"


def fake_metric(cfg: ExperimentConfig) -> float:
    """Peaks at lr=0.01, momentum=0.88."""
    return max(0.0, 0.9 - 0.2 * abs(math.log10(cfg.train.lr) + 2) - 2 * abs(cfg.train.momentum - 0.88))


def fake_train(cfg: ExperimentConfig, on_epoch_end=None) -> dict:
    """The trainer's contract with no model: metric rises to ``fake_metric`` over the epochs;
    appends one line per run to RUNS.log so tests can see what was trained and how often."""
    out = Path(cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parents[1] / "RUNS.log", "a") as f:
        f.write(json.dumps({"lr": cfg.train.lr, "momentum": cfg.train.momentum, "epochs": cfg.train.epochs}) + "\n")
    lines = ["epoch,loss,val/voc_ap50"]
    best = 0.0
    for e in range(cfg.train.epochs):
        ap = fake_metric(cfg) * (e + 1) / cfg.train.epochs
        best = max(best, ap)
        lines.append(f"{e + 1},{2.0 - ap:.4f},{ap:.4f}")
        (out / "results.csv").write_text("\n".join(lines) + "\n")
        time.sleep(float(os.environ.get("FAKE_TRAIN_DELAY", "0")))  # seconds per epoch
        if on_epoch_end is not None and on_epoch_end(e, {"train/loss": 2.0 - ap, "voc_ap50": ap}):
            break
    return {"best_voc_ap50": best}


def write_space(tmp_path: Path, params: dict, **top) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({"params": params, **top}))
    return p


def runs_of(out: Path) -> list[dict]:
    f = out / "RUNS.log"
    return [json.loads(s) for s in f.read_text().splitlines()] if f.exists() else []


def study_of(out: Path, name: str = "space") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{out / 'study.db'}"))


GRID_2X2 = {"lr": {"values": [0.1, 0.01], "log": True}, "momentum": [0.8, 0.88]}


# ---------------------------------------------------------------- the study


def test_grid_2x2_ranks_and_reports(tmp_path):
    out = tmp_path / "tune"
    space = write_space(tmp_path, GRID_2X2, pruner="none")
    rc = run_tune(str(tmp_path), space, out, epochs=2, device="cpu", trainer=FAKE)
    assert rc == 0
    runs = runs_of(out)
    assert sorted((r["lr"], r["momentum"]) for r in runs) == [(0.01, 0.8), (0.01, 0.88), (0.1, 0.8), (0.1, 0.88)]
    with open(out / "trials.csv") as f:
        rows = list(__import__("csv").DictReader(f))
    assert len(rows) == 4 and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    values = [float(r["voc_ap50"]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert (rows[0]["lr"], rows[0]["momentum"], rows[0]["epochs"]) == ("0.01", "0.88", "2")
    assert "| rank | trial | state | voc_ap50 | lr | momentum |" in (out / "trials.md").read_text()
    for png in ("metric_per_trial.png", "params.png", "loss_curves.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    best = ExperimentConfig.load_yaml(out / "best.yaml")
    assert (best.train.lr, best.train.momentum, best.train.epochs, best.data.data) == (0.01, 0.88, 2, str(tmp_path))


def fake_train_with_checkpoints(cfg: ExperimentConfig, on_epoch_end=None) -> dict:
    """``fake_train`` leaving the checkpoints the real trainer leaves (and one more)."""
    result = fake_train(cfg, on_epoch_end)
    out = Path(cfg.train.out)
    for name in ("last.pt", "best.pt", "epoch1.pt"):
        (out / name).write_bytes(b"checkpoint")
    (out / "config.json").write_text(json.dumps({"imgsz": cfg.preprocess.imgsz, "batch": cfg.train.batch,
                                                 "workers": cfg.data.workers}))
    return result


def test_trials_keep_only_best_pt_and_log_rounded_values(tmp_path, capsys):
    """Trials kept last.pt (61 MB each); the log printed lr=0.0031622776601683794."""
    out = tmp_path / "tune"
    space = write_space(tmp_path, {"lr": [0.0031622776601683794, 0.01], "momentum": [0.8812345678]}, pruner="none")
    assert run_tune(str(tmp_path), space, out, epochs=2, device="cpu", trainer="test_tune:fake_train_with_checkpoints") == 0
    for trial in ("0", "1"):
        assert sorted(p.name for p in (out / "trials" / trial).glob("*.pt")) == ["best.pt"]
    logged = capsys.readouterr().out
    assert '"lr": 0.003162' in logged and '"momentum": 0.8812' in logged, logged
    numbers = re.findall(r"(?<![\w.])\d+\.\d+(?:e-?\d+)?", "\n".join(line for line in logged.splitlines() if "[worker" in line or
                                                                 line[:1].isdigit()))
    long = [n for n in numbers if len(n.lstrip("0.").replace(".", "").split("e")[0]) > 4 and not n.endswith("s")]
    assert not long, long


def test_cli_tune_takes_imgsz_batch_and_workers_like_train(tmp_path, monkeypatch):
    """`detect tune` lacked train's --imgsz, --batch, --workers; --jobs is the number of parallel trials."""
    import detect.tune.search as T

    got = {}
    monkeypatch.setattr(T, "run_tune", lambda **kw: got.update(kw) or 0)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"train": {"batch": 8, "lr": 0.02}, "preprocess": {"imgsz": 96}}))
    assert main(["tune", "--data", str(tmp_path), "--space", "s.yaml", "--out", str(tmp_path / "o"), "--config", str(base),
                 "--imgsz", "64", "--workers", "0", "--jobs", "2"]) == 0
    cfg = got["config"]
    assert (cfg.preprocess.imgsz, cfg.train.batch, cfg.data.workers, cfg.train.lr, got["workers"]) == (64, 8, 0, 0.02, 2)
    assert main(["tune", "--data", str(tmp_path), "--space", "s.yaml", "--out", str(tmp_path / "o"), "--batch", "3"]) == 0
    assert (got["config"].train.batch, got["config"].data.workers, got["workers"]) == (3, ExperimentConfig().data.workers, 1)
    with pytest.raises(SystemExit):
        main(["tune", "--data", str(tmp_path), "--space", "s.yaml", "--out", "o", "--imgsz", "7"])


def test_tpe_with_ranges_prunes_bad_trials(tmp_path):
    out = tmp_path / "tune"
    space = write_space(tmp_path, {"lr": {"low": 1e-4, "high": 1.0, "log": True}, "momentum": {"low": 0.5, "high": 0.95}},
                   pruner={"type": "median", "min_epochs": 1, "startup_trials": 1})
    rc = run_tune(str(tmp_path), space, out, trials=8, epochs=3, sampler="tpe", device="cpu", trainer=FAKE)
    assert rc == 0
    trials = study_of(out).trials
    assert len(trials) == 8
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["epochs_run"] < 3 for t in pruned)
    assert all(1e-4 <= t.params["lr"] <= 1.0 for t in trials)
    assert (out / "best.yaml").exists()


def test_failing_trial_is_recorded_and_exit_1(tmp_path):
    out = tmp_path / "tune"
    space = write_space(tmp_path, {"lr": [0.1, 0.01]})
    rc = run_tune(str(tmp_path), space, out, epochs=1, device="cpu", trainer="test_tune:broken_train")
    assert rc == 1
    rows = (out / "trials.csv").read_text()
    assert rows.count("FAIL") == 2 and "ValueError: lr 0.1 is bad" in rows
    assert (out / "trials" / "0" / "error.txt").exists() and not (out / "best.yaml").exists()


def test_worker_stops_after_repeated_identical_failures(tmp_path, capsys):
    out = tmp_path / "tune"
    space = write_space(tmp_path, {"lr": [0.1, 0.01, 0.001, 0.0001, 0.00001]})
    assert run_tune(str(tmp_path), space, out, epochs=1, device="cpu", trainer="test_tune:no_data_train") == 1
    assert [t.state.name for t in study_of(out).trials] == ["FAIL"] * 3  # not all 5
    assert "the last 3 trials failed with the same error" in capsys.readouterr().err


def no_data_train(cfg: ExperimentConfig, on_epoch_end=None) -> dict:
    raise FileNotFoundError("data.yaml: no such dataset")


def broken_train(cfg: ExperimentConfig, on_epoch_end=None) -> dict:
    raise ValueError(f"lr {cfg.train.lr} is bad")


def tiny_real_train(cfg: ExperimentConfig, on_epoch_end=None, progress: bool = True) -> dict:
    """The real trainer (loop, CSV, checkpoints, on_epoch_end hook) with the tiny test model/data."""
    from detect.engine.train import train
    from tiny_detector import tiny_data, tiny_eval, tiny_model

    return train(cfg, progress=progress, on_epoch_end=on_epoch_end, data_fn=tiny_data(n=8), model_fn=tiny_model,
                 eval_fn=tiny_eval)


def test_real_trainer_grid_two_workers(tmp_path):
    from tiny_detector import tiny_config

    base = tiny_config(tmp_path / "unused", epochs=2)
    base.save_yaml(tmp_path / "base.yaml")
    space = write_space(tmp_path, {"lr": {"values": [0.05, 0.005], "log": True}, "bn": ["frozen", "train"]}, pruner="none")
    out = tmp_path / "tune"
    rc = run_tune(str(tmp_path), space, out, workers=2, epochs=2, config=str(tmp_path / "base.yaml"), device="cpu",
                  trainer="test_tune:tiny_real_train")
    assert rc == 0
    trials = study_of(out).trials
    assert {t.user_attrs["worker"]["index"] for t in trials} <= {0, 1}
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert os.getpid() not in pids and len(pids) <= 2  # trained in the worker processes
    assert sorted((t.params["lr"], t.params["bn"]) for t in trials) == [
        (0.005, "frozen"), (0.005, "train"), (0.05, "frozen"), (0.05, "train")]
    assert all(t.state.name == "COMPLETE" and sorted(t.intermediate_values) == [1, 2] for t in trials)
    for t in trials:  # each trial's run: the trainer's CSV and config with the trial's parameters
        run = out / "trials" / str(t.number)
        cfg = ExperimentConfig.load_yaml(run / "config.yaml")
        assert (cfg.train.lr, cfg.model.bn, cfg.train.epochs) == (t.params["lr"], t.params["bn"], 2)
        assert (run / "results.csv").exists() and {p.name for p in run.glob("*.pt")} <= {"best.pt"}  # no last.pt
    from detect.tune.report import read_loss_curve

    xs, ys = read_loss_curve(out / "trials" / "0")
    assert xs == [1.0, 2.0] and all(y > 0 for y in ys)
    best = ExperimentConfig.load_yaml(out / "best.yaml")
    top = max(trials, key=lambda t: t.value)
    assert (best.train.lr, best.model.bn, best.preprocess.imgsz) == (top.params["lr"], top.params["bn"], 32)


def test_pruned_trial_stops_the_real_trainer(tmp_path):
    from tiny_detector import tiny_config

    tiny_config(tmp_path / "unused", epochs=4).save_yaml(tmp_path / "base.yaml")
    space = write_space(tmp_path, {"lr": [0.05]}, pruner={"type": "median", "min_epochs": 1, "startup_trials": 0})
    from detect.tune.worker import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner(load_space(space)))
    study.add_trial(optuna.trial.create_trial(  # a finished trial no later one can beat
        params={"lr": 0.05}, distributions={"lr": optuna.distributions.CategoricalDistribution([0.05])},
        value=2.0, intermediate_values={1: 2.0, 2: 2.0, 3: 2.0, 4: 2.0}))
    from detect.tune.worker import EpochReporter

    trial = study.ask()
    reporter = EpochReporter(trial, "voc_ap50", maximize=True)
    cfg = ExperimentConfig.load_yaml(tmp_path / "base.yaml")
    cfg.train.out = str(tmp_path / "run")
    result = tiny_real_train(cfg, on_epoch_end=reporter, progress=False)
    assert reporter.pruned and reporter.epochs == 1 and result["epochs"] == 1


@pytest.mark.slow
def test_cli_tune_real_ssd_on_synth_data(tmp_path, capsys):
    """`detect synth` + `detect tune` through the CLI: a 2x2 grid of real SSD trials (untrained
    EfficientNet-Lite0, 64 px, 1 epoch) with 2 workers on CPU, then `detect train --config best.yaml`
    accepts the result (checked by parsing it with the trainer's own config loader)."""
    from detect.engine.train_cli import config_from_args

    assert main(["synth", str(tmp_path / "data"), "--images", "12", "--size", "96", "--seed", "1",
                 "--splits", "0.67,0.33,0"]) == 0
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"pretrained": "none"}, "data": {"workers": 0}, "preprocess": {"imgsz": 64},
                                    "train": {"batch": 4, "warmup_epochs": 0, "ema": False, "device": "cpu"}}))
    space = write_space(tmp_path, {"lr": {"values": [0.01, 0.001], "log": True}, "momentum": [0.8, 0.9]}, pruner="none")
    out = tmp_path / "tune"
    rc = main(["tune", "--data", str(tmp_path / "data"), "--space", str(space), "--jobs", "2", "--epochs", "1",
               "--out", str(out), "--config", str(base), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    lines = (out / "trials.csv").read_text().splitlines()
    assert len(lines) == 5 and all(",COMPLETE," in line for line in lines[1:])
    args = __import__("argparse").Namespace(config=str(out / "best.yaml"), resume=False)
    cfg = config_from_args(args)
    assert cfg.train.lr in (0.01, 0.001) and cfg.preprocess.imgsz == 64 and cfg.data.data == str(tmp_path / "data")


def test_journal_storage_two_runs(tmp_path):
    """A journal file (what several machines or processes can share) instead of SQLite."""
    out = tmp_path / "tune"
    space = write_space(tmp_path, GRID_2X2, pruner="none")
    journal = f"journal:{tmp_path / 'shared' / 'study.journal'}"
    assert run_tune(str(tmp_path), space, out, trials=2, epochs=1, storage=journal, device="cpu", trainer=FAKE) == 0
    assert run_tune(str(tmp_path), space, out, epochs=1, storage=journal, device="cpu", trainer=FAKE) == 0
    trials = optuna.load_study(study_name="space", storage=open_storage(journal)).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4 and len(runs_of(out)) == 4
    assert not (out / "study.db").exists()


def test_plan_workers_pins_one_gpu_each_or_splits_cores(monkeypatch):
    import detect.tune.search as T

    monkeypatch.setattr(T, "_gpu_ids", lambda device: [0, 1])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plans = T.plan_workers("auto", 3)
    assert [(d, v) for d, v, _ in plans] == [("cuda", "0"), ("cuda", "1"), ("cuda", "0")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # indices refer to the GPUs already visible
    assert [v for _, v, _ in T.plan_workers("auto", 2)] == ["4", "6"]
    assert T.plan_workers("cuda:1", 1)[0][:2] == ("cuda:1", None)
    monkeypatch.setattr(T, "_gpu_ids", lambda device: [])
    cores = len(os.sched_getaffinity(0))
    assert T.plan_workers("cpu", 2) == [("cpu", None, max(1, cores // 2))] * 2


def fake_train_gpu(cfg: ExperimentConfig, on_epoch_end=None) -> dict:
    """Records what a worker sees: its CUDA_VISIBLE_DEVICES, GPU count and the trial's device."""
    import torch

    out = Path(cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.ones(8, device=cfg.train.device).sum().item()
    with open(out.parents[1] / "GPU.log", "a") as f:
        f.write(json.dumps({"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "count": torch.cuda.device_count(),
                            "device": cfg.train.device, "x": x}) + "\n")
    on_epoch_end(0, {"voc_ap50": cfg.train.lr})
    return {}


@pytest.mark.gpu
def test_gpu_workers_each_see_one_gpu(tmp_path):
    import torch

    out = tmp_path / "tune"
    space = write_space(tmp_path, {"lr": [0.1, 0.01, 0.001, 0.0001]}, pruner="none")
    assert run_tune(str(tmp_path), space, out, workers=2, epochs=1, device="auto", trainer="test_tune:fake_train_gpu") == 0
    seen = [json.loads(s) for s in (out / "GPU.log").read_text().splitlines()]
    n = torch.cuda.device_count()
    assert len(seen) == 4 and all(s["count"] == 1 and s["device"] == "cuda" and s["x"] == 8.0 for s in seen)
    names = (os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(map(str, range(n)))).split(",")
    assert {s["visible"] for s in seen} == set(names[: min(n, 2)])
