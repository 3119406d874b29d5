"""The mosaic stage of ``detect train`` (detect/engine/stages.py): when it is on, how a run is
split (time, epochs, folders, weights, --mosaic), and ``detect train`` running both stages, and
a resumed first stage followed by its second. Tiny model and data (tiny_detector)."""

from __future__ import annotations

import copy
import csv
from types import SimpleNamespace

import numpy as np
import pytest
from tiny_detector import tiny_data, tiny_eval, tiny_model

from detect.cli import build_parser, main
from detect.config import ExperimentConfig
from detect.engine import stages as S
from detect.engine import train as T
from detect.engine import train_cli as TC
from detect.engine.checkpoint import load_checkpoint


def _records(kinds_per_photo: list[int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(labels=np.arange(k) % 25) for k in kinds_per_photo]


def _cfg(out="runs/x", **train) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.train.out = str(out)
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_one_kind_share_counts_photos_with_boxes_only():
    recs = _records([1, 1, 1, 2, 0])
    recs.append(SimpleNamespace(labels=np.array([3, 3, 3])))  # three boxes of one kind
    assert S.one_kind_share(recs) == pytest.approx(4 / 5)
    assert S.one_kind_share(_records([0, 0])) == 0.0


def test_auto_is_on_for_one_kind_photos_and_off_for_shelves_and_when_told():
    one_kind, shelves = _records([1] * 95 + [2] * 5), _records([1] * 50 + [6] * 50)
    cfg = _cfg(time=60)
    assert S.wants_stage(cfg, one_kind)[0] and "95%" in S.wants_stage(cfg, one_kind)[1]
    assert not S.wants_stage(cfg, shelves)[0]
    assert not S.wants_stage(cfg, None)[0]  # records unknown: no stage
    for change in ({"mosaic_stage": "off"}, {"mosaic": 0.5}, {"proposal_file": "p.npz"}, {"augment": 0.0}):
        c = copy.deepcopy(cfg)
        for k, v in change.items():
            setattr(c.data, k, v)
        assert not S.wants_stage(c, one_kind)[0], change
    c = _cfg(time=60, resume=True)
    assert not S.wants_stage(c, one_kind)[0]
    assert not S.wants_stage(_cfg(epochs=2), one_kind)[0]  # too short to split
    c = _cfg(time=60)
    c.data.mosaic_stage = "on"
    assert S.wants_stage(c, shelves) == (True, "--mosaic-stage on")


def test_split_time_and_epochs():
    first, second = S.split(_cfg("runs/g", time=60))
    assert (first.train.time, second.train.time) == (40, 20)
    assert first.train.out.endswith("runs/g/stage1") and second.train.out == "runs/g"
    assert (first.data.mosaic, second.data.mosaic) == (0.0, S.MOSAIC)
    assert first.train.weights is second.train.weights is None  # the second's: the first's best.pt, once it exists
    assert S.stage_weights("runs/g/stage1").name == "last.pt"  # no best.pt (no val split)
    assert first.data.mosaic_stage == second.data.mosaic_stage == "off"  # each run alone on --resume
    assert (first.train.lr, second.train.lr) == (1e-3, pytest.approx(1e-3 * S.LR_SCALE))  # a fine-tune's rate
    assert (first.data.val_sheets, second.data.val_sheets) == (0, S.SHEETS)  # its end scored on sheets too
    assert (first.train.eval_every, second.train.eval_every) == (1, 30)  # the second: at its end only (30: --epochs' cap)
    first, second = S.split(_cfg("runs/g", epochs=30))
    assert (first.train.epochs, second.train.epochs, first.train.time, second.train.time) == (20, 10, 0, 0)
    assert second.train.eval_every == 10
    c = _cfg("runs/g", epochs=30)
    c.data.mosaic_stage, c.data.mosaic = "on", 0.25
    assert S.split(c)[1].data.mosaic == 0.25  # a --mosaic given is the stage's
    c.data.mosaic_centre = 0.5
    first, second = S.split(c)
    assert (first.data.mosaic_centre, second.data.mosaic_centre) == (0.0, 0.5)  # the stage's mosaics, none before it


def _args(tmp_path, *more):
    data = tmp_path / "data.yaml"
    data.write_text("train: a\n")  # never read: the tiny data stand in
    return build_parser().parse_args(["train", "--no-progress", "--data", str(data), "--out", str(tmp_path / "run"),
                                      "--epochs", "3", "--imgsz", "32", "--batch", "4", "--workers", "0",
                                      "--device", "cpu", *more])


@pytest.fixture
def tiny_train(monkeypatch):
    """``detect train`` over the tiny model and data, each run's config kept."""
    seen = []

    def run(cfg, progress, checkpoint, collect_fn, data_fn=None):
        seen.append(copy.deepcopy(cfg))
        return T.train(cfg, progress=False, checkpoint=checkpoint, data_fn=tiny_data(), model_fn=tiny_model,
                       eval_fn=tiny_eval)

    monkeypatch.setattr(TC, "train", run)
    monkeypatch.setattr(TC, "load_data", lambda cfg: SimpleNamespace(train_records=_records([1] * 10)))  # one kind per photo
    return seen


def test_detect_train_runs_both_stages_on_one_kind_photos(tmp_path, tiny_train, capsys):
    assert TC.cmd_train(_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "mosaic stage (100% of the train photos hold one product kind)" in out
    assert "--val-sheets 3 and the SSD box classifier added (--no-box-classifier: without)" in out
    first, second = tiny_train
    run = tmp_path / "run"
    assert (first.train.out, first.train.epochs, first.data.mosaic) == (str(run / "stage1"), 2, 0.0)
    assert (second.train.out, second.train.epochs, second.data.mosaic) == (str(run), 1, 0.5)
    assert (first.model.ssd.box_classifier, second.model.ssd.box_classifier) == (None, True)  # the stage adds it
    assert second.train.weights == str(run / "stage1" / "best.pt")
    assert (run / "stage1" / "best.pt").is_file() and (run / "best.pt").is_file()
    stored = load_checkpoint(run / "last.pt")["config"]
    assert (stored["data"]["mosaic"], stored["data"]["val_sheets"]) == (0.5, 3)
    assert stored["train"]["lr"] == pytest.approx(first.train.lr * S.LR_SCALE)


def test_no_box_classifier_keeps_the_stage_without_the_head(tmp_path, tiny_train):
    assert TC.cmd_train(_args(tmp_path, "--no-box-classifier")) == 0
    assert [c.model.ssd.box_classifier for c in tiny_train] == [False, False]
    assert load_checkpoint(tmp_path / "run" / "stage1" / "last.pt")["config"]["model"]["ssd"]["box_classifier"] is False


def test_off_trains_one_run(tmp_path, tiny_train):
    assert TC.cmd_train(_args(tmp_path, "--mosaic-stage", "off")) == 0
    assert [c.train.out for c in tiny_train] == [str(tmp_path / "run")]
    assert not (tmp_path / "run" / "stage1").exists()


def test_a_run_stopped_in_its_first_stage_resumes_it_then_runs_the_second(tmp_path, tiny_train, monkeypatch):
    calls = []
    real = TC.train

    def stopped_after_stage1_epoch1(cfg, **kw):
        calls.append(cfg.train.out)
        if len(calls) == 1:  # the first stage: killed after its first epoch
            kw["checkpoint"] = None
            return T.train(cfg, progress=False, data_fn=tiny_data(), model_fn=tiny_model, eval_fn=tiny_eval,
                           on_epoch_end=lambda e, row: True)
        return real(cfg, **kw)

    monkeypatch.setattr(TC, "train", stopped_after_stage1_epoch1)
    assert TC.cmd_train(_args(tmp_path)) == 0
    run = tmp_path / "run"
    (run / "last.pt").unlink()  # as if killed before the second stage wrote anything
    (run / "best.pt").unlink()
    for name in ("config.yaml", "results.csv"):
        (run / name).unlink(missing_ok=True)
    assert load_checkpoint(run / "stage1" / "last.pt")["epoch"] == 1
    tiny_train.clear()
    assert main(["train", "--no-progress", "--out", str(run), "--resume"]) == 0
    first, second = tiny_train
    assert first.train.resume and first.train.out == str(run / "stage1")
    assert load_checkpoint(run / "stage1" / "last.pt")["epoch"] == 2  # the first stage finished its plan
    assert (second.train.out, second.train.epochs, second.data.mosaic, second.train.resume) == (str(run), 1, 0.5, False)
    assert second.model.ssd.box_classifier is True  # planned as the uninterrupted run's second stage
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_the_mosaic_stage_is_scored_at_its_end_only(tmp_path, tiny_train):
    assert TC.cmd_train(_args(tmp_path, "--epochs", "6")) == 0  # 4 + 2 epochs
    run = tmp_path / "run"

    def scored(folder):
        with open(folder / "results.csv", newline="") as f:
            return [row.get("voc_ap50") not in (None, "", "nan") for row in csv.DictReader(f)]

    assert scored(run / "stage1") == [True] * 4
    assert scored(run) == [False, True]  # its best.pt: its end
    assert (run / "best.pt").is_file()
