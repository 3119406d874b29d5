"""detect convert: VOC -> COCO -> YOLO -> VOC keeps every box within 1 px; the files are what
the other tools read (faster-coco-eval / pycocotools load the COCO, labelImg-style VOC, an
ultralytics data.yaml); predictions become pre-labels; the source is never written; --to pkl;
the CLI wrapper; and a 1-epoch `detect train` on a converted YOLO dataset."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from dataset_fixtures import coco2017, image, text, voc_xml
from lxml import etree

from detect.cli import main
from detect.data.cache.cache_file import load_cache
from detect.data.spec import resolve_data
from detect.data.synth import render_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)


@pytest.fixture
def voc(tmp_path) -> Path:
    """A `detect synth` VOC dataset (difficult boxes included) plus a negative train image."""
    root = tmp_path / "voc"
    render_dataset(root, 10, seed=3, size=96, progress=False)
    image(root / "JPEGImages" / "empty.jpg", 96, 96)
    text(root / "Annotations" / "empty.xml", voc_xml("empty.jpg", [], size=(96, 96)))
    with open(root / "ImageSets/Main/train.txt", "a") as f:
        f.write("empty\n")
    return root


def by_stem(data: str | Path, split: str) -> dict[str, tuple[np.ndarray, list[str]]]:
    c = resolve_data(data, split)
    return {Path(r.image).stem: (r.boxes, [c.classes[i] for i in r.labels]) for r in c.records}


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.parts}


def convert(*args: str) -> int:
    return main(["convert", "--no-progress", *map(str, args)])


def test_round_trip_voc_coco_yolo_voc_within_one_pixel(voc, tmp_path):
    before = tree_digest(voc)
    assert convert(voc, "--to", "coco", "-o", tmp_path / "coco") == 0
    assert convert(tmp_path / "coco", "--to", "yolo", "-o", tmp_path / "yolo") == 0
    assert convert(tmp_path / "yolo", "--to", "voc", "-o", tmp_path / "voc2") == 0
    assert tree_digest(voc) == before  # the source was not touched
    for split in ("train", "val", "test"):
        a, b = by_stem(voc, split), by_stem(tmp_path / "voc2", split)
        assert a.keys() == b.keys() and a
        for stem, (boxes, names) in a.items():
            assert b[stem][1] == names
            assert boxes.shape == b[stem][0].shape and np.abs(boxes - b[stem][0]).max(initial=0) <= 1.0, stem
    assert len(by_stem(tmp_path / "voc2", "train")["empty"][0]) == 0  # the negative survived every format
    # difficult boxes survive VOC -> COCO (YOLO has no such flag)
    src, coco = resolve_data(voc, "train"), resolve_data(tmp_path / "coco", "train")
    assert sum(r.difficult.sum() for r in src.records) > 0
    assert sorted(r.difficult.sum() for r in src.records) == sorted(r.difficult.sum() for r in coco.records)


def test_float_boxes_round_trip_coco_voc_coco(tmp_path):
    coco2017(tmp_path / "coco")
    assert convert(tmp_path / "coco", "--to", "voc", "-o", tmp_path / "voc", "--split", "val") == 1  # d.jpg is missing: left out (issue 24 item 19)
    assert convert(tmp_path / "voc", "--to", "coco", "-o", tmp_path / "coco2") == 0
    a, b = by_stem(tmp_path / "coco", "val"), by_stem(tmp_path / "coco2", "val")
    assert a.keys() == b.keys() == {"a", "b", "c"}
    for stem in a:
        assert a[stem][1] == b[stem][1] and np.abs(a[stem][0] - b[stem][0]).max(initial=0) <= 1.0


def test_written_files_are_what_the_tools_read(voc, tmp_path):
    from faster_coco_eval import COCO
    from pycocotools.coco import COCO as PyCOCO

    assert convert(voc, "--to", "coco", "-o", tmp_path / "coco") == 0
    js = tmp_path / "coco/annotations/instances_train.json"
    for loader in (COCO, PyCOCO):
        c = loader(str(js))
        assert sorted(c.getCatIds()) == list(range(1, 11)) and len(c.getImgIds()) == 9
        ann = c.loadAnns(c.getAnnIds())[0]
        assert ann["id"] >= 1 and ann["iscrowd"] == 0 and len(ann["bbox"]) == 4
    doc = json.loads(js.read_text())
    assert all(a["iscrowd"] == 0 for a in doc["annotations"]) and all((tmp_path / "coco/images/train" / i["file_name"]).is_file()
                                                                     for i in doc["images"])
    assert convert(voc, "--to", "voc", "-o", tmp_path / "v") == 0
    xml = etree.parse(str(tmp_path / "v/Annotations/000000.xml")).getroot()
    assert [c.tag for c in xml][:6] == ["folder", "filename", "path", "source", "size", "segmented"]
    for bb in xml.iter("bndbox"):  # integer, 1-based, inside the image
        xmin, ymin, xmax, ymax = (int(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        assert 1 <= xmin <= xmax <= 96 and 1 <= ymin <= ymax <= 96
    assert (tmp_path / "v/classes.txt").read_text().split() == resolve_data(voc, "train").classes
    assert convert(voc, "--to", "yolo", "-o", tmp_path / "y") == 0
    d = yaml.safe_load((tmp_path / "y/data.yaml").read_text())
    assert d["train"] == "images/train" and d["val"] == "images/val" and d["nc"] == 10 and "path" not in d
    assert (tmp_path / "y/labels/train/empty.txt").read_text() == ""  # a negative: an empty label file
    line = (tmp_path / "y/labels/train/000000.txt").read_text().splitlines()[0].split()
    assert len(line) == 5 and line[0].isdigit() and all(0 <= float(v) <= 1 for v in line[1:])


def test_predictions_become_pre_labels(tmp_path):
    from detect.infer.results import ResultWriter
    from detect.infer.sources import Frame
    from detect.structures import Detections

    img = image(tmp_path / "shots" / "s1.jpg")
    image(tmp_path / "shots" / "s2.jpg")
    classes = ["cup", "tea", "jar"]
    w = ResultWriter(tmp_path / "pred", classes, jsonl=True, csv_=False)
    frame = np.zeros((48, 64, 3), np.uint8)
    w.write(Frame(frame, str(img)), Detections(np.array([[1.5, 2, 20, 30], [30, 5, 64, 40]], np.float32),
                                               np.array([0.9, 0.4], np.float32), np.array([2, 0]), classes))
    w.write(Frame(frame, str(tmp_path / "shots" / "s2.jpg")), Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                                                         np.zeros(0, np.int64), classes))
    w.write(Frame(None, str(tmp_path / "shots" / "bad.jpg"), error="cannot decode"), None)
    w.write(Frame(frame, str(tmp_path / "v.mp4"), frame=3, kind="video"), Detections(np.zeros((0, 4), np.float32),
                                                                                    np.zeros(0, np.float32), np.zeros(0, np.int64), classes))
    w.close()
    assert convert(tmp_path / "pred/detections.jsonl", "--to", "voc", "-o", tmp_path / "labels") == 1  # bad.jpg: left out (issue 24 item 19)
    c = resolve_data(tmp_path / "labels", "all")
    assert c.classes == ["cup", "jar"]  # the names detected, in the model's order
    by = {Path(r.image).stem: r for r in c.records}
    assert sorted(by) == ["s1", "s2"] and len(by["s2"]) == 0
    np.testing.assert_array_equal(by["s1"].boxes, [[2, 2, 20, 30], [30, 5, 64, 40]])  # 1.5 rounds to 2
    assert [c.classes[i] for i in by["s1"].labels] == ["jar", "cup"]
    report = (tmp_path / "labels/convert.problems.txt").read_text()
    assert "bad_image" in report and "video_frames" in report


def test_output_never_overwrites_an_input(voc, tmp_path, capsys):
    assert convert(voc, "--to", "yolo", "-o", voc / "yolo") == 2
    assert "is inside the input dataset" in capsys.readouterr().err
    # detections of images that already sit where the VOC output would put them
    img = image(tmp_path / "out" / "JPEGImages" / "x.jpg")
    row = {"source": str(img), "frame": None, "width": 64, "height": 48, "detections": [], "counts": {}}
    jl = text(tmp_path / "d.jsonl", json.dumps(row) + "\n")
    before = img.read_bytes()
    assert convert(jl, "--to", "voc", "-o", tmp_path / "out") == 2
    assert f"would overwrite the input file {img}" in capsys.readouterr().err
    assert img.read_bytes() == before and not (tmp_path / "out" / "Annotations").exists()
    assert convert(tmp_path / "nothing", "--to", "voc", "-o", tmp_path / "o") == 2


def test_to_pkl_is_xml2pkl_for_every_layout(voc, tmp_path, capsys):
    assert convert(voc, "--to", "pkl", "--split", "val", "-o", tmp_path / "val.pkl") == 0
    assert len(load_cache(tmp_path / "val.pkl")) == len(resolve_data(voc, "val"))
    assert "convert: 11 XML files" in capsys.readouterr().err  # the whole folder is parsed once, the split selected
    assert convert(voc, "--to", "pkl", "-o", tmp_path / "folder") == 2
    assert convert(tmp_path / "val.pkl", "--to", "pkl", "-o", tmp_path / "again.pkl") == 2


def test_cli_wrapper(voc, tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), str(voc), "--to", "coco", "-o", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "-> COCO in" in run.stderr and (tmp_path / "c/annotations/instances_val.json").is_file()


def test_train_one_epoch_on_a_yolo_dataset(voc, tmp_path, capsys):
    assert convert(voc, "--to", "yolo", "-o", tmp_path / "yolo") == 0
    rc = main(["train", "--data", str(tmp_path / "yolo/data.yaml"), "--epochs", "1", "--imgsz", "64", "--batch", "4",
               "--workers", "0", "--device", "cpu", "--backbone", "mobilenet_v3_large", "--pretrained", "none",
               "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "run/best.pt").is_file()  # the val split of the data.yaml was used
