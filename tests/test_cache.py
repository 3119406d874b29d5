"""Annotation caches: round trip, incremental rebuilds, first-build stats, the CLI's exit codes,
outputs it refuses and problem reports, and the two shared datasets (the parse pool:
test_parse_pool.py; damaged and unsafe caches: test_cache_damage.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detect.data.cache.build as cache_build
from detect.cli import main
from detect.data import Cache, build_cache, load_cache
from detect.data.cache.cache_file import problems_path

OBJ = "<object><name>{}</name><truncated>{}</truncated><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"


def write_voc(path: Path, objs, size=(64, 48), filename=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(OBJ.format(n, t, *b) for n, b, t in ((o[0], o[1], o[2] if len(o) > 2 else 0) for o in objs))
    path.write_text(
        f"<annotation><filename>{filename or path.stem + '.png'}</filename>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{body}</annotation>"
    )
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Per-class layout: annotations/<class>/<STEM>.xml + images/<class>/<STEM>.jpg, with a
    negative image, a degenerate box, an out-of-image box and a corrupt (all-NUL) XML."""
    root = tmp_path / "ds"
    specs = {
        "cup/CUP0": [("cup", (1, 1, 20, 20), 1), ("cup", (30, 5, 60, 40))],
        "cup/CUP1": [("cup", (5, 5, 5, 30))],  # degenerate (zero width)
        "tea/TEA0": [("tea", (10, 10, 70, 40))],  # past the 64-px width: clipped
        "tea/TEA1": [],  # no <object>: a negative image
    }
    for sid, objs in specs.items():
        write_voc(root / "annotations" / f"{sid}.xml", objs)
        img = root / "images" / f"{sid}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48)).save(img)
    (root / "annotations/tea/BROKEN.xml").write_bytes(b"\x00" * 64)
    (root / "classes.txt").write_text("cup\ntea\n")
    return root


def build(ds: Path, out: Path, **kw):
    kw.setdefault("images", ds / "images")
    return build_cache(ds / "annotations", out, progress=False, **kw)


def bump(path: Path) -> None:
    """Change a file's mtime for sure (some filesystems have coarse timestamps)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_round_trip(dataset, tmp_path):
    res = build(dataset, tmp_path / "c.pkl", classes=dataset / "classes.txt")
    cache = load_cache(tmp_path / "c.pkl")
    assert isinstance(cache, Cache) and cache.classes == ["cup", "tea"]
    assert [Path(r.annotation).stem for r in cache.records] == ["CUP0", "CUP1", "TEA0", "TEA1"]
    by = {Path(r.annotation).stem: r for r in cache.records}
    np.testing.assert_array_equal(by["CUP0"].boxes, [[0, 0, 20, 20], [29, 4, 60, 40]])
    assert by["CUP0"].labels.tolist() == [0, 0] and by["CUP0"].truncated.tolist() == [True, False]
    assert len(by["CUP1"]) == 0  # its only box was degenerate
    np.testing.assert_array_equal(by["TEA0"].boxes, [[9, 9, 64, 40]])
    assert by["TEA0"].labels.tolist() == [1]
    assert len(by["TEA1"]) == 0 and by["TEA1"].boxes.shape == (0, 4)  # negative kept
    r = by["TEA1"]
    assert r.image == str(dataset / "images/tea/TEA1.jpg") and (r.width, r.height) == (64, 48)
    assert sorted((Path(p.file).name, p.kind) for p in cache.problems) == [
        ("BROKEN.xml", "parse_error"), ("CUP1.xml", "degenerate_box"), ("TEA0.xml", "box_clipped")]
    for a, b in zip(cache.records, res.cache.records):
        assert a.image == b.image and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
    lines = problems_path(tmp_path / "c.pkl").read_text().splitlines()
    assert lines[0] == "file\tkind\tmessage" and len(lines) == 4
    assert all(len(line.split("\t")) == 3 for line in lines)


def test_first_build_stats_files_as_it_reads_them_and_a_rerun_agrees(dataset, tmp_path, monkeypatch):
    """A first build walks without a stat per XML file (the parser's fstat gives size and
    mtime); a re-run's walk stats them, and finds the cache up to date. A link to nowhere is
    left out by both (it cannot be stat-ed), a FIFO is kept and reported by both."""
    import detect.data.images as images

    ann = dataset / "annotations"
    (ann / "cup/GONE.xml").symlink_to(tmp_path / "nowhere.xml")
    os.mkfifo(ann / "tea/FIFO.xml")
    stats = []
    real_walk = images.walk_files

    def walk(*a, **kw):
        stats.append(tuple(kw.get("stat", ())))
        return real_walk(*a, **kw)

    monkeypatch.setattr("detect.data.cache.xml2pkl.walk_files", walk)
    out = tmp_path / "c.pkl"
    first = build(dataset, out)
    assert stats[0][:1] == (False,) and "cup/GONE.xml" not in first.data["files"]["rel"]
    files = first.data["files"]
    i = files["rel"].index("cup/CUP0.xml")
    st = (ann / "cup/CUP0.xml").stat()
    assert (files["size"][i], files["mtime"][i]) == (st.st_size, st.st_mtime_ns)
    assert files["size"][files["rel"].index("tea/FIFO.xml")] == 0  # the FIFO's own stat, as a walk gives it
    assert "FIFO.xml\tspecial_file\t" in problems_path(out).read_text()
    again = build(dataset, out)
    assert stats[1][:1] == (True,) and again.up_to_date


def test_incremental_rebuild_reparses_only_changed_files(dataset, tmp_path):
    out = tmp_path / "c.pkl"
    first = build(dataset, out)
    assert sorted(first.parsed) == sorted(["cup/CUP0.xml", "cup/CUP1.xml", "tea/BROKEN.xml", "tea/TEA0.xml", "tea/TEA1.xml"])
    mtime = out.stat().st_mtime_ns
    again = build(dataset, out)
    assert again.up_to_date and again.parsed == [] and again.reused == 5
    assert "data" not in vars(again)  # decided from the header: the payload was not unpickled
    assert again.summary["records"] == 4 and again.summary["kinds"] == first.summary["kinds"]
    assert out.stat().st_mtime_ns == mtime  # nothing rewritten

    write_voc(dataset / "annotations/cup/CUP0.xml", [("cup", (1, 1, 10, 10))])  # edit one file
    bump(dataset / "annotations/cup/CUP0.xml")
    res = build(dataset, out)
    assert res.parsed == ["cup/CUP0.xml"] and res.reused == 4
    np.testing.assert_array_equal(res.cache.records[0].boxes, [[0, 0, 10, 10]])

    write_voc(dataset / "annotations/cup/CUP2.xml", [("cup", (2, 2, 9, 9))])  # add one
    Image.new("RGB", (64, 48)).save(dataset / "images/cup/CUP2.jpg")
    res = build(dataset, out)
    assert res.parsed == ["cup/CUP2.xml"] and len(res.cache.records) == 5

    (dataset / "annotations/tea/TEA0.xml").unlink()  # remove one
    res = build(dataset, out)
    assert res.parsed == [] and not res.up_to_date
    assert [Path(r.annotation).stem for r in res.cache.records] == ["CUP0", "CUP1", "CUP2", "TEA1"]
    assert "TEA0.xml" not in problems_path(out).read_text()  # its problem went with it

    Image.new("RGB", (32, 48)).save(dataset / "images/cup/CUP1.jpg")  # an image changes size
    bump(dataset / "images/cup/CUP1.jpg")
    res = build(dataset, out)
    assert res.parsed == ["cup/CUP1.xml"]
    assert [p.kind for p in res.problems if p.file.endswith("CUP1.xml")] == ["size_mismatch", "degenerate_box"]

    # the incremental result equals a fresh build
    fresh = build(dataset, tmp_path / "fresh.pkl")
    for a, b in zip(res.cache.records, fresh.cache.records):
        assert (a.image, a.width, a.height) == (b.image, b.width, b.height) and np.array_equal(a.boxes, b.boxes)
    assert [(p.file, p.kind) for p in res.problems] == [(p.file, p.kind) for p in fresh.problems]


def test_split_and_classes(dataset, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("cup/CUP0\nTEA0\nnope/MISSING\n")
    (tmp_path / "classes.txt").write_text("tea\n")
    res = build(dataset, tmp_path / "c.pkl", classes=tmp_path / "classes.txt", split=split)
    assert [Path(r.annotation).stem for r in res.cache.records] == ["CUP0", "TEA0"]
    assert res.cache.records[0].boxes.shape == (0, 4)  # cup is not a class here
    kinds = sorted((Path(p.file).name, p.kind) for p in res.problems)
    assert kinds == [("CUP0.xml", "unknown_class"), ("TEA0.xml", "box_clipped"), ("split.txt", "split_id_not_found")]
    # without a class file: the sorted union of names, the same for every split
    res = build(dataset, tmp_path / "d.pkl", split=["tea/TEA1"])
    assert res.cache.classes == ["cup", "tea"] and len(res.cache.records) == 1


def test_missing_images(dataset, tmp_path):
    (dataset / "images/cup/CUP0.jpg").unlink()
    res = build(dataset, tmp_path / "c.pkl")
    assert "CUP0" not in [Path(r.annotation).stem for r in res.cache.records]
    assert ("CUP0.xml", "missing_image") in [(Path(p.file).name, p.kind) for p in res.problems]
    # no --images: annotation-only cache; images found in the sibling images/ folder are used
    res = build_cache(dataset / "annotations", tmp_path / "d.pkl", progress=False)
    by = {Path(r.annotation).stem: r for r in res.cache.records}
    assert by["CUP0"].image == "" and by["TEA0"].image == str(dataset / "images/tea/TEA0.jpg")


def test_cli_exit_codes_and_summary(dataset, tmp_path, capsys):
    args = ["xml2pkl", str(dataset / "annotations"), "--images", str(dataset / "images"), "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "c.pkl")]) == 0
    err = capsys.readouterr().err
    assert "5 XML files" in err and "4 images" in err and "3 problems" in err
    assert "degenerate_box 1" in err and "BROKEN.xml: [parse_error]" in err
    assert main([*args, "-o", str(tmp_path / "c.pkl"), "--strict"]) == 1
    assert main(["xml2pkl", str(tmp_path / "nope"), "-o", str(tmp_path / "x.pkl")]) == 2
    assert main([*args[:2], "--images", str(tmp_path / "nope"), "-o", str(tmp_path / "x.pkl")]) == 2
    assert main([*args, "-o", str(tmp_path)]) == 2  # a folder
    (tmp_path / "file").write_text("")
    assert main([*args, "-o", str(tmp_path / "file" / "c.pkl")]) == 2  # parent is a file
    assert main([*args, "-o", str(tmp_path / "y.pkl"), "--classes", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "is a folder" in err and "cannot read class file" in err
    clean = tmp_path / "clean"
    write_voc(clean / "a.xml", [("cup", (1, 1, 9, 9))])
    assert main(["xml2pkl", str(clean), "-o", str(tmp_path / "z.pkl"), "--strict"]) == 0


# -- the shared datasets ("Done when") ----------------------------------------------------------
def test_groceries_all_cached_fish0041_reported(shared_data, tmp_path):
    g = shared_data / "groceries-voc"
    res = build_cache(g / "annotations", tmp_path / "g.pkl", images=g / "images", classes=g / "classes.txt", progress=False)
    assert len(res.cache.records) == 2720 and len(res.cache.classes) == 25
    assert all(r.image and (r.width, r.height) == (224, 224) for r in res.cache.records)
    assert [(Path(p.file).name, p.kind) for p in res.problems] == [("FISH0041.xml", "degenerate_box")]
    fish = next(r for r in res.cache.records if r.annotation.endswith("FISH0041.xml"))
    assert fish.image.endswith("images/fish/FISH0041.jpg") and len(fish) == 2
    val = build_cache(g / "annotations", tmp_path / "v.pkl", images=g / "images", split=g / "splits/val.txt", progress=False)
    assert len(val.cache.records) == 160 and val.problems == []  # FISH0041 is a train image
    assert val.cache.classes == res.cache.classes  # same class list without a class file
    assert build_cache(g / "annotations", tmp_path / "g.pkl", images=g / "images", classes=g / "classes.txt", progress=False).up_to_date


def test_quirks_folder_cached_nothing_lost(shared_data, tmp_path):
    q = shared_data / "voc-xml-quirks"
    res = build_cache(q, tmp_path / "q.pkl", progress=False)
    assert len(res.cache.records) == 32  # every file, the negative one included
    assert sum(len(r) for r in res.cache.records) == 196 - 2  # all objects but the 2 degenerate
    assert sorted((Path(p.file).name, p.kind) for p in res.problems) == [
        ("HaiShen__CHN083846_0000.xml", "missing_size"),
        ("TigerandRosa__000057.xml", "degenerate_box"),
        ("datumaro__voc_dataset2_a.xml", "missing_size"),
        ("groceries5k__FISH0041.xml", "degenerate_box"),
    ]


def test_rerun_process_is_up_to_date_without_numpy_and_reparses_a_changed_file(dataset, tmp_path):
    """``detect xml2pkl`` as a whole process: on unchanged inputs it says "up to date" and
    imports neither numpy nor the parsers (issue 14: the imports cost more than the stat calls);
    a changed file is parsed again and its new boxes are in the cache."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "c.pkl"
    heavy = ("numpy", "lxml", "torch", "yaml", "cv2", "PIL", "tqdm", "tempfile", "dataclasses")  # the last two: ~17 ms
    code = ("import sys; from detect.cli import main; rc = main(sys.argv[1:]); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))); sys.exit(rc)")

    def run() -> tuple[str, str]:
        p = subprocess.run([sys.executable, "-c", code, "xml2pkl", str(dataset / "annotations"), "--images", str(dataset / "images"),
                            "-o", str(out), "--no-progress"], capture_output=True, text=True, timeout=120, cwd=root)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip().splitlines()[-1], p.stderr

    loaded, err = run()
    assert "5 parsed, 0 reused" in err and "numpy" in loaded
    loaded, err = run()
    assert "(up to date, nothing re-parsed)" in err and "4 images" in err and "problems" in err
    assert loaded == "[]"  # nothing heavy imported
    write_voc(dataset / "annotations/cup/CUP0.xml", [("cup", (1, 1, 10, 10))])
    bump(dataset / "annotations/cup/CUP0.xml")
    loaded, err = run()
    assert "1 parsed, 4 reused" in err
    np.testing.assert_array_equal(load_cache(out).records[0].boxes, [[0, 0, 10, 10]])


# -- issue 13: outputs that are not new paths or regular files, or are inputs -------------------
def test_output_device_fifo_or_input_refused(dataset, tmp_path, capsys):
    import stat

    args = ["xml2pkl", str(dataset / "annotations"), "--images", str(dataset / "images"), "--no-progress", "-o"]
    os.mkfifo(tmp_path / "fifo.pkl")  # reading it as the old cache blocked forever
    assert main([*args, str(tmp_path / "fifo.pkl")]) == 2
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.pkl").st_mode)
    import threading

    assert not [t for t in threading.enumerate() if t.name == "xml2pkl-cache-reader"]  # no reader left blocked on it
    if os.geteuid() == 0:  # as root the device node was replaced by a regular file
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        assert main([*args, str(tmp_path / "null")]) == 2
        assert stat.S_ISCHR(os.lstat(tmp_path / "null").st_mode)
    xml = dataset / "annotations/cup/CUP0.xml"
    before = xml.read_bytes()
    assert main([*args, str(xml)]) == 2  # the cache replaced an annotation
    assert xml.read_bytes() == before
    image = dataset / "images/cup/CUP0.jpg"
    before_image = image.read_bytes()
    assert main([*args, str(image)]) == 2
    assert image.read_bytes() == before_image
    err = capsys.readouterr().err
    assert "fifo.pkl is a FIFO" in err and f"{xml} is one of the inputs" in err and f"{image} is one of the inputs" in err
    # the problems file written beside the cache must not replace an input either
    classes = tmp_path / "c.problems.txt"
    classes.write_text("cup\ntea\n")
    assert main([*args, str(tmp_path / "c.pkl"), "--classes", str(classes)]) == 2
    assert classes.read_text() == "cup\ntea\n" and not (tmp_path / "c.pkl").exists()
    assert "c.problems.txt is one of the inputs" in capsys.readouterr().err


def test_special_xml_files_reported_not_read(dataset, tmp_path, capsys):
    ann = dataset / "annotations"
    os.mkfifo(ann / "cup" / "FIFO.xml")  # xml2pkl hung on it forever
    os.symlink("/dev/zero", ann / "tea" / "ZERO.xml")  # read until memory ran out
    args = ["xml2pkl", str(ann), "--images", str(dataset / "images"), "--no-progress", "-o", str(tmp_path / "c.pkl")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "FIFO.xml: [special_file] a FIFO (named pipe), not a regular file; not read" in err
    assert "ZERO.xml: [link_outside] symlink to /dev/zero, outside the annotation folder" in err
    assert len(load_cache(tmp_path / "c.pkl").records) == 4  # the rest is cached
    # a size cap with an option to raise it; the option is part of the fingerprint
    assert main([*args, "--max-xml-bytes", "100"]) == 0
    err = capsys.readouterr().err
    assert "[too_large]" in err and "over the limit of 100 bytes" in err and "--max-xml-bytes" in err
    assert len(load_cache(tmp_path / "c.pkl").records) == 0
    with pytest.raises(SystemExit) as e:  # argparse checks the option (detect.checks): a usage error
        main([*args, "--max-xml-bytes", "0"])
    assert e.value.code == 2 and "--max-xml-bytes: must be >= 1, got 0" in capsys.readouterr().err


def test_huge_size_is_a_problem_of_that_file_only(dataset, tmp_path):
    """<width> of 2**31 or more crashed columns.pack (int32) and no cache was written at all."""
    for i, value in enumerate(["2147483648", "1e12", "1e300"]):
        write_voc(dataset / "annotations" / "cup" / f"HUGE{i}.xml", [("cup", (1, 1, 9, 9))], size=(value, 48))
    res = build_cache(dataset / "annotations", tmp_path / "c.pkl", progress=False)
    huge = [p for p in res.problems if "HUGE" in p.file]
    assert len(huge) == 3 and {p.kind for p in huge} == {"missing_size"}
    assert len(load_cache(tmp_path / "c.pkl").records) == 7  # the four good ones, the three without a size


def test_problems_file_rows_survive_tabs_and_newlines_in_file_names(dataset, tmp_path):
    from detect.data.cache.cache_file import unescape_field

    odd = dataset / "annotations" / "cup" / "we\tird\nname\\x.xml"
    write_voc(odd, [("cup", (5, 5, 5, 9))], filename="CUP1.jpg")  # a degenerate box: one problem
    res = build(dataset, tmp_path / "c.pkl")
    rows = [line.split("\t") for line in problems_path(tmp_path / "c.pkl").read_text().splitlines()]
    assert all(len(r) == 3 for r in rows) and len(rows) == 1 + len(res.problems)  # the name split rows before
    assert any(r[0].endswith(r"we\tird\nname\\x.xml") for r in rows)  # escaped, and back:
    assert str(odd) in [unescape_field(r[0]) for r in rows]


def test_problems_file_always_agrees_with_the_cache(dataset, tmp_path, monkeypatch, capsys):
    """A crash between writing the cache and writing problems.txt left a stale list that the next
    run called 'up to date, N problems'."""
    from detect.data.cache.cache_file import problems_text

    out = tmp_path / "c.pkl"
    build(dataset, out)
    write_voc(dataset / "annotations/tea/TEA1.xml", [("tea", (9, 9, 9, 20)), ("tea", (1, 1, 99, 9))])  # 2 more
    bump(dataset / "annotations/tea/TEA1.xml")

    def die(*args, **kwargs):
        raise SystemExit(9)  # the process dies after the cache, before its problems file

    monkeypatch.setattr(cache_build, "atomic_write_text", die)
    with pytest.raises(SystemExit):
        build(dataset, out)
    monkeypatch.undo()
    capsys.readouterr()
    res = build(dataset, out, log=None)
    assert res.up_to_date and res.summary["problems"] == 5
    assert problems_path(out).read_text() == problems_text([(p.file, p.kind, p.message) for p in load_cache(out).problems])
    assert "rewritten from the cache" in capsys.readouterr().err
    problems_path(out).unlink()  # a lost problems file comes back without parsing anything
    res = build(dataset, out)
    assert res.up_to_date and len(problems_path(out).read_text().splitlines()) == 6
