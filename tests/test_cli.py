"""The entry point: one usage error, mapped to exit code 2 and one message format in ``cli.main``."""

from __future__ import annotations

import pytest

from detect import cli
from detect.errors import UsageError


def test_a_usage_error_raised_anywhere_exits_2_with_one_format(monkeypatch, capsys):
    def handler(args):
        raise UsageError("weights file w.pt not found")

    load = cli._load
    monkeypatch.setattr(cli, "_load", lambda command, function: handler if function == "handler" else load(command, function))
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == "detect demo: error: weights file w.pt not found\n"


def test_argparse_errors_use_the_same_format(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--optimizer", "adam"])
    assert e.value.code == 2 and "detect train: error: argument --optimizer" in capsys.readouterr().err


def test_usage_errors_are_value_errors_for_python_callers():
    from detect.data.proposal_files import ProposalFileError
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

HELP_COMMANDS = ("xml2pkl", "synth", "train", "val", "predict", "demo", "export", "proposals", "tune", "convert")


def test_train_options_come_from_the_config_table():
    from detect.settings import settings
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


def _subparsers() -> dict:
    return cli.build_parser()._subparsers._group_actions[0].choices


def test_every_command_lists_every_option_with_help_and_default():
    """Every option of every command (train, val, predict, export, tune, xml2pkl, convert, ...)
    has one line of help, and --help states the default of each one that has a default."""
    import argparse

    for name, parser in _subparsers().items():
        formatter = parser.formatter_class(prog=parser.prog)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and "\n" not in action.help, (name, action.dest)
            if not action.option_strings or action.nargs == 0 or action.default is None:
                continue  # positionals, flags, options that leave a value alone (their help says what then)
            text = formatter._expand_help(action)
            assert "(default:" in text, f"detect {name} {action.option_strings[0]}: {text}"


@pytest.mark.parametrize("command", list(HELP_COMMANDS))
def test_help_shows_defaults(command, capsys):
    from detect.settings import settings

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default:" in out, out
    if command == "train":
        lr = next(s for s in settings() if s.path == "train.lr")
        assert "--lr LR" in out and f"(default: {lr.default}; must be > 0)" in out
        assert "a checkpoint's own head stays) (default: neither (auto))" in out  # a boolean whose default is auto
    if command in ("val", "predict"):
        assert "--batch BATCH images" in out and "must be >= 1)" in out


# options with a bad value: argparse's usage error (exit 2), one sentence, no traceback
BAD_VALUES = [
    (["train", "--imgsz", "-64"], "argument --imgsz: must be 0 or >= 32, got -64"),
    (["train", "--imgsz", "7"], "argument --imgsz: must be 0 or >= 32, got 7"),
    (["train", "--batch", "0"], "argument --batch: must be >= 1, got 0"),
    (["train", "--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
    (["train", "--workers", "-3"], "argument --workers: must be >= 0, got -3"),
    (["train", "--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["val", "--weights", "w.pt", "--data", "d", "--batch", "0"], "argument --batch: must be >= 1, got 0"),
    (["val", "--weights", "w.pt", "--data", "d", "--workers", "-3"], "argument --workers: must be >= 0, got -3"),
    (["val", "--weights", "w.pt", "--data", "d", "--max-det", "0"], "argument --max-det: must be >= 1, got 0"),
    (["predict", "img.jpg", "--conf", "2"], "argument --conf: must be in [0, 1], got 2"),
    (["predict", "img.jpg", "--iou", "-0.1"], "argument --iou: must be in [0, 1], got -0.1"),
    (["predict", "img.jpg", "--max-det", "0"], "argument --max-det: must be >= 1, got 0"),
    (["predict", "img.jpg", "--batch", "-1"], "argument --batch: must be >= 0, got -1"),
    (["predict", "img.jpg", "--batch", "two"], "argument --batch: expected an integer, got 'two'"),
    (["tune", "--data", "d", "--space", "s", "--out", "o", "--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
    (["tune", "--data", "d", "--space", "s", "--out", "o", "--trials", "0"], "argument --trials: must be >= 1, got 0"),
    (["xml2pkl", "ann", "-o", "c.pkl", "--workers", "-3"], "argument --workers: must be >= 0, got -3"),
    (["proposals", "c.pkl", "--max", "0"], "argument --max: must be >= 1, got 0"),
    (["synth", "out", "--images", "0"], "argument --images: must be >= 1, got 0"),
    (["demo", "--images", "-1"], "argument --images: must be >= 1, got -1"),
    (["convert", "src", "--to", "voc", "-o", "out", "--workers", "-1"], "argument --workers: must be >= 0, got -1"),
]


@pytest.mark.parametrize("argv,message", BAD_VALUES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_VALUES])
def test_bad_option_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"detect {argv[0]}: error: {message}\n" in err and "Traceback" not in err
