"""Fine-tuning from a detector (``detect train --weights``): class rows moved by name, new
classes freshly initialised, every other weight copied, the checkpoint's network rebuilt, and
a real two-step run (train on 8 classes, then add 2) through the CLI. Tiny SSDs, 64 px."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detect.config import ExperimentConfig, ModelConfig, Preprocess, SSDConfig
from detect.engine.checkpoint import load_checkpoint, save_checkpoint
from detect.engine.finetune import load_detector_weights, read_detector, remap_rows
from detect.errors import UsageError
from detect.models.build import build_model


def test_remap_rows_blocks_and_classes():
    # 2 blocks of 4 box rows + 3 logits (bg, a, b) -> 4 logits (bg, b, new, a)
    old = torch.arange(2 * 7, dtype=torch.float32)[:, None].repeat(1, 2)  # (14, 2)
    fresh = torch.full((2 * 8, 2), -1.0)
    out = remap_rows(old, fresh, 4, 1, [0, 2, None, 1], 3)
    rows = out[:, 0].tolist()
    assert rows == [0, 1, 2, 3, 4, 6, -1, 5, 7, 8, 9, 10, 11, 13, -1, 12]
    # Fast R-CNN's box codes: 4 rows per class, no box rows in front
    old = torch.arange(3 * 4, dtype=torch.float32)
    out = remap_rows(old, torch.zeros(2 * 4), 0, 4, [0, 2], 3)
    assert out.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    with pytest.raises(UsageError, match="another architecture"):
        remap_rows(torch.zeros(15), torch.zeros(16), 4, 1, [0, 1, 2, 3], 3)


def _ssd(classes: list[str], seed: int, name: str = "ssd") -> tuple[torch.nn.Module, ExperimentConfig]:
    cfg = ExperimentConfig(model=ModelConfig(name=name, pretrained="none", num_classes=len(classes), context="add",
                                             ssd=SSDConfig(box_classifier=True)),  # its class rows too
                           preprocess=Preprocess(imgsz=64))
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.preprocess)
    with torch.no_grad():  # heads away from their init, so a copied row is told from a fresh one
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval(), cfg


@pytest.mark.parametrize("name", ["ssd", "fast_rcnn"])
def test_classes_move_by_name_and_new_ones_start_fresh(tmp_path, name):
    old_classes = ["cola", "tea", "soap"]
    new_classes = ["soap", "chips", "cola", "jam"]
    old, cfg = _ssd(old_classes, 0, name)
    path = save_checkpoint(tmp_path / "old.pt", config=cfg.to_dict(), classes=old_classes, model=old.state_dict())
    new, _ = _ssd(new_classes, 1, name)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    start = load_detector_weights(new, read_detector(path), new_classes, path)
    assert (start.kept, start.added, start.dropped) == (["soap", "cola"], ["chips", "jam"], ["tea"])
    o, n = old.state_dict(), new.state_dict()
    moved = {0: 0, 1: 3, 3: 1}  # logit index new -> old (0 background)
    head_keys = [k for k in n if n[k].shape != o[k].shape]
    assert head_keys, "class-shaped parameters"
    if name == "ssd":
        assert "box_classifier.fc2.weight" in head_keys  # its rows are object classes only
    for k in n:
        if k in head_keys:
            continue
        assert torch.equal(n[k], o[k]), k
    for k in head_keys:
        per = 4 if "bbox_pred" in k else 1
        prefix = 4 if k.startswith("heads.") else 0
        bg = not k.startswith("box_classifier.")  # every other class block starts with background
        c_old, c_new = len(old_classes) + bg, len(new_classes) + bg
        mv = moved if bg else {j - 1: i - 1 for j, i in moved.items() if j}
        blocks = n[k].shape[0] // (prefix + c_new * per)
        ob = o[k].reshape(blocks, prefix + c_old * per, *o[k].shape[1:])
        nb = n[k].reshape(blocks, prefix + c_new * per, *n[k].shape[1:])
        fb = fresh[k].reshape(blocks, prefix + c_new * per, *n[k].shape[1:])
        assert torch.equal(nb[:, :prefix], ob[:, :prefix])
        for j in range(c_new):
            got = nb[:, prefix + j * per: prefix + (j + 1) * per]
            if j in mv:
                i = mv[j]
                assert torch.equal(got, ob[:, prefix + i * per: prefix + (i + 1) * per]), (k, j)
            else:
                assert torch.equal(got, fb[:, prefix + j * per: prefix + (j + 1) * per]), (k, j)
    if name == "ssd":  # the kept classes' logits are the old model's, box for box
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            lo, _, _ = old.head_outputs(x)
            ln, _, _ = new.head_outputs(x)
        assert torch.allclose(ln[..., [0, 1, 3]], lo[..., [0, 3, 1]], atol=1e-5)


def test_refuses_what_cannot_be_fine_tuned(tmp_path):
    model, cfg = _ssd(["cola", "tea"], 0)
    path = save_checkpoint(tmp_path / "old.pt", config=cfg.to_dict(), classes=["cola", "tea"], model=model.state_dict())
    with pytest.raises(UsageError, match="none of its classes"):
        load_detector_weights(_ssd(["x", "y"], 1)[0], read_detector(path), ["x", "y"], path)
    other = ExperimentConfig(model=ModelConfig(name="ssd", pretrained="none", num_classes=2, context="none"),
                             preprocess=Preprocess(imgsz=64))
    with pytest.raises(UsageError, match="architecture"):
        load_detector_weights(build_model(other.model, other.preprocess), read_detector(path), ["cola", "tea"], path)
    with pytest.raises(UsageError, match="not found"):
        read_detector(tmp_path / "missing.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="checkpoint"):
        read_detector(tmp_path / "notes.txt")


def test_weights_option_rebuilds_the_checkpoints_network(tmp_path):
    """`detect train --weights W`: the model and preprocessing sections come from W (the YAML's and
    the defaults' are replaced), the options given still apply, no ImageNet weights are loaded."""
    from detect.cli import build_parser
    from detect.engine.train_cli import config_from_args

    model, cfg = _ssd(["cola", "tea"], 0)
    cfg.model.ssd.anchor_sizes = None
    path = save_checkpoint(tmp_path / "old.pt", config=cfg.to_dict(), classes=["cola", "tea"], model=model.state_dict())
    args = build_parser("train").parse_args(["train", "--data", "x", "--weights", str(path), "--out", str(tmp_path / "r"),
                                             "--freeze-stride", "16"])
    got = config_from_args(args)
    assert got.preprocess.imgsz == 64 and got.model.context == "add" and got.model.pretrained == "none"
    assert got.model.freeze_stride == 16 and got.train.weights == str(path)
    args = build_parser("train").parse_args(["train", "--data", "x", "--weights", str(tmp_path / "no.pt")])
    with pytest.raises(UsageError, match="not found"):
        config_from_args(args)


@pytest.mark.slow  # two real trainings: about 30 s on 2 idle cores
def test_add_products_through_detect_train(tmp_path, capsys):
    """Train 1 epoch on 8 of the synthetic classes, then `detect train --weights` on all 10:
    the network of the first run is rebuilt (64 px, from its config), 8 classes kept, 2 added."""
    from detect.cli import main
    from detect.data.synth import render_dataset

    data = tmp_path / "shelves"
    render_dataset(data, 12, seed=4, size=96, splits=(0.75, 0.25, 0.0))
    classes = (data / "classes.txt").read_text().split()
    (tmp_path / "eight.txt").write_text("\n".join(classes[:8]) + "\n")
    spec = tmp_path / "eight.yaml"
    spec.write_text(f"root: {data}\nannotations: Annotations\nimages: JPEGImages\nclasses: {tmp_path / 'eight.txt'}\n"
                    f"splits:\n  train: ImageSets/Main/train.txt\n  val: ImageSets/Main/val.txt\n")
    common = ["--epochs", "1", "--batch", "4", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main(["train", "--data", str(spec), "--imgsz", "64", "--pretrained", "none", "--out", str(tmp_path / "a"),
                 *common]) in (0, 1)  # 1: boxes of the two left-out classes are reported as problems
    first = tmp_path / "a" / "best.pt"
    assert load_checkpoint(first)["classes"] == classes[:8]
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--weights", str(first), "--out", str(tmp_path / "b"), *common]) == 0
    said = capsys.readouterr()
    assert "8 classes kept, 2 added" in said.out + said.err
    second = load_checkpoint(tmp_path / "b" / "best.pt")
    assert second["classes"] == classes
    cfg = second["config"]
    assert cfg["preprocess"]["imgsz"] == 64 and cfg["train"]["weights"] == str(first.resolve())
    assert main(["train", "--data", str(data), "--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "c"),
                 *common]) == 2
