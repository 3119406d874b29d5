"""Issue 24: one rule for every output path of every command (detect.utils.check_output_path /
check_output_folder, and atomic_write as the last line of defence): an output is never an input,
a device, a FIFO, or a file where a folder is expected; refusal is exit 2 naming the path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dataset_fixtures import image, text, voc_xml
from detect.cli import main
from detect.utils import OutputPathError, atomic_write_text, check_output_folder


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def voc_folder(root: Path, classes=("cola", "可口可乐", "お茶")) -> Path:
    """A VOC folder with classes.txt and ImageSets/Main/{train,val}.txt."""
    for k, stem in enumerate(("a", "b", "c")):
        image(root / "JPEGImages" / f"{stem}.jpg", seed=k)
        text(root / "Annotations" / f"{stem}.xml", voc_xml(f"{stem}.jpg", [(classes[k % len(classes)], (2, 2, 30, 30))]))
    text(root / "classes.txt", "\n".join(classes) + "\n")
    text(root / "ImageSets" / "Main" / "train.txt", "a\nb\n")
    text(root / "ImageSets" / "Main" / "val.txt", "c\n")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from _predict_helpers import confident_ssd_checkpoint

    return confident_ssd_checkpoint(tmp_path_factory.mktemp("w") / "w.pt")


def test_atomic_write_never_replaces_a_device_or_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(OutputPathError, match="FIFO"):
        atomic_write_text(tmp_path / "fifo.json", "x")
    os.symlink("/dev/null", tmp_path / "null.json")
    with pytest.raises(OutputPathError, match="character device"):
        atomic_write_text(tmp_path / "null.json", "x")
    assert os.path.islink(tmp_path / "null.json")
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputPathError, match="folder"):
        atomic_write_text(tmp_path / "d", "x")


def test_output_folder_rule(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="is a regular file, not a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(OutputPathError, match="character device, not a folder"):
        check_output_folder("/dev/null")
    with pytest.raises(OutputPathError, match="not a folder"):
        check_output_folder(tmp_path / "f" / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("x")
    with pytest.raises(OutputPathError, match="config.yaml is one of the inputs"):
        check_output_folder(tmp_path / "run", ["config.yaml", "last.pt"], [tmp_path / "run" / "config.yaml"])
    assert check_output_folder(tmp_path / "new" / "run", ["a"]) == tmp_path / "new" / "run"


@pytest.mark.parametrize("target", ["weights", "classes.txt", "ImageSets/Main/val.txt", "/dev/null"])
def test_val_json_never_replaces_an_input_or_device(target, weights, tmp_path, capsys):
    """Item 1: `val --json w.pt` made the checkpoint the metrics JSON (exit 0); the same for the
    dataset's val.txt and classes.txt; `--json /dev/null` as root replaced the device."""
    ds = voc_folder(tmp_path / "ds")
    path = weights if target == "weights" else Path(target) if target.startswith("/") else ds / target
    before = None if target.startswith("/dev") else _digest(path)
    code = main(["val", "--weights", str(weights), "--data", str(ds), "--split", "val", "--json", str(path),
                 "--device", "cpu", "--workers", "0", "--plots", str(tmp_path / "plots")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--json {path}" in err and "Traceback" not in err
    if before is not None:
        assert _digest(path) == before
    else:
        assert not Path(path).is_file()


def test_val_plots_existing_file_is_a_usage_error(weights, tmp_path, capsys):
    """Item 13: `val --plots EXISTING_FILE` ended in a FileExistsError traceback."""
    ds = voc_folder(tmp_path / "ds")
    (tmp_path / "p").write_text("mine")
    code = main(["val", "--weights", str(weights), "--data", str(ds), "--split", "val", "--device", "cpu",
                 "--workers", "0", "--plots", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and f"--plots folder {tmp_path / 'p'} is a regular file, not a folder" in err
    assert (tmp_path / "p").read_text() == "mine"


@pytest.mark.parametrize("out", ["file", "/dev/null"])
def test_train_out_that_is_not_a_folder_is_a_usage_error(out, tmp_path, capsys):
    """Item 13: `train --out EXISTING_FILE` or `--out /dev/null`: NotADirectoryError traceback."""
    ds = voc_folder(tmp_path / "ds")
    path = tmp_path / "file" if out == "file" else Path(out)
    if out == "file":
        path.write_text("mine")
    code = main(["train", "--data", str(ds), "--out", str(path), "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and f"--out folder {path} is a" in err and "not a folder" in err, err
    if out == "file":
        assert path.read_text() == "mine"


def test_train_never_writes_its_config_over_the_dataset_yaml(tmp_path, capsys):
    """Item 3: `train --data RUN/config.yaml --out RUN` replaced the dataset YAML with the run's config."""
    ds = voc_folder(tmp_path / "ds")
    run = tmp_path / "run"
    yaml_file = text(run / "config.yaml", f"root: {ds}\nannotations: Annotations\nimages: JPEGImages\n"
                                          "splits:\n  train: ImageSets/Main/train.txt\n  val: ImageSets/Main/val.txt\n")
    before = _digest(yaml_file)
    code = main(["train", "--data", str(yaml_file), "--out", str(run), "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "config.yaml is one of the inputs" in err, err
    assert _digest(yaml_file) == before


def test_tune_out_that_is_a_file_or_holds_the_space_file_is_a_usage_error(tmp_path, capsys):
    pytest.importorskip("optuna")
    ds = voc_folder(tmp_path / "ds")
    space = tmp_path / "out" / "best.yaml"
    space.parent.mkdir()
    space.write_text("lr: {values: [0.1, 0.01]}\n")
    (tmp_path / "file").write_text("mine")
    for out, message in ((tmp_path / "file", "is a regular file, not a folder"), (tmp_path / "out", "best.yaml is one of the inputs")):
        code = main(["tune", "--data", str(ds), "--space", str(space), "--out", str(out), "--epochs", "1"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
    assert (tmp_path / "file").read_text() == "mine" and space.read_text() == "lr: {values: [0.1, 0.01]}\n"
