"""The second look: crops around boxes (detect/data/crops.py), the crop classifier
(detect/models/crop_classifier.py), its training (detect train-classifier) and the rescoring in
the Predictor (detect/infer/second_look.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detect.cli import main
from detect.config import Preprocess
from detect.data.crops import CropDataset, crop_square, crops_of, square_windows
from detect.data.letterbox import PAD_VALUE
from detect.engine.checkpoint import CheckpointError, load_model, save_checkpoint
from detect.errors import UsageError
from detect.infer.predict import Predictor
from detect.infer.second_look import SecondLook
from detect.models.crop_classifier import KIND, CropClassifier, CropClassifierConfig
from detect.structures import Detections, ImageRecord


def _classifier_file(path: Path, classes: list[str], favour: str, size: int = 32) -> Path:
    """A crop classifier that says ``favour`` for every crop (its last layer: zero weights, one bias)."""
    cfg = CropClassifierConfig(size=size, num_classes=len(classes))
    torch.manual_seed(0)
    model = CropClassifier(cfg, pretrained="none")
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(-6.0)
        model.fc.bias[classes.index(favour)] = 6.0
    save_checkpoint(path, kind=KIND, config=cfg.to_dict(), classes=classes, model=model.state_dict())
    return path


# ----------------------------------------------------------------------------- crop geometry
def test_square_window_is_centred_on_the_box_with_its_longer_side():
    w = square_windows(np.array([[10, 20, 30, 60]]), expand=1.0)
    assert w.tolist() == [[0.0, 20.0, 40.0]]  # side 40 (the height), centre (20, 40)
    w = square_windows(np.array([[10, 20, 30, 60]]), expand=1.5, shift=np.array([[0.5, -0.25]]))
    np.testing.assert_allclose(w, [[0.0, 0.0, 60.0]])  # centre (30, 30): moved by 0.5 * 20 and -0.25 * 40
    assert square_windows(np.array([[5, 5, 5, 5]]))[0, 2] == 1.0  # an empty box still gets a pixel


def test_crop_is_the_window_resampled_and_grey_outside_the_image():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:30, 20:40] = (200, 100, 50)
    crop = crop_square(image, (20, 10, 20), 20)  # the coloured block exactly, at its own scale
    assert (crop == (200, 100, 50)).all()
    edge = crops_of(image, np.array([[50, 0, 70, 20]], np.float32), 20)[0]  # half of it beyond the right edge
    assert edge.shape == (20, 20, 3)
    assert (edge[:, 12:] == PAD_VALUE).all() and (edge[:, :8] == 0).all()


def _records(tmp_path: Path, colours: list[tuple[int, int, int]], labels: list[int]) -> list[ImageRecord]:
    import cv2

    records = []
    for i, (colour, label) in enumerate(zip(colours, labels)):
        image = np.full((64, 64, 3), 30 + 100 * i, np.uint8)  # each photo its own background
        image[16:48, 16:48] = colour[::-1]  # BGR on disk
        f = tmp_path / f"im{i}.png"
        cv2.imwrite(str(f), image)
        records.append(ImageRecord(image=str(f), width=64, height=64,
                                   boxes=np.array([[16, 16, 48, 48], [0, 0, 8, 8]], np.float32),
                                   labels=np.array([label, label], np.int64), difficult=np.array([False, True])))
    return records


def test_crop_dataset_skips_difficult_boxes_and_keeps_the_box_its_own(tmp_path):
    records = _records(tmp_path, [(255, 0, 0), (0, 0, 255)], [0, 1])
    ds = CropDataset(records, 24, train=False)
    assert len(ds) == 2 and ds.labels().tolist() == [0, 1]  # the difficult boxes are left out
    crop, label = ds[0]
    assert crop.dtype == torch.uint8 and crop.shape == (24, 24, 3) and label == 0
    assert (crop.numpy() == (255, 0, 0)).all()  # RGB, the box exactly (expand 1.0)
    # training: foreign surroundings every time; the box's own centre stays its own colour
    train = CropDataset(records, 24, train=True, scale=(1.6, 1.6), shift=0.0, foreign=1.0, seed=1)
    corners = set()
    for _ in range(12):
        crop, _ = train[0]
        c = crop.numpy().astype(int)
        assert c[12, 12, 0] > 150 and c[12, 12, 2] < 60  # red centre
        corners.add("light" if c[0, 0].mean() > 70 else "dark")  # photo 1's background (130) or photo 0's (30)
    assert corners == {"light", "dark"}  # the surroundings came from the other photo too


# ----------------------------------------------------------------------------- the network
def test_crop_classifier_reads_uint8_crops():
    model = CropClassifier(CropClassifierConfig(size=32, num_classes=3), pretrained="none").eval()
    out = model(torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="at least one class"):
        CropClassifier(CropClassifierConfig(num_classes=0), pretrained="none")


# ----------------------------------------------------------------------------- rescoring
def test_rescoring_fuses_the_crop_probability_and_drops_what_falls_under_conf(tmp_path):
    path = _classifier_file(tmp_path / "cls.pt", ["a", "b"], favour="b")
    look = SecondLook(path, ["a", "b"], torch.device("cpu"))
    box = [4.0, 4.0, 28.0, 28.0]
    det = Detections(np.array([box, box, [30, 30, 50, 60]], np.float32), np.array([0.9, 0.4, 0.5], np.float32),
                     np.array([0, 1, 1]), ["a", "b"])
    seen = []
    real = look.probabilities
    look.probabilities = lambda image, boxes: (seen.append(len(boxes)), real(image, boxes))[1]
    (out,) = look.rescore([np.zeros((64, 64, 3), np.uint8)], [det], conf=0.1)
    assert seen == [2]  # one crop per distinct box, not per (box, class)
    assert out.labels.tolist() == [1, 1]  # the "a" detection fell under conf; "b" ones lead now
    np.testing.assert_allclose(out.scores, np.sqrt(np.array([0.5, 0.4]) * (1 - 1e-5)), rtol=1e-4)


def test_classifier_classes_are_matched_by_name(tmp_path):
    path = _classifier_file(tmp_path / "cls.pt", ["b", "c", "a"], favour="a")  # another order, one class more
    look = SecondLook(path, ["a", "b"], torch.device("cpu"))
    p = look.probabilities(np.zeros((40, 40, 3), np.uint8), np.array([[0, 0, 20, 20]], np.float32))
    assert p.shape == (1, 2) and p[0, 0] > 0.99  # column 0 is the detector's "a"
    with pytest.raises(UsageError, match=r"does not know the detector's classes \['d'\]"):
        SecondLook(path, ["a", "d"], torch.device("cpu"))


def test_a_detector_and_a_classifier_each_refused_in_the_other_place(tmp_path):
    from _predict_helpers import confident_ssd_checkpoint

    detector = confident_ssd_checkpoint(tmp_path / "det.pt")
    with pytest.raises(UsageError, match="is a detector's checkpoint, not a crop classifier"):
        SecondLook(detector, ["a"], torch.device("cpu"))
    cls = _classifier_file(tmp_path / "cls.pt", ["a", "b"], favour="a")
    with pytest.raises(CheckpointError, match="is a crop classifier .* pass it as --classifier"):
        load_model(cls)


class OneBox(torch.nn.Module):
    """Eval-mode detector: one box, class "a" at 0.8 and class "b" at 0.6, in every image."""

    score_thresh, nms_thresh, max_det = 0.01, 0.45, 100

    def forward(self, images):
        box = torch.tensor([[8.0, 8.0, 40.0, 40.0]] * 2)
        return [{"boxes": box, "scores": torch.tensor([0.8, 0.6]), "labels": torch.tensor([0, 1])} for _ in images]


def test_predictor_takes_a_second_look(tmp_path):
    path = _classifier_file(tmp_path / "cls.pt", ["a", "b"], favour="b")
    image = np.full((64, 64, 3), 90, np.uint8)
    plain = Predictor.from_model(OneBox(), Preprocess(imgsz=64), ["a", "b"], conf=0.3, fuse=False, backend="torch")
    looked = Predictor.from_model(OneBox(), Preprocess(imgsz=64), ["a", "b"], conf=0.3, fuse=False, backend="torch",
                                  classifier=path)
    assert plain.predict([image])[0].labels.tolist() == [0, 1]
    (d,) = looked.predict([image])
    assert d.labels.tolist() == [1] and d.scores[0] == pytest.approx(np.sqrt(0.6), rel=1e-3)


# ----------------------------------------------------------------------------- training, end to end
def test_train_classifier_command_writes_a_classifier_the_predictor_reads(tmp_path, capsys):
    data = tmp_path / "shelves"
    assert main(["synth", str(data), "--images", "6", "--size", "96", "--seed", "2"]) == 0
    out = tmp_path / "cls"
    assert main(["train-classifier", "--data", str(data), "--epochs", "1", "--size", "32", "--batch", "16",
                 "--pretrained", "none", "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] >= 1 and 0.0 <= summary["best_val_accuracy"] <= 1.0
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    from detect.data.spec import resolve_data

    classes = list(resolve_data(str(data), "train").classes)
    look = SecondLook(out / "best.pt", classes, torch.device("cpu"))
    p = look.probabilities(np.zeros((96, 96, 3), np.uint8), np.array([[10, 10, 50, 40]], np.float32))
    assert p.shape == (1, len(classes)) and abs(float(p.sum()) - 1.0) < 1e-4
    # without a val split best.pt is the last epoch, and the summary says there was no score
    assert main(["train-classifier", "--data", str(data), "--epochs", "1", "--size", "32", "--batch", "16",
                 "--pretrained", "none", "--out", str(tmp_path / "noval"), "--device", "cpu", "--val-split", ""]) == 0
    assert json.loads((tmp_path / "noval" / "summary.json").read_text())["best_val_accuracy"] is None
    assert (tmp_path / "noval" / "best.pt").is_file()
    assert "no val boxes" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "give one budget"),
    (["--epochs", "1", "--time", "2"], "give one budget"),
    (["--epochs", "1", "--size", "16"], "--size must be >= 32"),
])
def test_train_classifier_refuses_bad_options(tmp_path, argv, message):
    with pytest.raises(UsageError, match=message):
        from detect.engine.train_crops_cli import add_train_classifier_options, cmd_train_classifier
        import argparse

        p = argparse.ArgumentParser()
        add_train_classifier_options(p)
        cmd_train_classifier(p.parse_args(["--data", str(tmp_path / "none"), *argv]))
