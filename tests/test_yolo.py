"""YOLO import: data.yaml path rules (Roboflow's ../train/images, ultralytics' path + .txt lists
+ folder lists), names as a list and a dict, label quirks reported line by line, empty and
missing label files as negatives, and the incremental cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import H, W, image, roboflow_yolo, text, ultralytics_yolo

from detect.data.cache.cache_file import load_cache
from detect.data.cache.importers import build_yolo_cache
from detect.data.spec import DatasetError, resolve_data
from detect.data.formats.yolo import DataYamlError, label_path, read_data_yaml, xyxy_to_yolo, yolo_to_xyxy


@pytest.fixture(autouse=True)
def _isolated_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)


def test_box_conversion_is_its_own_inverse():
    box = yolo_to_xyxy(0.5, 0.25, 0.25, 0.5, 64, 48)
    assert box == (24.0, 0.0, 40.0, 24.0)
    np.testing.assert_allclose(xyxy_to_yolo(*box, 64, 48), (0.5, 0.25, 0.25, 0.5))


def test_label_path_follows_ultralytics():
    s = os.sep
    assert label_path(f"{s}d{s}images{s}train{s}a.b.jpg") == f"{s}d{s}labels{s}train{s}a.b.txt"
    assert label_path(f"{s}images{s}x{s}images{s}a.png") == f"{s}images{s}x{s}labels{s}a.txt"  # the last /images/
    assert label_path(f"{s}d{s}pics{s}a.jpg") == f"{s}d{s}pics{s}a.txt"  # no images/ folder: beside the image


def test_roboflow_export_every_quirk(tmp_path):
    y = roboflow_yolo(tmp_path / "rf")
    train = resolve_data(tmp_path / "rf", "train")  # the folder: its data.yaml is found
    assert train.classes == ["cup", "tea"]
    by = {Path(r.image).name: r for r in train.records}
    assert sorted(by) == ["a.jpg", "b.jpg", "c.jpg"]  # b (empty label) and c (no label): negatives
    assert len(by["b.jpg"]) == 0 and len(by["c.jpg"]) == 0 and (by["c.jpg"].width, by["c.jpg"].height) == (W, H)
    a = by["a.jpg"]
    np.testing.assert_allclose(a.boxes, [[24, 12, 40, 36], [44.8, 19.2, 64, 28.8], [16, 12, 32, 24], [25.6, 38.592, 38.4, 48]],
                               atol=1e-4)
    assert a.labels.tolist() == [0, 1, 1, 1] and a.annotation == str(tmp_path / "rf/train/labels/a.txt")
    assert [(Path(p.file).name, p.kind, p.message.split(":")[0]) for p in train.problems] == [
        ("a.txt", "box_clipped", "line 2 (tea)"), ("a.txt", "unknown_class", "line 3"), ("a.txt", "bad_label", "line 4"),
        ("a.txt", "duplicate_box", "line 5 repeats line 1; dropped"), ("a.txt", "bad_label", "line 7"),
        ("a.txt", "box_outside", "line 9 (cup)"), ("a.txt", "degenerate_box", "line 10 (cup)")]
    assert "class 5 is not one of the 2 classes" in train.problems[1].message
    val = resolve_data(y, "valid")  # Roboflow's folder name finds split 'val'
    assert [Path(r.image).name for r in val.records] == ["v.jpg"] and val.records[0].labels.tolist() == [1]
    assert len(resolve_data(y, "all")) == 4  # train + val; test/ does not exist
    with pytest.raises(DatasetError, match=r"no split 'test'; known splits: \['train', 'val', 'all'\]"):
        resolve_data(y, "test")


def test_names_as_dict_nc_only_and_bad_names(tmp_path):
    assert read_data_yaml(roboflow_yolo(tmp_path / "d", names="{0: cup, 1: tea}")).names == ["cup", "tea"]
    y = tmp_path / "n.yaml"
    for body, names in (("train: .\nnc: 3\n", ["class_0", "class_1", "class_2"]),
                        ("train: .\nnames: {'1': tea, '0': cup}\n", ["cup", "tea"])):
        y.write_text(body)
        assert read_data_yaml(y).names == names
    for body, message in (("train: .\nnames: {0: a, 2: b}\n", r"keys must be 0..1"),
                          ("train: .\nnc: 3\nnames: [a, b]\n", r"'nc: 3' but 'names' has 2"),
                          ("train: .\nnames: [a, a]\n", r"repeated: \['a'\]"),
                          ("train: .\n", r"give 'names'"),
                          ("names: [a]\n", r"no 'train', 'val' or 'test'")):
        y.write_text(body)
        with pytest.raises(DataYamlError, match=message):
            read_data_yaml(y)


def test_ultralytics_layout_txt_list_and_folder_list(tmp_path):
    y = ultralytics_yolo(tmp_path / "u")
    spec = read_data_yaml(y)
    assert spec.root == tmp_path / "u" and spec.names == ["cup", "tea", "jar"]
    assert spec.splits["val"] == [tmp_path / "u/images/val", tmp_path / "u/images/extra"]
    train = resolve_data(y, "train")
    assert [Path(r.image).name for r in train.records] == ["t0.png", "t1.png"]  # ./ and plain relative lines
    np.testing.assert_allclose(train.records[0].boxes, [[0, 0, 32, 48]])
    assert [(Path(p.file).name, p.kind) for p in train.problems] == [("train.txt", "missing_image")]
    assert "images/train/gone.jpg" in train.problems[0].message
    val = resolve_data(y, "val")
    assert sorted(Path(r.image).name for r in val.records) == ["e0.jpg", "v0.jpg"]
    assert all(r.labels.tolist() == [2] for r in val.records)
    assert Path(train.path).name == "u-train.pkl"  # named after the YAML, beside the data


def test_relative_path_key_and_missing_labels_folder(tmp_path, monkeypatch):
    image(tmp_path / "ds" / "pics" / "x.jpg")  # images, but no labels anywhere
    y = text(tmp_path / "conf" / "data.yaml", "path: ../ds\ntrain: pics\nval: pics\nnames: [cup]\n")
    monkeypatch.chdir(tmp_path / "conf")  # a relative path is taken from the current folder when it exists there
    assert read_data_yaml(y).root == tmp_path / "ds"
    monkeypatch.chdir(tmp_path)  # ... else from the YAML's folder
    assert read_data_yaml(y).root == tmp_path / "ds"
    c = resolve_data(y, "train")
    assert len(c) == 1 and len(c.records[0]) == 0
    assert [p.kind for p in c.problems] == ["no_labels"] and "labels/ folder missing" in c.problems[0].message


def test_cache_is_incremental(tmp_path):
    y = roboflow_yolo(tmp_path / "rf")
    spec = read_data_yaml(y)
    out = tmp_path / "c.pkl"
    first = build_yolo_cache(spec, "train", out)
    assert not first.up_to_date and len(first.parsed) == 3
    again = build_yolo_cache(spec, "train", out)
    assert again.up_to_date and again.parsed == [] and "data" not in vars(again)  # header only: nothing parsed
    label = tmp_path / "rf/train/labels/c.txt"
    label.write_text("0 0.5 0.5 0.5 0.5\n")  # c gets a label file
    res = build_yolo_cache(spec, "train", out)
    assert res.parsed == [str(label)] and res.reused == 2
    assert len(load_cache(out).records[2]) == 1
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert build_yolo_cache(spec, "train", out).parsed == [str(label)]
    image(tmp_path / "rf/train/images/b.jpg", w=32)  # an image changes: its boxes need its new size
    res = build_yolo_cache(spec, "train", out)
    assert res.parsed == [str(tmp_path / "rf/train/labels/b.txt")]
    assert load_cache(out).records[1].width == 32
