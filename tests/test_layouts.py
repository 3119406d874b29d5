"""--data auto-detection: each layout through resolve_data, Roboflow/CVAT VOC split folders
(valid/ and val/), split-name aliases, and the one-sentence error for anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import coco2017, image, roboflow_coco, roboflow_yolo, text, ultralytics_yolo, voc_split_folders

from detect.data.formats.layouts import canonical_split, pick_split
from detect.data.formats.table import detect_layout
from detect.data.spec import DatasetError, open_data, resolve_data
from detect.data.synth import render_dataset


@pytest.fixture(autouse=True)
def _isolated_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)


def test_every_layout_is_recognised(tmp_path):
    render_dataset(tmp_path / "voc", 3, seed=1, size=64, progress=False)
    y = roboflow_yolo(tmp_path / "rf")
    u = ultralytics_yolo(tmp_path / "u")
    coco2017(tmp_path / "coco")
    roboflow_coco(tmp_path / "rfcoco")
    voc_split_folders(tmp_path / "vs")
    ours = text(tmp_path / "mine.yaml", "root: voc\nannotations: Annotations\n")
    cache = Path(resolve_data(tmp_path / "voc", "all").path)
    expected = {
        tmp_path / "voc": "voc", tmp_path / "rf": "yolo", y: "yolo", u: "yolo", tmp_path / "coco": "coco",
        tmp_path / "coco/annotations/instances_val2017.json": "coco", tmp_path / "rfcoco": "coco",
        tmp_path / "vs": "voc_splits", ours: "dataset_yaml", cache: "cache",
        tmp_path / "vs/train": None, tmp_path / "nowhere": None,
    }
    assert {p: detect_layout(p) for p in expected} == expected
    assert open_data(tmp_path / "rf").splits == ["train", "val"]


@pytest.mark.parametrize("val_folder", ["valid", "val"])
def test_voc_split_folders(tmp_path, val_folder):
    root = voc_split_folders(tmp_path / "vs", val_folder)
    train = resolve_data(root, "train")
    val = resolve_data(root, "val")
    test = resolve_data(root, "test")
    assert train.classes == val.classes == test.classes == ["cup", "jar", "tea"]  # one list for every split
    assert [Path(r.image).relative_to(root).as_posix() for r in train.records] == ["train/img_jpg.rf.0a1b.jpg"]
    assert [Path(r.image).relative_to(root).as_posix() for r in val.records] == [f"{val_folder}/img_jpg.rf.0a1b.jpg"]
    np.testing.assert_array_equal(val.records[0].boxes, [[4, 4, 30, 30]])
    assert val.records[0].labels.tolist() == [2]
    assert [(Path(p.file).name, p.kind) for p in train.problems] == [("lost.xml", "missing_image")]
    assert not val.problems and len(resolve_data(root, "valid")) == 1
    assert Path(train.path) == root / ".cache" / "vs-train.pkl"


def test_split_names_and_aliases():
    assert [canonical_split(s) for s in ("valid", "validation", "val2017", "train2014", "test", "default")] == [
        "val", "val", "val", "train", "test", "default"]
    assert pick_split("val", ["train2017", "val2017"]) == "val2017"
    assert pick_split("valid", ["train", "val"]) == "val"
    assert pick_split("val", ["val2014", "val2017"]) is None  # ambiguous
    assert pick_split("default", ["default"]) == "default"


def test_unrecognised_inputs_say_what_is_accepted(tmp_path):
    image(tmp_path / "photos" / "a.jpg")
    with pytest.raises(DatasetError, match=r"photos: not a dataset layout I know; give a dataset YAML, a YOLO data.yaml"):
        resolve_data(tmp_path / "photos", "train")
    with pytest.raises(DatasetError, match=r"no such dataset; give .*VOC split"):
        resolve_data(tmp_path / "nothing", "train")
    text(tmp_path / "bad" / "data.yaml", "train: ../train/images\nnames: {0: a, 3: b}\n")
    with pytest.raises(DatasetError, match=r"'names' keys must be 0..1"):
        resolve_data(tmp_path / "bad", "train")


def test_proposals_and_train_take_any_data(tmp_path):
    from detect.cli import main
    from detect.config import ExperimentConfig
    from detect.data.proposal_files import load_proposals
    from detect.engine.train import load_data

    y = roboflow_yolo(tmp_path / "rf")
    out = tmp_path / "p.pkl"
    assert main(["proposals", str(tmp_path / "rf"), "--split", "train", "-o", str(out), "--max", "20", "--resize", "0",
                 "--workers", "1", "--no-progress"]) == 0
    train = resolve_data(y, "train")
    assert all(len(load_proposals(out).get(r.image)) > 0 for r in train.records)
    coco2017(tmp_path / "coco")
    cfg = ExperimentConfig()
    cfg.data.data = str(tmp_path / "coco/annotations/instances_val2017.json")
    notes: list[str] = []
    data = load_data(cfg, log=notes.append)
    assert len(data.train_records) == 3 and data.val_records is None  # a JSON alone is one split: not validated on itself
    assert any("is one split" in n for n in notes)
    cfg.data.data = str(tmp_path / "coco")
    data = load_data(cfg, log=notes.append)
    assert (len(data.train_records), len(data.val_records)) == (1, 3) and data.classes == ["cup", "jar", "tea"]
