"""Search-space files for ``detect tune``: the shipped examples parse, parameters land on the
right config fields, and every mistake gives an error naming the file and the parameter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detect.cli import main
from detect.config import ExperimentConfig, TrainConfig
from detect.tune.space import SpaceError, load_space, parse_space

REPO = Path(__file__).resolve().parents[1]


def _space(tmp_path: Path, params: dict, **top) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({"params": params, **top}))
    return p


def test_example_space_parses():
    sp = load_space(REPO / "datasets" / "space_example.yaml")
    assert sp.grid_space() == {"lr": [0.1, 0.01, 0.001], "momentum": [0.8, 0.88, 0.9]}
    assert sp.grid_size() == 9 and sp.params[0].log_scale and not sp.params[1].log_scale
    wide = load_space(REPO / "datasets" / "space_wide_example.yaml")
    assert not wide.griddable
    lr = next(p for p in wide.params if p.name == "lr")
    assert lr.grid() == [0.0001, 0.001, 0.01, 0.1]


def test_space_maps_onto_config():
    sp = parse_space({"params": {"lr": [0.1], "beta2": [0.99], "bn": {"choice": ["train"]}, "imgsz": [128],
                                 "augment": {"low": "0", "high": "1e-0"}, "model.nms_thresh": [0.5]}})
    cfg = sp.apply(ExperimentConfig(), {"lr": 0.1, "beta2": 0.99, "bn": "train", "imgsz": 128, "augment": 0.5,
                                        "model.nms_thresh": 0.5})
    assert (cfg.train.lr, cfg.train.beta2, cfg.model.bn, cfg.preprocess.imgsz, cfg.data.augment, cfg.model.nms_thresh) == (
        0.1, 0.99, "train", 128, 0.5, 0.5)
    assert ExperimentConfig().train.lr == TrainConfig().lr != 0.1  # apply copies


@pytest.mark.parametrize(
    "params, words",
    [
        ({"lrr": [0.1]}, ["'lrr'", "unknown parameter"]),
        ({"lr": {"low": 0, "high": 0.1, "log": True}}, ["'lr'", "low: train.lr must be > 0"]),
        ({"weight_decay": {"low": 0, "high": 0.1, "log": True}}, ["'weight_decay'", "log range needs low > 0"]),
        ({"lr": {"low": 0.1, "high": 0.01}}, ["'lr'", "low must be < high"]),
        ({"momentum": [0.9, 1.5]}, ["'momentum'", "in [0, 1)"]),
        ({"batch": [8, 12.5]}, ["'batch'", "integer"]),
        ({"bn": ["frozen", "half"]}, ["'bn'", "'half'", "frozen"]),
        ({"lr": {"values": []}}, ["'lr'", "non-empty"]),
        ({"lr": {"values": [0.1], "low": 0.01}}, ["'lr'", "exactly one"]),
        ({"lr": {"vals": [0.1]}}, ["'lr'", "unknown key", "vals"]),
        ({"optimizer": {"low": 1, "high": 2}}, ["'optimizer'", "range"]),
        ({"momentum": [0.9], "beta1": [0.8]}, ["'momentum'", "'beta1'", "train.momentum"]),
        ({"model.anchor_sizes": [1]}, ["'model.anchor_sizes'", "cannot be searched"]),
    ],
)
def test_bad_space_names_file_and_parameter(tmp_path, params, words):
    path = _space(tmp_path, params)
    with pytest.raises(SpaceError) as e:
        load_space(path)
    msg = str(e.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg


def test_grid_sampler_needs_grid_points(tmp_path):
    path = _space(tmp_path, {"lr": {"low": 1e-3, "high": 0.1, "log": True}}, sampler="grid")
    with pytest.raises(SpaceError, match=r"'lr'.*num"):
        load_space(path)


def test_cli_bad_space_exit_2(tmp_path, capsys):
    path = _space(tmp_path, {"weight_decay": {"low": -1, "high": 0.1}})
    rc = main(["tune", "--data", str(tmp_path), "--space", str(path), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "'weight_decay'" in err and str(path) in err and ">= 0" in err
    assert main(["tune", "--data", str(tmp_path), "--space", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_parameter_names_come_from_the_config_table():
    from detect.settings import settings
    from detect.tune.space import resolve_target

    assert resolve_target("beta1").path == resolve_target("momentum").path == "train.momentum"  # a declared alias
    assert resolve_target("weight-decay").path == "train.weight_decay"
    for s in settings():  # every field by its path; its rule and choices travel with it
        assert resolve_target(s.path) is s
    sp = parse_space({"params": {"model.box_loss": ["giou", "smooth_l1"], "ema_decay": [0.999]}})
    assert [p.target for p in sp.params] == ["model.ssd.box_loss", "train.ema_decay"]  # the path it moved to
    with pytest.raises(SpaceError, match="use one of"):
        parse_space({"params": {"model.box_loss": ["iou"]}})
    assert resolve_target("model.roi_op").path == "model.fast_rcnn.roi_op"  # a path it moved from
    with pytest.raises(SpaceError, match="use one of"):  # model.name's choices: the table of detectors
        parse_space({"params": {"model.name": ["ssd", "yolo"]}})
