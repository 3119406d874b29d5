"""The table of formats (detect/data/formats/table.py, issue 23): a new annotation format is one
module and one row. The module here is this test file: a tiny format, a folder of images with a
``<stem>.box`` text file beside each (``name x1 y1 x2 y2`` per line, 0-based pixels), with its
reader, its opener and its writer; one row added to ``FORMATS`` makes ``--data``, the cache, the
dataset and ``detect convert`` take it, through the same code paths as VOC, YOLO and COCO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import H, W, image, text

from detect.data.cache.importers import build_image_cache
from detect.data.dataset import DetectionDataset
from detect.data.formats import table
from detect.data.formats.result import FileResult
from detect.data.formats.source import DataSource
from detect.data.formats.writers import Output, Splits
from detect.data.images import IMAGE_EXTS, FileStat, read_image_size, walk_files
from detect.data.spec import DatasetError, open_data, resolve_data
from detect.data.transforms import eval_transform


# -- the new format: one module (this one) -------------------------------------------------------
def is_box_folder(p: Path) -> bool:
    """The layout: a folder holding ``.box`` files."""
    return p.is_dir() and any(p.glob("*.box"))


def parse_box_file(image_file: FileStat, label: str) -> FileResult:
    """One image and its ``.box`` file (none: a negative image) -> the per-image result."""
    width, height = read_image_size(image_file.path)
    boxes: list[float] = []
    names: list[str] = []
    problems: list[tuple[str, str]] = []
    lines = Path(label).read_text(encoding="utf-8").splitlines() if Path(label).is_file() else []
    for k, line in enumerate(lines, 1):
        name, *values = line.split()
        if len(values) != 4:
            problems.append(("bad_label", f"line {k}: expected 'name x1 y1 x2 y2'"))
            continue
        boxes += [float(v) for v in values]
        names.append(name)
    flags = [False] * len(names)
    return FileResult(True, image_file.path, image_file.size, image_file.mtime_ns, width, height, boxes, names, flags,
                      list(flags), ("", "", ""), problems)


def open_box_folder(folder: Path) -> DataSource:
    """The folder as a source of caches: one split, every image, incremental like YOLO's."""
    root = folder.resolve()

    def build(split: str, output: Path, *, workers: int = 0, **kw):
        images = walk_files(root, IMAGE_EXTS)[0].stats()
        labels = [str(Path(st.path).with_suffix(".box")) for st in images]
        return build_image_cache(images, labels, parse_box_file, {"format": "box", "ann_dir": str(root)}, None, output,
                                 desc="box", **kw)

    return DataSource("box", root.name, root, [], build, source=str(folder))


def plan_box(out: Path, classes, splits: Splits, names: dict[str, str]) -> list[Output]:
    """``detect convert --to box``: each image copied, its ``.box`` file beside it."""
    plan = []
    for records in splits.values():
        for r in records:
            name = names[r.image]
            body = "".join(f"{classes[int(label)]} " + " ".join(f"{v:g}" for v in box) + "\n"
                           for box, label in zip(r.boxes.tolist(), r.labels.tolist()))
            plan += [Output(out / name, image=r.image), Output(out / f"{Path(name).stem}.box", text=lambda b=body: b)]
    return plan


BOX = table.Format("box", is_box_folder, open_box_folder, "a folder of images with .box files", write=plan_box)


# -- the tests ------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _isolated_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)


@pytest.fixture
def box_folder(tmp_path) -> Path:
    root = tmp_path / "shelf"
    image(root / "a.jpg", seed=1)
    text(root / "a.box", "cup 4 6 20 30\ntea 30 10 60 40\n")
    image(root / "b.jpg", seed=2)
    text(root / "b.box", "tea 1 2 11 12\nnot a box\n")
    image(root / "c.jpg", seed=3)  # no .box file: a negative image
    return root


@pytest.fixture
def with_box_row(monkeypatch):
    monkeypatch.setattr(table, "FORMATS", (*table.FORMATS, BOX))


def test_without_its_row_the_folder_is_no_dataset(box_folder):
    assert table.detect_layout(box_folder) is None
    with pytest.raises(DatasetError, match="not a dataset layout I know"):
        open_data(box_folder)


def test_one_row_makes_data_cache_and_dataset_read_it(box_folder, with_box_row):
    assert table.detect_layout(box_folder) == "box"
    assert table.detect_layout(box_folder.parent / "elsewhere") is None  # the other rows are untouched
    cache = resolve_data(box_folder, "all")  # --data: layout -> opener -> cache build -> cache
    assert cache.classes == ["cup", "tea"]  # no class list given: the sorted names found
    by = {Path(r.image).name: r for r in cache.records}
    assert sorted(by) == ["a.jpg", "b.jpg", "c.jpg"] and len(by["c.jpg"]) == 0
    np.testing.assert_allclose(by["a.jpg"].boxes, [[4, 6, 20, 30], [30, 10, 60, 40]])
    assert by["a.jpg"].labels.tolist() == [0, 1] and by["b.jpg"].labels.tolist() == [1]
    assert (by["a.jpg"].width, by["a.jpg"].height) == (W, H)
    assert [(Path(p.file).name, p.kind) for p in cache.problems] == [("b.box", "bad_label")]

    dataset = DetectionDataset(cache.records, eval_transform(32))
    images, target = dataset[[Path(r.image).name for r in cache.records].index("a.jpg")]
    assert tuple(images.shape) == (3, 32, 32)  # letterboxed: 64 x 48 -> 32 x 24, boxes scaled by 0.5
    np.testing.assert_allclose(target["boxes"].numpy(), [[2, 3, 10, 15], [15, 5, 30, 20]], atol=1e-4)
    assert target["labels"].tolist() == [0, 1]


def test_the_cache_of_a_new_format_is_incremental(box_folder, with_box_row, tmp_path):
    src = open_data(box_folder)
    out = tmp_path / "box.pkl"
    first = src.build("all", out)
    assert not first.up_to_date and len(first.parsed) == 3
    assert src.build("all", out).up_to_date  # nothing changed: the header alone
    text(box_folder / "c.box", "cup 0 0 8 8\n")
    again = src.build("all", out)
    assert [Path(p).name for p in again.parsed] == ["c.box"] and again.reused == 2
    assert [len(r) for r in again.cache.records] == [2, 1, 1]


def test_convert_reads_and_writes_it_through_the_table(box_folder, with_box_row, tmp_path):
    from detect.data.convert.converter import convert

    assert "box" in table.writers() and "a folder of images with .box files" in table.accepted()
    res = convert(str(box_folder), "box", tmp_path / "copy")  # read through its opener, written by its planner
    assert res["splits"] == {"all": (3, 3)}
    back = resolve_data(tmp_path / "copy", "all")
    before = resolve_data(box_folder, "all")
    assert back.classes == before.classes
    for a, b in zip(before.records, back.records):
        np.testing.assert_allclose(a.boxes, b.boxes)
        assert a.labels.tolist() == b.labels.tolist()
    res = convert(str(box_folder), "voc", tmp_path / "voc")  # and into the formats that were there
    assert res["splits"] == {"all": (3, 3)} and (tmp_path / "voc" / "Annotations" / "a.xml").is_file()
