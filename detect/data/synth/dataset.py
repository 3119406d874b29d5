"""Synthetic retail shelves: the project's embedded default dataset.

``detect synth OUT_DIR --images N --seed S --size PX`` renders shelf and checkout scenes with
ten product classes (:data:`CLASSES`) and writes them as a Pascal VOC dataset::

    OUT_DIR/JPEGImages/000000.jpg ...     the photographs
    OUT_DIR/Annotations/000000.xml ...    standard VOC XML, 1-based inclusive corners
    OUT_DIR/ImageSets/Main/{train,val,test}.txt
    OUT_DIR/classes.txt                   one class name a line, in label order
    OUT_DIR/synth.json                    how it was made (seed, size, counts)
    OUT_DIR/truth/000000.json ...         --dense only: planogram, shelves, gaps, misplaced products

Scenes are drawn with OpenCV from a numpy ``Generator`` seeded by ``(seed, image index)``, so
a seed gives the same bytes on every run, in any order and with any number of workers.
Boxes are the visible extent of each product (see :mod:`detect.data.synth.camera`).

Python API: :func:`render_scene` (one scene in memory) and :func:`render_dataset`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from lxml import etree
from tqdm import tqdm

from detect.data.synth.camera import render
from detect.data.synth.dense import render_dense, truth_json
from detect.data.synth.products import CLASSES
from detect.data.synth.scene import Scene

__all__ = ["CLASSES", "Scene", "render_scene", "render_dataset", "scene_to_voc_xml"]

SYNTH_VERSION = 1  # bump when the same seed starts to draw different scenes
SPLITS = ("train", "val", "test")


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1, index])


def render_scene(seed: int, index: int = 0, size: int = 320, kind: str | None = None) -> Scene:
    """Render scene ``index`` of the dataset of ``seed`` in memory.

    Args:
        seed, index: together they fix the scene (the dataset writer uses the same pair).
        size: longer image side in pixels (the shorter is ``size`` or ``0.75 * size``).
        kind: "shelf", "checkout" or None (random, 70% shelves).

    Returns:
        A :class:`Scene`: ``image`` uint8[H, W, 3] BGR; ``boxes`` float32[N, 4] xyxy 0-based
        pixels (x2/y2 exclusive) of the visible part of each product; ``labels`` int64[N]
        into :data:`CLASSES`; ``difficult``, ``truncated`` bool[N].
    """
    return render(_image_rng(seed, index), size, kind)


def scene_to_voc_xml(scene: Scene, filename: str, classes: Sequence[str] = CLASSES) -> bytes:
    """Standard Pascal VOC XML for a scene. Our boxes cover pixel columns x1..x2-1 (0-based),
    which VOC writes 1-based and inclusive: ``xmin = x1 + 1, xmax = x2`` (same for y)."""
    H, W = scene.image.shape[:2]
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = "JPEGImages"
    etree.SubElement(root, "filename").text = filename
    src = etree.SubElement(root, "source")
    etree.SubElement(src, "database").text = "retail-detect synthetic shelves"
    size = etree.SubElement(root, "size")
    for tag, v in (("width", W), ("height", H), ("depth", 3)):
        etree.SubElement(size, tag).text = str(v)
    etree.SubElement(root, "segmented").text = "0"
    for box, label, diff, trunc in zip(scene.boxes, scene.labels, scene.difficult, scene.truncated):
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = classes[int(label)]
        etree.SubElement(obj, "pose").text = "Unspecified"
        etree.SubElement(obj, "truncated").text = str(int(trunc))
        etree.SubElement(obj, "difficult").text = str(int(diff))
        bb = etree.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        for tag, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):  # 0-based -> VOC 1-based
            etree.SubElement(bb, tag).text = str(v)
    return etree.tostring(root, pretty_print=True, encoding="utf-8")


def _write_one(job: tuple[str, int, int, int, bool]) -> tuple[int, int, str]:
    """Render image ``index`` and write its JPEG and XML into ``folder`` (and, for a dense
    shelf, its truth JSON); returns (index, number of objects, scene kind). Runs in worker
    processes too."""
    folder, seed, index, size, dense = job
    scene = render_dense(seed, index, size) if dense else render_scene(seed, index, size)
    stem = f"{index:06d}"
    ok, jpg = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, scene.quality])
    if not ok:  # pragma: no cover - OpenCV without a JPEG codec
        raise RuntimeError("OpenCV could not encode JPEG; reinstall opencv-python-headless")
    Path(folder, "JPEGImages", stem + ".jpg").write_bytes(jpg.tobytes())
    Path(folder, "Annotations", stem + ".xml").write_bytes(scene_to_voc_xml(scene, stem + ".jpg"))
    if dense:
        truth = json.dumps(truth_json(scene, stem + ".jpg"), separators=(",", ":"))
        Path(folder, "truth", stem + ".json").write_text(truth + "\n")
    return index, len(scene.boxes), scene.kind


def split_indices(n: int, seed: int, fractions: Sequence[float]) -> dict[str, list[int]]:
    """Assign images 0..n-1 to train/val/test with the given fractions (normalised), in a
    seeded random order; each list is returned sorted."""
    f = np.asarray(fractions, np.float64)
    if f.shape != (3,) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train,val,test), got {list(fractions)}")
    f = f / f.sum()
    n_train = int(round(n * f[0]))
    n_val = min(int(round(n * f[1])), n - n_train)
    perm = np.random.default_rng([seed, 2]).permutation(n)
    parts = (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:])
    return {name: sorted(int(i) for i in p) for name, p in zip(SPLITS, parts)}


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished dataset ``tmp`` to ``out``. An existing ``out`` must be empty or an
    earlier synthetic dataset (it has ``synth.json``); anything else is refused."""
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not (out / "synth.json").is_file():
            raise FileExistsError(f"{out} exists, is not empty and is not a synthetic dataset: "
                                  "choose another folder or remove it first")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "d")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def render_dataset(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 320,
                   splits: Sequence[float] = (0.8, 0.1, 0.1), workers: int = 1,
                   progress: bool | None = None, dense: bool = False, shelves: int = 0, shelf_size: int = 1600) -> dict:
    """Render ``n`` scenes as a VOC dataset in ``out_dir`` (layout in the module docstring);
    ``dense``: high-resolution store shelves (:mod:`detect.data.synth.dense`, 4:3 landscape,
    longer side ``size``) with their shelf truth in ``truth/<stem>.json``. ``shelves`` adds that
    many dense shelves of longer side ``shelf_size`` after the ``n`` scenes (a mixed training
    set: product photos and whole store shelves); the splits are drawn over all of them.

    The dataset is built in a hidden folder beside ``out_dir`` and moved into place when
    complete, so an interrupted run never leaves half a dataset behind. ``workers`` > 1
    renders in that many processes (the bytes do not depend on it). Returns the summary also
    written to ``synth.json``.
    """
    if n < 1:
        raise ValueError(f"number of images must be at least 1, got {n}")
    if size < (256 if dense else 32):
        raise ValueError(f"image size must be at least {256 if dense else 32} pixels{' for dense shelves' if dense else ''}, got {size}")
    parts = split_indices(n + shelves, seed, splits)
    out = Path(out_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main") + (("truth",) if dense or shelves else ()):
            (tmp / sub).mkdir(parents=True)
        jobs = [(str(tmp), seed, i, size, dense) for i in range(n)]
        jobs += [(str(tmp), seed, i, shelf_size, True) for i in range(n, n + shelves)]
        objects, kinds = 0, {"dense": 0} if dense else {"shelf": 0, "checkout": 0, "dense": 0}
        # progress None: a bar only on a terminal (tqdm's disable=None)
        bar = tqdm(total=len(jobs), desc="synth", unit="img", disable=None if progress is None else not progress)
        with get_context("spawn").Pool(workers) if workers > 1 else nullcontext() as pool:
            results = pool.imap_unordered(_write_one, jobs, chunksize=16) if pool else map(_write_one, jobs)
            for _, k, kind in results:
                objects += k
                kinds[kind] += 1
                bar.update()
        bar.close()
        for name, idx in parts.items():
            (tmp / "ImageSets/Main" / f"{name}.txt").write_text("".join(f"{i:06d}\n" for i in idx))
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
        summary = {"generator": "retail-detect synth", "version": SYNTH_VERSION, "seed": seed, "images": n + shelves,
                   "size": size, "dense": dense, "shelves": shelves, "shelf_size": shelf_size, "objects": objects, "scenes": kinds, "classes": list(CLASSES),
                   "splits": {k: len(v) for k, v in parts.items()}}
        (tmp / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
