"""Issue 24: hostile dataset files (YOLO, COCO, detections.jsonl, data.yaml, dataset YAML) and
what `detect convert` writes. Each test reproduces one reported defect: exit 1 or 2 with a
message naming the file, no traceback, no hang, no input changed, nothing outside the dataset
read. FIFO tests run the command in a daemon thread, so a regression fails instead of hanging."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from dataset_fixtures import coco2017, image, roboflow_yolo, text, voc_xml

from detect.cli import main
from detect.data.spec import resolve_data


@pytest.fixture(autouse=True)
def _isolated_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)


def run(*args, timeout: float = 60.0) -> int:
    """``detect ARGS`` in a daemon thread: its exit code, or a failure after ``timeout`` s (a hang)."""
    got: list = []

    def call() -> None:
        try:
            got.append(main([str(a) for a in args]))
        except BaseException as e:  # a traceback: re-raised in the test's thread
            got.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout)
    assert got, f"detect {' '.join(map(str, args))} hung for {timeout} s"
    if isinstance(got[0], BaseException):
        raise got[0]
    return got[0]


def convert(src, to, out, *more) -> int:
    return run("convert", "--no-progress", src, "--to", to, "-o", out, *more)


def one_image_yolo(root: Path, label: str = "0 0.5 0.5 0.5 0.5\n", names: str = "[cup]") -> Path:
    image(root / "images" / "train" / "a.jpg")
    image(root / "images" / "val" / "v.jpg")
    text(root / "labels" / "train" / "a.txt", label)
    text(root / "labels" / "val" / "v.txt", "0 0.5 0.5 0.2 0.2\n")
    return text(root / "data.yaml", f"train: images/train\nval: images/val\nnames: {names}\n")


# -- data destroyed or leaked (items 2, 12, 16) ---------------------------------------------------
def test_jsonl_source_that_is_not_an_image_is_never_copied(tmp_path, capsys):
    """Item 2: a detections.jsonl row whose source is /etc/passwd copied it into the output."""
    image(tmp_path / "shots" / "s1.jpg")
    rows = [{"source": "/etc/passwd", "width": 64, "height": 48, "detections": []},
            {"source": str(tmp_path / "shots" / "s1.jpg"), "width": 64, "height": 48,
             "detections": [{"box": [1, 2, 20, 30], "label": 0, "name": "cup", "score": 0.9}]}]
    text(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert convert(tmp_path / "d.jsonl", "yolo", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "/etc/passwd: [bad_image]" in err and "not an image file" in err
    assert sorted(p.name for p in (tmp_path / "out" / "images").rglob("*") if p.is_file()) == ["s1.jpg"]


def test_jsonl_size_that_differs_from_the_image_is_skipped(tmp_path, capsys):
    """Item 18: width/height of a row were trusted over the real image (6400x4800 for 64x48)."""
    image(tmp_path / "s.jpg")
    row = {"source": str(tmp_path / "s.jpg"), "width": 6400, "height": 4800,
           "detections": [{"box": [100, 100, 3000, 3000], "label": 0, "name": "cup", "score": 0.9}]}
    text(tmp_path / "d.jsonl", json.dumps(row) + "\n")
    assert convert(tmp_path / "d.jsonl", "voc", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "size_mismatch" in err and "6400x4800 but the image is 64x48" in err


@pytest.mark.parametrize("line", ['{"source": "s.jpg", "width": Infinity, "height": 48, "detections": []}',
                                  '{"source": "s.jpg", "width": 64, "height": 48, "detections": [{"box": [1, 1, 5, 5], '
                                  '"label": 1e400, "name": "a"}]}',
                                  '{"source": "s.jpg", "width": 64, "height": 48, "detections": [{"box": '
                                  '[1' + "0" * 400 + ', 1, 5, 5], "label": 0, "name": "a"}]}',
                                  "[" * 100_000 + "]" * 100_000])
def test_jsonl_hostile_numbers_and_nesting_are_problems(line, tmp_path, capsys):
    """Item 10: `"width": Infinity`, `"label": 1e400`, a 400-digit number (OverflowError), deep
    nesting (RecursionError)."""
    image(tmp_path / "s.jpg")
    text(tmp_path / "d.jsonl", line + "\n")
    assert convert(tmp_path / "d.jsonl", "voc", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("bad_entry" in err or "bad_box" in err), err


def test_dataset_yaml_class_and_split_files_inside_the_output_are_refused(tmp_path, capsys):
    """Item 12: a dataset YAML whose class or split file lies inside -o was overwritten (exit 0)."""
    ds = tmp_path / "ds"
    image(ds / "img" / "a.jpg")
    text(ds / "ann" / "a.xml", voc_xml("a.jpg", [("cup", (2, 2, 30, 30))]))
    out = tmp_path / "out"
    classes = text(out / "classes.txt", "cup\n")
    split = text(out / "ImageSets" / "Main" / "train.txt", "a\n")
    spec = text(tmp_path / "ds.yaml", f"root: {ds}\nannotations: ann\nimages: img\nclasses: {classes}\n"
                                      f"splits:\n  train: {split}\n")
    before = (classes.read_bytes(), split.read_bytes())
    assert convert(spec, "voc", out) == 2
    assert "would overwrite the input file" in capsys.readouterr().err
    assert (classes.read_bytes(), split.read_bytes()) == before


def test_yolo_split_that_does_not_exist_is_a_usage_error(tmp_path, capsys):
    """Item 16: `train: images/nope` made the train split vanish (exit 0); val was then used as train."""
    one_image_yolo(tmp_path / "y")
    text(tmp_path / "y" / "data.yaml", "train: images/nope\nval: images/val\nnames: [cup]\n")
    assert convert(tmp_path / "y", "yolo", tmp_path / "out") == 2
    assert "'train: images/nope' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_synth_with_an_empty_test_split_converts_and_splits_merge_into_one_folder(tmp_path, capsys):
    """Item 16: converting a `detect synth` folder whose test split is empty failed; converting split
    by split into one folder rewrote data.yaml to `train: images/val` (a training would use val)."""
    from detect.data.synth import render_dataset

    render_dataset(tmp_path / "voc", 6, seed=1, size=64, progress=False)
    (tmp_path / "voc" / "ImageSets" / "Main" / "test.txt").write_text("")
    assert convert(tmp_path / "voc", "yolo", tmp_path / "all") == 0, capsys.readouterr().err
    out = tmp_path / "y"
    assert convert(tmp_path / "voc", "yolo", out, "--split", "val") == 0
    d = yaml.safe_load((out / "data.yaml").read_text())
    assert "train" not in d and d["val"] == "images/val"
    assert convert(tmp_path / "voc", "yolo", out, "--split", "train") == 0
    d = yaml.safe_load((out / "data.yaml").read_text())
    assert d["train"] == "images/train" and d["val"] == "images/val"
    voc = tmp_path / "v"
    assert convert(tmp_path / "voc", "voc", voc, "--split", "val") == 0
    assert convert(tmp_path / "voc", "voc", voc, "--split", "train") == 0
    assert len(resolve_data(voc, "val").records) and len(resolve_data(voc, "train").records)


# -- hangs and unbounded reads (items 4, 5, 6, 7) -------------------------------------------------
@pytest.mark.parametrize("where", ["notes.yaml", "data.yaml", "label", "coco"])
def test_fifos_are_refused_not_read(where, tmp_path, capsys):
    """Item 4: a notes.yaml FIFO at the top of a --data folder, a data.yaml FIFO, a YOLO label FIFO,
    annotations/instances_train.json as a FIFO: each hung until killed."""
    if where == "coco":
        coco2017(tmp_path / "d")
        src = tmp_path / "d"
        fifo = src / "annotations" / "instances_train2017.json"
        fifo.unlink()
    else:
        one_image_yolo(tmp_path / "d")
        src = tmp_path / "d"
        fifo = {"notes.yaml": src / "notes.yaml", "data.yaml": src / "data.yaml", "label": src / "labels" / "train" / "a.txt"}[where]
        fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    code = convert(src, "voc", tmp_path / "out")
    err = capsys.readouterr().err
    assert code in (0, 1, 2) and "Traceback" not in err
    if where != "notes.yaml":
        assert code in (1, 2) and "FIFO" in err and fifo.name in err, err


@pytest.mark.parametrize("what", ["label", "coco", "data.yaml"])
def test_links_to_dev_zero_and_out_of_the_dataset_are_not_read(what, tmp_path, capsys):
    """Items 5, 6: a symlink to /dev/zero read until MemoryError; a YOLO label linked to /etc/passwd
    was read and its lines echoed into problems.txt and stderr."""
    if what == "coco":
        coco2017(tmp_path / "d")
        target = tmp_path / "d" / "annotations" / "instances_train2017.json"
        target.unlink()
        os.symlink("/dev/zero", target)
    else:
        one_image_yolo(tmp_path / "d")
        target = tmp_path / "d" / ("labels/train/a.txt" if what == "label" else "data.yaml")
        target.unlink()
        os.symlink("/etc/passwd" if what == "label" else "/dev/zero", target)
    code = convert(tmp_path / "d", "voc", tmp_path / "out")
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err
    assert "root:" not in err, "a line of /etc/passwd was echoed"
    report = tmp_path / "out" / "convert.problems.txt"
    assert not report.exists() or "root:" not in report.read_text()
    assert ("link_outside" in err or "character device" in err or "outside the dataset" in err), err


def test_large_data_yaml_is_refused_and_billion_laughs_and_huge_nc_are_usage_errors(tmp_path, capsys):
    """Items 5, 7: a 15 MB data.yaml cost 90 s and 1.2 GB; 583 bytes of aliases in names, or
    `nc: 99999999999`, ended in a MemoryError traceback."""
    root = tmp_path / "y"
    one_image_yolo(root)
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    for body, message in ((laughs + "train: images/train\nval: images/val\nnames: *i\n", "aliases are expanded"),
                          ("train: images/train\nval: images/val\nnc: 99999999999\n", "'nc' must be a number of classes"),
                          ("train: images/train\n# " + "x" * (5 << 20) + "\n", "over the limit")):
        (root / "data.yaml").write_text(body)
        t = time.perf_counter()
        assert run("convert", "--no-progress", root, "--to", "voc", "-o", tmp_path / "out") == 2
        err = capsys.readouterr().err
        assert message in err and "data.yaml" in err and "Traceback" not in err, err
        assert time.perf_counter() - t < 30


@pytest.mark.parametrize("kind", ["coco", "data.yaml", "dataset_yaml"])
def test_deep_nesting_is_a_message(kind, tmp_path, capsys):
    """Item 10: deeply nested COCO JSON, data.yaml or dataset YAML: RecursionError traceback."""
    if kind == "coco":
        coco2017(tmp_path / "d")
        (tmp_path / "d" / "annotations" / "instances_train2017.json").write_text("[" * 50_000 + "]" * 50_000)
        src = tmp_path / "d"
    elif kind == "data.yaml":
        one_image_yolo(tmp_path / "d")
        (tmp_path / "d" / "data.yaml").write_text("train: images/train\nnames: " + "[" * 50_000 + "]" * 50_000 + "\n")
        src = tmp_path / "d"
    else:
        src = text(tmp_path / "spec.yaml", "root: .\nannotations: " + "[" * 50_000 + "]" * 50_000 + "\n")
    code = convert(src, "voc", tmp_path / "out")
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err and "nest" in err, err


def test_data_yaml_with_a_python_tag_says_so(tmp_path, capsys):
    """Item 20: a folder whose data.yaml has a `!!python/object` tag was "not a dataset layout I know"."""
    one_image_yolo(tmp_path / "d")
    (tmp_path / "d" / "data.yaml").write_text("train: !!python/object/apply:os.system ['true']\nnames: [cup]\n")
    assert convert(tmp_path / "d", "voc", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "data.yaml" in err and "python/object" in err and "not a dataset layout I know" not in err


# -- tracebacks (items 8, 11, 17) and the quadratic check (15) -----------------------------------
def test_non_utf8_file_names(tmp_path, capsys):
    """Item 8: a non-UTF-8 file name with any problem crashed xml2pkl's and convert's problems
    digest (UnicodeEncodeError); convert --to coco|voc crashed on such an image name and left
    partial output."""
    bad = os.fsdecode(b"caf\xe9")
    root = tmp_path / "voc"
    image(root / "JPEGImages" / "a.jpg")
    (root / "Annotations").mkdir()
    with open(root / "Annotations" / f"{bad}.xml", "w", encoding="utf-8") as f:  # a degenerate box: one problem
        f.write(voc_xml("a.jpg", [("cup", (2, 2, 30, 30)), ("cup", (5, 5, 5, 9))]))
    assert run("xml2pkl", root / "Annotations", "--images", root / "JPEGImages", "-o", tmp_path / "c.pkl") == 0
    assert "caf\\xe9.xml" in (tmp_path / "c.problems.txt").read_text()
    assert run("xml2pkl", root / "Annotations", "--images", root / "JPEGImages", "-o", tmp_path / "c.pkl") == 0  # up to date
    cache = resolve_data(root, "all")  # what train and val resolve: no codec error on the way
    assert len(cache.records) == 1 and all(str(p).encode("utf-8") for p in cache.problems)  # printable to a strict stream
    y = tmp_path / "y"
    one_image_yolo(y, label="0 0.5 0.5 0.5 0.5\n9 0.5 0.5 0.1 0.1\n")  # an unknown class: one problem
    os.rename(y / "images" / "train" / "a.jpg", y / "images" / "train" / f"{bad}.jpg")  # OpenCV cannot write that name
    os.rename(y / "labels" / "train" / "a.txt", y / "labels" / "train" / f"{bad}.txt")
    for to in ("coco", "voc", "yolo"):
        assert convert(y, to, tmp_path / to) == 0
        assert "Traceback" not in capsys.readouterr().err
        assert any(p.name == "caf_.jpg" for p in (tmp_path / to).rglob("*.jpg"))
        assert sum(len(r) for r in resolve_data(tmp_path / to, "train").records) == 1


@pytest.mark.parametrize("name", ["a\x00b", "a\x01b", "two\nlines"])
def test_class_names_with_control_characters_are_refused_before_writing(name, tmp_path, capsys):
    """Item 11: a NUL or \\x01 in a class name crashed `convert --to voc` inside lxml after copying
    an image; a newline made a 3-line classes.txt for 2 classes and lost that class's boxes (exit 0)."""
    one_image_yolo(tmp_path / "y", names=json.dumps(["cup", name]))
    for to in ("voc", "yolo", "coco"):
        assert convert(tmp_path / "y", to, tmp_path / to) == 2
        err = capsys.readouterr().err
        assert "cannot be written" in err and "control character" in err
        assert not (tmp_path / to).exists() or not any((tmp_path / to).rglob("*.jpg"))


def test_coco_bbox_string_bool_and_yolo_float_names_key(tmp_path, capsys):
    """Item 17: COCO bbox "1234" read as [1, 2, 3, 4]; true accepted as 1; names key 0.5 read as 0."""
    coco2017(tmp_path / "c")
    doc = json.loads((tmp_path / "c" / "annotations" / "instances_train2017.json").read_text())
    doc["annotations"] = [{"id": 1, "image_id": 1, "category_id": 5, "bbox": "1234"},
                          {"id": 2, "image_id": 1, "category_id": 5, "bbox": [True, 2, 20, 20]}]
    (tmp_path / "c" / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    cache = resolve_data(tmp_path / "c", "train2017")
    assert sum(len(r) for r in cache.records) == 0
    assert sum("is not [x, y, w, h]" in p.message for p in cache.problems) == 2
    one_image_yolo(tmp_path / "y")
    (tmp_path / "y" / "data.yaml").write_text("train: images/train\nval: images/val\nnames: {0.5: cup}\n")
    assert convert(tmp_path / "y", "voc", tmp_path / "out") == 2
    assert "'names' keys must be class ids" in capsys.readouterr().err


def test_many_class_names_are_checked_in_linear_time(tmp_path):
    """Item 15: the duplicate-name check of data.yaml was quadratic (40,000 names: 16 s)."""
    from detect.data.formats.yolo import read_data_yaml

    one_image_yolo(tmp_path / "y")
    names = [f"product_{i}" for i in range(40_000)]
    (tmp_path / "y" / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": names}))
    t = time.perf_counter()
    assert read_data_yaml(tmp_path / "y" / "data.yaml").names == names
    assert time.perf_counter() - t < 5  # the quadratic check alone took 16 s


def test_a_yolo_label_linked_inside_the_dataset_is_read(tmp_path):
    """The link rule refuses only links leading out of the dataset."""
    root = tmp_path / "y"
    one_image_yolo(root)
    text(root / "shared" / "a.txt", "0 0.5 0.5 0.5 0.5\n")
    (root / "labels" / "train" / "a.txt").unlink()
    os.symlink(root / "shared" / "a.txt", root / "labels" / "train" / "a.txt")
    assert len(resolve_data(root, "train").records[0]) == 1


def test_roboflow_missing_test_folder_still_converts(tmp_path):
    """Roboflow's data.yaml names a test/ folder it may not have: still not an error."""
    roboflow_yolo(tmp_path / "r")
    assert convert(tmp_path / "r", "voc", tmp_path / "out") in (0, 1)


def test_a_20000_character_class_name_is_shortened_on_the_plots(tmp_path):
    """Item 14: a 20,000-character class name crashed the confusion-matrix plot (bad_alloc), and
    val.json was never written."""
    import numpy as np

    from detect.viz.plots import plot_confusion_matrices, plot_per_class_ap, short_label

    names = ["x" * 20_000, "tea\x01"]
    paths = plot_confusion_matrices(np.eye(3, dtype=np.int64), names, tmp_path)
    assert all(Path(p).stat().st_size > 0 for p in paths)
    assert Path(plot_per_class_ap({names[0]: 0.5, names[1]: 0.7}, tmp_path / "ap.png")).is_file()
    assert len(short_label(names[0])) == 40 and short_label(names[1]) == "tea?"


def test_a_data_yaml_is_parsed_once_per_content(tmp_path, monkeypatch):
    """Item 5: the same data.yaml was parsed three times (layout check, reader, sources)."""
    import detect.readers as R

    one_image_yolo(tmp_path / "y")
    calls = []
    real = R.parse_yaml
    monkeypatch.setattr(R, "parse_yaml", lambda text: calls.append(1) or real(text))
    assert len(resolve_data(tmp_path / "y", "train").records) == 1
    assert len(calls) == 1


def test_predict_list_proposal_file_and_search_space_go_through_the_bounded_reader(tmp_path, capsys):
    """The other files a command reads whole: a predict .txt source list, a .json proposal file, a
    tune search space; a FIFO hung each, deep nesting was a RecursionError."""
    from detect.data.proposal_files import ProposalFileError, load_proposals
    from detect.tune.space import SpaceError, load_space

    os.mkfifo(tmp_path / "list.txt")
    assert run("predict", tmp_path / "list.txt", "--save-dir", tmp_path / "out") == 2
    assert "list of paths" in capsys.readouterr().err
    (tmp_path / "p.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ProposalFileError, match="p.json: not valid JSON"):
        load_proposals(tmp_path / "p.json")
    os.mkfifo(tmp_path / "space.yaml")
    t = threading.Thread(target=lambda: pytest.raises(SpaceError, load_space, tmp_path / "space.yaml"), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "load_space hung on a FIFO"
    with pytest.raises(SpaceError, match="FIFO"):
        load_space(tmp_path / "space.yaml")
