"""resolve_data: a VOC folder, a dataset YAML, a cache .pkl; cache placement (never inside a
read-only dataset); clear errors; the shipped datasets/groceries.yaml."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from detect.data.cache.cache_file import load_cache
from detect.data.formats.source import cache_dir_for
from detect.data.formats.voc_dataset import load_spec, voc_folder_spec
from detect.data.spec import DatasetError, resolve_data
from detect.data.synth import CLASSES, render_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache_home(tmp_path, monkeypatch):
    """Caches that would go to ~/.cache go to the test's folder instead."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spec") / "shop"
    render_dataset(out, 10, seed=1, size=96, progress=False)
    return out


def test_voc_folder_splits(voc):
    train = resolve_data(voc, "train", workers=1)
    val = resolve_data(str(voc), "val", workers=1)
    everything = resolve_data(voc, None, workers=1)
    assert train.classes == CLASSES and val.classes == CLASSES
    assert (len(train), len(val), len(everything)) == (8, 1, 10)
    assert not train.problems and not everything.problems
    ids = (voc / "ImageSets/Main/train.txt").read_text().split()
    assert sorted(Path(r.image).stem for r in train.records) == sorted(ids)
    assert Path(train.path).parent == voc / ".cache"  # a writable dataset keeps its caches
    again = resolve_data(voc, "train", workers=1)  # reused, same content
    assert [r.image for r in again.records] == [r.image for r in train.records]
    np.testing.assert_array_equal(np.concatenate([r.boxes for r in again.records]),
                                  np.concatenate([r.boxes for r in train.records]))
    with pytest.raises(DatasetError, match=r"no split 'bogus'.*'test', 'train', 'val', 'all'"):
        resolve_data(voc, "bogus")


def test_cache_pkl_is_loaded_as_is(voc):
    c = resolve_data(voc, "val", workers=1)
    loaded = resolve_data(c.path, "ignored")
    assert [r.image for r in loaded.records] == [r.image for r in c.records]


def test_read_only_dataset_is_never_written(voc, tmp_path):
    ro = tmp_path / "ro"
    shutil.copytree(voc, ro, ignore=shutil.ignore_patterns(".cache"))
    for p in [ro, *ro.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        c = resolve_data(ro, "val", workers=1)
        assert not (ro / ".cache").exists()  # even for root, which os.access lets write anywhere
        assert Path(c.path).is_relative_to(tmp_path / "xdg" / "retail-detect")
        assert len(c) == 1
    finally:
        for p in [ro, *ro.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_yaml_spec_paths_and_cache_dir(voc, tmp_path):
    y = tmp_path / "conf" / "shop.yaml"
    y.parent.mkdir()
    rel_root = os.path.relpath(voc, y.parent)
    y.write_text(f"root: {rel_root}\nannotations: Annotations\nimages: JPEGImages\nclasses: classes.txt\n"
                 "splits:\n  train: ImageSets/Main/train.txt\n  all: null\ncache_dir: caches\n")
    spec = load_spec(y)
    assert spec.name == "shop" and spec.root == voc.resolve() and spec.images == voc / "JPEGImages"
    assert cache_dir_for(spec) == y.parent / "caches"
    c = resolve_data(y, "train", workers=1)
    assert len(c) == 8 and Path(c.path) == y.parent / "caches" / "shop-train.pkl"
    assert load_cache(c.path).classes == CLASSES


@pytest.mark.parametrize("text, message", [
    ("root: .\n", "missing 'annotations'"),
    ("root: .\nannotations: a\nimgs: b\n", "unknown keys \\['imgs'\\]"),
    ("- a\n- b\n", "expected a mapping"),
    ("root: [1\n", "not valid YAML"),
    ("root: .\nannotations: nowhere\n", "annotation folder .* does not exist"),
    ("root: .\nannotations: .\nsplits:\n  train: missing.txt\n", "split file .* does not exist"),
])


def test_bad_yaml_is_a_clear_error(tmp_path, text, message):
    y = tmp_path / "bad.yaml"
    y.write_text(text)
    with pytest.raises(DatasetError, match=message):
        resolve_data(y, "train")


def test_unknown_inputs(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset"):
        resolve_data(tmp_path / "nothing", "train")
    with pytest.raises(DatasetError, match="not a VOC folder"):
        voc_folder_spec(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_data(tmp_path / "missing.pkl", "train")


def test_groceries_yaml(shared_data, tmp_path):
    spec = load_spec(REPO / "datasets" / "groceries.yaml")
    assert spec.root == (shared_data / "groceries-voc").resolve()
    before = sorted(p.name for p in spec.root.iterdir())
    val = resolve_data(REPO / "datasets" / "groceries.yaml", "val")
    assert len(val.classes) == 25 and len(val) == len((spec.root / "splits" / "val.txt").read_text().split())
    assert all(r.image and len(r) >= 1 for r in val.records)
    assert sorted(p.name for p in spec.root.iterdir()) == before  # nothing written into the shared data
    assert Path(val.path).is_relative_to(tmp_path / "xdg")
