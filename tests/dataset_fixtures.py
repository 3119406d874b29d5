"""Tiny datasets in the layouts users have, written by the tests (images from numpy, saved with
OpenCV): a Roboflow YOLO export, an ultralytics-style YOLO dataset, COCO (2017 layout and
Roboflow's), and Roboflow/CVAT-style VOC split folders. Each carries the quirks the importers
must survive; the expected results are spelled out in the tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

W, H = 64, 48  # every image is 64 x 48 unless said otherwise


def image(path: Path, w: int = W, h: int = H, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def text(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


# -- YOLO ---------------------------------------------------------------------------------------
# train/labels/a.txt: every quirk, line by line (1-based line numbers in the problems)
A_LABELS = (
    "0 0.5 0.5 0.25 0.5\n"  # 1: cup, (24, 12, 40, 36)
    "1 0.9 0.5 0.4 0.2\n"  # 2: tea, past the right edge (x2 = 70.4 px): clipped
    "5 0.5 0.5 0.1 0.1\n"  # 3: class 5 of 2: unknown_class
    "x 0.5 0.5 0.1 0.1\n"  # 4: not numbers: bad_label
    "0 0.5 0.5 0.25 0.5\n"  # 5: repeats line 1: duplicate_box
    "\n"
    "1 0.1 0.1 0.2 0.1 0.9\n"  # 7: 6 values (a confidence?): bad_label
    "1 0.25 0.25 0.5 0.25 0.5 0.5\n"  # 8: polygon -> its box (16, 12, 32, 24)
    "0 1.5 0.5 0.2 0.2\n"  # 9: entirely right of the image: box_outside
    "0 0.5 0.5 0 0.2\n"  # 10: zero width: degenerate_box
    "1 0.5 0.904 0.2 0.2\n"  # 11: bottom edge at 1.004 (within 1%): clipped silently
)


def roboflow_yolo(root: Path, names: str = "['cup', 'tea']") -> Path:
    """Roboflow's YOLO export: data.yaml beside train/, valid/ (no test/ although the YAML names
    it), split paths written as ``../<split>/images``. train: a (quirks), b (empty label file),
    c (no label file); valid: v (one box)."""
    for n, seed in (("a", 1), ("b", 2), ("c", 3)):
        image(root / "train" / "images" / f"{n}.jpg", seed=seed)
    text(root / "train" / "labels" / "a.txt", A_LABELS)
    text(root / "train" / "labels" / "b.txt", "")
    image(root / "valid" / "images" / "v.jpg", seed=4)
    text(root / "valid" / "labels" / "v.txt", "1 0.5 0.5 0.5 0.5\n")
    return text(root / "data.yaml", "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
                                    f"nc: 2\nnames: {names}\nroboflow:\n  workspace: w\n  version: 3\n")


def ultralytics_yolo(root: Path) -> Path:
    """The ultralytics layout: ``path`` + images/{train,val} + labels/..., names as a dict, the
    train split as a .txt list (with a ./ line, a plain relative line and a missing image) and
    val as a list of two folders."""
    for n in ("t0", "t1"):
        image(root / "images" / "train" / f"{n}.png")
        text(root / "labels" / "train" / f"{n}.txt", "0 0.25 0.5 0.5 1.0\n")
    for sub, n in (("val", "v0"), ("extra", "e0")):
        image(root / "images" / sub / f"{n}.jpg")
        text(root / "labels" / sub / f"{n}.txt", "2 0.5 0.5 0.5 0.5\n")
    text(root / "train.txt", "./images/train/t0.png\nimages/train/t1.png\nimages/train/gone.jpg\n")
    y = root.parent / f"{root.name}.yaml"
    return text(y, f"path: {root}\ntrain: train.txt\nval: [images/val, images/extra]\n"
                   "names:\n  0: cup\n  1: tea\n  2: jar\n")


# -- COCO ---------------------------------------------------------------------------------------
def coco_doc(files: list[str]) -> dict:
    """Categories 3 (cup) and 7 (tea) (a gap), 5 (jar) listed out of order; image 1: a cup and
    a crowd of tea; image 2 (declared 60 wide, really 64): a box 0.5 px past the edge (float
    rounding) and one 10 px past it; image 3: no annotations; image 4: its file does not exist;
    an annotation of a missing image id, one of an unknown category, one without a bbox."""
    images = [{"id": i + 1, "file_name": f, "width": W, "height": H} for i, f in enumerate(files)]
    images[1]["width"] = 60
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0, "area": 200},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30.5, 20, 12, 8.25], "iscrowd": 1, "area": 99},
        {"id": 3, "image_id": 2, "category_id": 5, "bbox": [40, 0, 24.5, 10]},
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [50, 30, 24, 10]},
        {"id": 5, "image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5]},
        {"id": 6, "image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5]},
        {"id": 7, "image_id": 1, "category_id": 3},
    ]
    cats = [{"id": 7, "name": "tea", "supercategory": "drink"}, {"id": 3, "name": "cup", "supercategory": "ware"},
            {"id": 5, "name": "jar", "supercategory": "ware"}]
    return {"info": {}, "images": images, "annotations": anns, "categories": cats}


def coco2017(root: Path) -> Path:
    """annotations/instances_val2017.json + val2017/ images (a, b, c; d.jpg is missing), and a
    train2017 split with one image."""
    for n, seed in (("a", 1), ("b", 2), ("c", 3)):
        image(root / "val2017" / f"{n}.jpg", seed=seed)
    text(root / "annotations" / "instances_val2017.json", json.dumps(coco_doc(["a.jpg", "b.jpg", "c.jpg", "d.jpg"])))
    image(root / "train2017" / "t.jpg", seed=5)
    doc = coco_doc(["t.jpg", "u.jpg"])
    doc["images"] = doc["images"][:1]
    doc["annotations"] = [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [2, 2, 20, 20], "iscrowd": 0}]
    return text(root / "annotations" / "instances_train2017.json", json.dumps(doc))


def roboflow_coco(root: Path) -> Path:
    """Roboflow's COCO export: <split>/_annotations.coco.json beside the images."""
    for split in ("train", "valid"):
        image(root / split / "r.jpg")
        doc = {"images": [{"id": 0, "file_name": "r.jpg", "width": W, "height": H}],
               "categories": [{"id": 0, "name": "shelf", "supercategory": "none"}, {"id": 1, "name": "cup", "supercategory": "shelf"}],
               "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [4, 4, 10, 10], "iscrowd": 0}]}
        text(root / split / "_annotations.coco.json", json.dumps(doc))
    return root


# -- VOC split folders ---------------------------------------------------------------------------
def voc_xml(filename: str, objects: list[tuple[str, tuple[int, int, int, int]]], size=(W, H)) -> str:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


def voc_split_folders(root: Path, val_folder: str = "valid") -> Path:
    """Roboflow's Pascal VOC export: train/, <val_folder>/, test/ with XML beside the images.
    The same stem in train/ and valid/ (different images); a jar only in test/; a train XML
    whose image is missing."""
    for split, objs in (("train", [("cup", (1, 1, 20, 20))]), (val_folder, [("tea", (5, 5, 30, 30))]),
                        ("test", [("jar", (2, 2, 10, 10))])):
        image(root / split / "img_jpg.rf.0a1b.jpg", seed=len(split))
        text(root / split / "img_jpg.rf.0a1b.xml", voc_xml("img_jpg.rf.0a1b.jpg", objs))
    text(root / "train" / "lost.xml", voc_xml("lost.jpg", [("cup", (1, 1, 5, 5))]))
    text(root / "README.roboflow.txt", "exported from roboflow")
    return root
