"""COCO import: category ids with gaps, iscrowd as difficult, images without annotations,
orphan and bad annotations, missing images, declared sizes, the 2017 / Roboflow / CVAT layouts,
a JSON given alone, and the incremental cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import coco2017, coco_doc, image, roboflow_coco, text

from detect.data.formats.coco import coco_to_xyxy, find_splits, xyxy_to_coco
from detect.data.cache.importers import build_coco_cache
from detect.data.spec import resolve_data


@pytest.fixture(autouse=True)
def _isolated_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)


def test_box_conversion_is_its_own_inverse():
    assert coco_to_xyxy(10, 5, 20, 10) == (10, 5, 30, 15)
    assert xyxy_to_coco(10, 5, 30, 15) == [10, 5, 20, 10]


def test_coco2017_every_quirk(tmp_path):
    coco2017(tmp_path / "coco")
    val = resolve_data(tmp_path / "coco", "val")  # finds instances_val2017.json and val2017/
    assert val.classes == ["cup", "jar", "tea"]  # categories 3, 5, 7 in id order
    assert [Path(r.image).name for r in val.records] == ["a.jpg", "b.jpg", "c.jpg"]  # d.jpg is missing
    a, b, c = val.records
    np.testing.assert_allclose(a.boxes, [[10, 5, 30, 15], [30.5, 20, 42.5, 28.25]])
    assert a.labels.tolist() == [0, 2] and a.difficult.tolist() == [False, True]  # the crowd box is difficult
    np.testing.assert_allclose(b.boxes, [[40, 0, 64, 10], [50, 30, 64, 40]])
    assert (b.width, b.height) == (64, 48)  # the image's size, not the declared 60
    assert len(c) == 0  # no annotations: a negative image
    js = str(tmp_path / "coco/annotations/instances_val2017.json")
    assert all(p.file == js for p in val.problems)
    assert [(p.kind, p.message.split(":")[0]) for p in val.problems] == [
        ("unknown_class", "image 1 (a.jpg)"), ("bad_box", "image 1 (a.jpg)"),
        ("size_mismatch", "image 2 (b.jpg)"), ("box_clipped", "image 2 (b.jpg)"),  # 10 px past; 0.5 px is not reported
        ("missing_image", "image 4 (d.jpg)"), ("orphan_annotation", "1 annotation refers to image id 99, which is not in 'images'; dropped")]
    assert "annotation 6: category_id 4 is not in 'categories'" in val.problems[0].message
    train = resolve_data(tmp_path / "coco", "train")  # train2017 with its own folder
    assert [Path(r.image).name for r in train.records] == ["t.jpg"] and train.classes == val.classes
    assert len(resolve_data(tmp_path / "coco", "all")) == 4


def test_a_json_alone_is_one_split(tmp_path):
    coco2017(tmp_path / "coco")
    js = tmp_path / "coco/annotations/instances_val2017.json"
    for split in ("train", "val", None):  # like a cache: whatever split is asked
        c = resolve_data(js, split)
        assert len(c) == 3 and Path(c.path) == tmp_path / "coco/.cache/coco-val2017.pkl"  # at the dataset root


def test_roboflow_and_cvat_layouts(tmp_path):
    roboflow_coco(tmp_path / "rf")
    assert sorted(find_splits(tmp_path / "rf")) == ["train", "valid"]
    val = resolve_data(tmp_path / "rf", "val")
    assert val.classes == ["shelf", "cup"] and val.records[0].labels.tolist() == [1]  # Roboflow's id 0 stays a class
    # CVAT: annotations/instances_default.json, file names relative to images/ (here with a subfolder)
    image(tmp_path / "cvat" / "images" / "shelf" / "0001.jpg")
    doc = {"images": [{"id": 1, "file_name": "shelf/0001.jpg", "width": 64, "height": 48}],
           "categories": [{"id": 1, "name": "cup"}], "annotations": []}
    text(tmp_path / "cvat" / "annotations" / "instances_default.json", json.dumps(doc))
    c = resolve_data(tmp_path / "cvat", "default")
    assert [Path(r.image).name for r in c.records] == ["0001.jpg"] and not c.problems
    # a file_name whose folder differs from where the image is: found by its stem
    doc["images"][0]["file_name"] = "somewhere/else/0001.png"
    text(tmp_path / "cvat" / "annotations" / "instances_default.json", json.dumps(doc))
    assert [Path(r.image).name for r in resolve_data(tmp_path / "cvat", "default").records] == ["0001.jpg"]


@pytest.mark.parametrize("body, kind", [(b"{not json", "parse_error"), (b'{"annotations": []}', "not_coco")])
def test_unusable_json_is_a_problem_not_a_crash(tmp_path, body, kind):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "x.json").write_bytes(body)
    c = resolve_data(tmp_path / "ann" / "x.json", "train")
    assert len(c) == 0 and [p.kind for p in c.problems] == [kind]


def test_cache_is_incremental(tmp_path, monkeypatch):
    coco2017(tmp_path / "coco")
    split = find_splits(tmp_path / "coco")["val2017"]
    out = tmp_path / "c.pkl"
    first = build_coco_cache(tmp_path / "coco", [split], out)
    assert not first.up_to_date and len(first.cache) == 3
    again = build_coco_cache(tmp_path / "coco", [split], out)
    assert again.up_to_date and "data" not in vars(again)
    # the JSON changes: parsed again, but unchanged images are not read again
    import detect.data.formats.coco as coco

    read = []
    monkeypatch.setattr(coco, "read_image_size", lambda p: read.append(p) or (64, 48))
    doc = coco_doc(["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    doc["annotations"] = doc["annotations"][:1]
    text(split.json, json.dumps(doc))
    image(tmp_path / "coco/val2017/c.jpg", w=32)
    res = build_coco_cache(tmp_path / "coco", [split], out)
    assert not res.up_to_date and [Path(p).name for p in read] == ["c.jpg"]
    assert sum(len(r) for r in res.cache.records) == 1
