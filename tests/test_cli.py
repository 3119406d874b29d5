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
    from detect.infer.predict import WeightsError
    from detect.infer.sources import SourceError
    from detect.models.backbones import MissingWeightsError
    from detect.tune.space import SpaceError

    for cls in (ProposalFileError, DatasetError, CheckpointError, WeightsError, SourceError, MissingWeightsError, SpaceError):
        assert issubclass(cls, UsageError) and issubclass(cls, ValueError), cls
    assert issubclass(MissingWeightsError, FileNotFoundError)
