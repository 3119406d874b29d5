"""The entry point: one usage error, mapped to exit code 2 and one message format in ``cli.main``."""

from __future__ import annotations

import pytest

from detect import cli
from detect.errors import UsageError


def test_a_usage_error_raised_anywhere_exits_2_with_one_format(monkeypatch, capsys):
    def handler(args):
        raise UsageError("weights file w.pt not found")

    monkeypatch.setattr(cli, "_handler", lambda command: handler)
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == "detect demo: error: weights file w.pt not found\n"


def test_argparse_errors_use_the_same_format(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--optimizer", "adam"])
    assert e.value.code == 2 and "detect train: error: argument --optimizer" in capsys.readouterr().err


def test_usage_errors_are_value_errors_for_python_callers():
    from detect.data.proposals import ProposalFileError
    from detect.data.spec import DatasetError
    from detect.engine.checkpoint import CheckpointError
    from detect.infer.weights import WeightsError
    from detect.infer.sources import SourceError
    from detect.models.backbones import MissingWeightsError
    from detect.tune.space import SpaceError

    for cls in (ProposalFileError, DatasetError, CheckpointError, WeightsError, SourceError, MissingWeightsError, SpaceError):
        assert issubclass(cls, UsageError) and issubclass(cls, ValueError), cls
    assert issubclass(MissingWeightsError, FileNotFoundError)


# ----------------------------------------------------------------------- the option table


def test_train_options_come_from_the_config_table():
    from detect.config import settings
    from detect.options import command_line_settings

    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for s in command_line_settings():
        assert s.cli in flags, s.path
        if s.kind is bool:
            assert "--no-" + s.cli[2:] in flags
    # every spelling `detect train` had before the table still parses
    old = ["--data", "--model", "--backbone", "--pretrained", "--backbone-weights", "--bn", "--conv-head", "--no-conv-head",
           "--imgsz", "--epochs", "--batch", "--optimizer", "--lr", "--momentum", "--weight-decay", "--workers", "--seed",
           "--out", "--device", "--resume", "--config", "--proposals", "--proposal-file", "--scheduler", "--warmup-epochs",
           "--clip-grad", "--augment", "--eval-every", "--ema", "--no-ema", "--amp", "--no-amp", "--channels-last",
           "--no-channels-last", "--no-progress"]
    assert not set(old) - flags
    choices = {s.path: s.choices for s in settings() if s.choices}
    assert choices["train.optimizer"] == ("sgd", "adamw") and choices["model.bn"] == ("frozen", "train", "sync")


def test_options_apply_onto_the_config_and_check_their_rules(capsys):
    from detect.config import ExperimentConfig
    from detect.options import apply_config_options

    args = cli.build_parser().parse_args(["train", "--weight-decay", "0.001", "--no-ema", "--model", "fast_rcnn",
                                          "--imgsz", "256", "--workers", "0"])
    cfg = ExperimentConfig()
    given = apply_config_options(cfg, args)
    assert (cfg.train.weight_decay, cfg.train.ema, cfg.model.name, cfg.preprocess.imgsz, cfg.data.workers) == (
        0.001, False, "fast_rcnn", 256, 0)
    assert set(given) == {"train.weight_decay", "train.ema", "model.name", "preprocess.imgsz", "data.workers"}
    assert cfg.train.lr == ExperimentConfig().train.lr  # an option not given leaves the value alone
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--lr", "0"])
    assert "argument --lr: must be > 0, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["xml2pkl", "synth", "train", "val", "predict", "demo", "export", "proposals", "tune"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default:" in out, out
    if command == "train":
        assert "--lr LR" in out and "(default: 0.01; must be > 0)" in " ".join(out.split())
