"""VOC XML parsing: the real-world quirks folder file by file, and crafted defects (reading the
file itself, its size, encoding and parser limits: test_xml_file.py).

Boxes are asserted in our convention (0-based xyxy, exclusive x2/y2): VOC ``xmin=123``
becomes ``x1=122``, ``xmax=198`` stays ``x2=198``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detect.data.images import ImageIndex, hint_stems
from detect.data.formats.voc import check_box, convert_box, parse_file, parse_voc


@pytest.fixture(scope="module")
def quirks(shared_data) -> Path:
    d = shared_data / "voc-xml-quirks"
    if not d.is_dir():
        pytest.skip("voc-xml-quirks not present")
    return d


def kinds(problems) -> list[str]:
    return [p.kind if hasattr(p, "kind") else p[0] for p in problems]


def parse(path: Path, **kw):
    """parse_voc with the file's own class names (so no unknown_class noise)."""
    names = sorted(set(parse_file(str(path)).names))
    return parse_voc(path, names, **kw), names


# file -> (boxes kept, width, height, problem kinds); every file of the folder is listed.
EXPECTED = {
    "FeignLion-AI__0001.xml": (1, 726, 1024, []),
    "HaiShen__000005.xml": (1, 853, 640, []),
    "HaiShen__CHN083846_0000.xml": (8, 0, 0, ["missing_size"]),  # URPC: <frame>, no <size>
    "LKLWF-YOLOV3__0001.xml": (1, 960, 540, []),
    "TigerandRosa__000001.xml": (14, 600, 488, []),
    "TigerandRosa__000057.xml": (6, 499, 374, ["degenerate_box"]),  # (1,1,1,1) of 7 objects
    "TigerandRosa__000102_size-mismatch.xml": (6, 1920, 1088, []),  # no image: declared size used
    "TigerandRosa__000162.xml": (3, 416, 559, []),
    "YOLONDD__0.xml": (17, 1280, 960, []),
    "YOLONDD__3037.xml": (1, 256, 538, []),
    "ZhanYejun1__0000.xml": (1, 416, 416, []),
    "datumaro__kaggle_relaxed_voc1_2007_000001.xml": (2, 20, 10, []),
    "datumaro__voc_dataset1_2007_000001.xml": (2, 20, 10, []),
    "datumaro__voc_dataset2_a.xml": (1, 0, 0, ["missing_size"]),
    "dhj1212-yolov5__1.xml": (4, 4864, 3648, []),
    "groceries5k__BEANS0003.xml": (5, 224, 224, []),
    "groceries5k__CEREAL0258.xml": (2, 224, 224, []),
    "groceries5k__FISH0041.xml": (2, 224, 224, ["degenerate_box"]),
    "icevision__samples_voc_2007_000063.xml": (2, 500, 375, []),
    "labelme__bbox_voc_2011_000003.xml": (2, 500, 338, []),
    "laokeaime-test__1.xml": (11, 640, 640, []),
    "liwenchao956-traffic__000001.xml": (1, 533, 400, []),
    "mmdetection__tests_VOC2012_000001.xml": (1, 335, 500, []),
    "ndl-layout__kindai_1029114_5.xml": (48, 1600, 1200, []),
    "ndl-tugidigi__2544473_04.xml": (29, 1600, 1200, []),
    "pothole__1.xml": (1, 572, 300, []),
    "pothole__302_no-objects.xml": (0, 572, 300, []),  # negative image, kept
    "raccoon_dataset__raccoon-1.xml": (1, 650, 417, []),
    "roboflow-python__chess_0af.xml": (13, 765, 512, []),
    "siesen-tea__1.xml": (5, 5028, 2280, []),
    "yxl61-train_model__1.xml": (1, 1279, 725, []),
    "zzkkzz-ssd__000001.xml": (2, 300, 300, []),
}


def test_every_quirks_file_is_listed(quirks):
    assert sorted(p.name for p in quirks.glob("*.xml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quirks_file(quirks, name):
    n_boxes, w, h, problem_kinds = EXPECTED[name]
    (record, problems), names = parse(quirks / name)
    assert record is not None, problems
    assert (record.width, record.height) == (w, h)
    assert kinds(problems) == problem_kinds
    assert all(p.file == str(quirks / name) for p in problems)
    assert record.boxes.dtype == np.float32 and record.boxes.shape == (n_boxes, 4)
    assert record.labels.dtype == np.int64 and record.labels.shape == (n_boxes,)
    assert record.difficult.dtype == bool and record.truncated.shape == (n_boxes,)
    assert record.image == ""  # no images in this folder, none required
    if n_boxes:
        assert (record.boxes[:, 2] > record.boxes[:, 0]).all() and (record.boxes[:, 3] > record.boxes[:, 1]).all()
        if w:
            assert record.boxes.min() >= 0 and (record.boxes[:, 2] <= w).all() and (record.boxes[:, 3] <= h).all()


def test_fish0041_zero_width_box(quirks):
    (record, problems), _ = parse(quirks / "groceries5k__FISH0041.xml")
    np.testing.assert_array_equal(record.boxes, [[122, 58, 198, 183], [18, 64, 120, 193]])
    assert len(problems) == 1 and problems[0].kind == "degenerate_box"
    assert "object 2" in problems[0].message and "xmax 87 <= xmin 87" in problems[0].message


def test_child_order_xmin_xmax_ymin_ymax(quirks):
    (record, _), _ = parse(quirks / "zzkkzz-ssd__000001.xml")
    np.testing.assert_array_equal(record.boxes, [[111, 184, 129, 198], [161, 59, 184, 75]])


def test_float_coordinates(quirks):
    (record, _), _ = parse(quirks / "labelme__bbox_voc_2011_000003.xml")
    np.testing.assert_allclose(record.boxes[0], [190, 106.369004, 313, 329.369004], rtol=1e-6)
    (record, _), _ = parse(quirks / "datumaro__voc_dataset2_a.xml")  # "1.0" style, no <size>
    np.testing.assert_array_equal(record.boxes, [[0, 1, 4, 6]])


def test_part_and_actions_ignored_flags_read(quirks):
    (record, _), names = parse(quirks / "datumaro__voc_dataset1_2007_000001.xml")
    assert names == ["cat", "person"]
    np.testing.assert_array_equal(record.boxes, [[0, 1, 3, 4], [3, 4, 6, 7]])  # not the <part> box
    assert record.truncated.tolist() == [True, False] and record.difficult.tolist() == [False, False]


def test_zero_coordinates_and_border_boxes_are_fine(quirks):
    (record, problems), _ = parse(quirks / "TigerandRosa__000162.xml")  # ymin 0 (0-based tool)
    assert problems == [] and record.boxes[2].tolist() == [132, 0, 197, 45]
    (record, problems), _ = parse(quirks / "laokeaime-test__1.xml")  # (0, 0) and xmax == width
    assert problems == [] and record.boxes[0].tolist() == [0, 0, 235, 241]
    assert record.boxes[4].tolist() == [558, 511, 640, 551]


def test_urpc_frame_and_hints(quirks):
    r = parse_file(str(quirks / "HaiShen__CHN083846_0000.xml"))
    assert r.hints == ("", "CHN083846_0000", "") and len(r.names) == 8
    assert r.boxes[:4] == [499.0, 164.0, 572.0, 237.0]  # no size: not clipped


def test_size_mismatch_real_image_wins(quirks, tmp_path):
    src = quirks / "TigerandRosa__000102_size-mismatch.xml"
    Image.new("RGB", (1731, 1088)).save(tmp_path / "000102.jpg")  # the real image's size
    xml = tmp_path / "000102.xml"
    xml.write_bytes(src.read_bytes())
    record, problems = parse_voc(xml, ["head", "helmet"], images=tmp_path, require_image=True)
    assert (record.width, record.height) == (1731, 1088) and record.image == str(tmp_path / "000102.jpg")
    assert kinds(problems) == ["size_mismatch"] and "1920x1088" in problems[0].message
    # boxes are checked against the real size: a narrower image clips and drops
    Image.new("RGB", (1400, 1088)).save(tmp_path / "000102.jpg")
    record, problems = parse_voc(xml, ["head", "helmet"], images=tmp_path, require_image=True)
    assert kinds(problems) == ["size_mismatch", "box_clipped", "box_outside"]
    assert record.boxes.shape == (5, 4) and record.boxes[:, 2].max() == 1400


# -- crafted defects (no shared data needed) ---------------------------------------------------
VOC = """<annotation><filename>{fn}</filename>{size}{objs}</annotation>"""
OBJ = "<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def voc(fn="a.jpg", size=(100, 50), objs=(("cup", (1, 1, 10, 10)),), difficult=0) -> str:
    s = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return VOC.format(fn=fn, size=s, objs="".join(OBJ.format(n=n, b=b, d=difficult) for n, b in objs))


def test_convert_box_is_the_one_shift():
    assert convert_box(1, 1, 10, 10) == (0, 0, 10, 10)  # pixels 1..10 inclusive -> [0, 10)


def test_check_box_rules():
    p: list = []
    assert check_box([1, 1, 100, 50], 100, 50, 1, "a", p) == (0, 0, 100, 50) and p == []
    assert check_box([0, 0, 5, 5], 100, 50, 1, "a", p) == (0, 0, 5, 5) and p == []
    assert check_box([-5, 3, 120, 10], 100, 50, 1, "a", p) == (0, 2, 100, 10) and kinds(p) == ["box_clipped"]
    p.clear()
    assert check_box([150, 3, 160, 10], 100, 50, 1, "a", p) is None and kinds(p) == ["box_outside"]
    p.clear()
    assert check_box([5, 5, 5, 9], 100, 50, 3, "a", p) is None and kinds(p) == ["degenerate_box"]
    assert "object 3" in p[0][1]
    p.clear()
    assert check_box([5, 9, 8, 2], 0, 0, 1, "a", p) is None and "ymax 2 <= ymin 9" in p[0][1]


def test_bad_objects_dropped_others_kept(tmp_path):
    f = tmp_path / "a.xml"
    f.write_text(
        "<annotation><size><width>100</width><height>50</height></size>"
        "<object><name>cup</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax></bndbox></object>"
        "<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>cup</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>cup</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>cup</name></object>"
        "<object><name> cup </name><bndbox><xmin> 2 </xmin><ymin>3</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "</annotation>"
    )
    record, problems = parse_voc(f, ["cup"])
    assert kinds(problems) == ["bad_box"] * 5
    assert "has no <ymax>" in problems[0].message and "'a' is not a number" in problems[2].message
    np.testing.assert_array_equal(record.boxes, [[1, 2, 9, 9]])


def test_unknown_class_dropped_and_reported(tmp_path):
    f = tmp_path / "a.xml"
    f.write_text(voc(objs=[("cup", (1, 1, 5, 5)), ("dog", (2, 2, 6, 6)), ("dog", (3, 3, 7, 7))]))
    record, problems = parse_voc(f, ["bag", "cup"])
    assert record.labels.tolist() == [1] and record.boxes.shape == (1, 4)
    assert kinds(problems) == ["unknown_class"] and "'dog'" in problems[0].message and "2 boxes" in problems[0].message


# -- image lookup ------------------------------------------------------------------------------
def img(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


def test_hint_stems():
    assert hint_stems("000162", "000162.xml", "", "") == ["000162"]
    assert hint_stems("x", "FISH0041.png", "", r"C:\Users\a\FISH0041.png") == ["x", "FISH0041"]
    assert hint_stems("x", r"VOCdevkit\VOC2007/JPEGImages\1.jpg", "", "") == ["x", "1"]
    assert hint_stems("x", "img.rf.abc123.jpg", "", "") == ["x", "img.rf.abc123"]


@pytest.mark.parametrize("layout", ["voc", "per_class", "beside"])
def test_image_layouts(tmp_path, layout):
    if layout == "voc":
        xml, image = tmp_path / "Annotations/000001.xml", tmp_path / "JPEGImages/000001.jpg"
        root, rel_dir = tmp_path / "JPEGImages", ""
    elif layout == "per_class":
        xml, image = tmp_path / "annotations/fish/FISH0041.xml", tmp_path / "images/fish/FISH0041.jpg"
        img(tmp_path / "images/milk/FISH0041.jpg")  # same stem in another class folder
        root, rel_dir = tmp_path / "images", "fish"
    else:
        xml, image = tmp_path / "labels/p1.xml", tmp_path / "labels/p1.JPG"
        root, rel_dir = tmp_path / "labels", ""
    img(image, (40, 30))
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(voc(fn=xml.stem + ".png", size=None))  # <filename> says .png, no <size>
    r = parse_file(str(xml), ImageIndex.scan([root]), xml_rel_dir=rel_dir, require_image=True)
    assert r.ok and r.image == str(image) and (r.width, r.height) == (40, 30) and r.problems == []


def test_image_found_by_filename_frame_or_path_when_stem_differs(tmp_path):
    img(tmp_path / "images/2544473_4.jpg")
    img(tmp_path / "images/CHN1.jpg")
    (tmp_path / "ann").mkdir()
    index = ImageIndex.scan([tmp_path / "images"])
    a = tmp_path / "ann/2544473_04.xml"
    a.write_text(voc(fn="2544473_4"))  # no extension, stem differs from the XML's
    assert parse_file(str(a), index).image == str(tmp_path / "images/2544473_4.jpg")
    b = tmp_path / "ann/b.xml"
    b.write_text("<annotation><frame>CHN1</frame></annotation>")
    assert parse_file(str(b), index).image == str(tmp_path / "images/CHN1.jpg")
    inside = img(tmp_path / "images/sub/pic.png")
    index = ImageIndex.scan([tmp_path / "images"])
    c = tmp_path / "ann/c.xml"
    c.write_text(voc(fn="zzz.jpg").replace("</filename>", "</filename><path>D:/labelling/pic.png</path>"))
    assert parse_file(str(c), index).image == str(inside)  # <path>'s file name is a hint like <filename>


def test_missing_image_required_or_not(tmp_path):
    (tmp_path / "images").mkdir()
    f = tmp_path / "a.xml"
    f.write_text(voc(fn="a.jpg").replace("</filename>", r"</filename><path>C:\Users\me\a.jpg</path>"))
    index = ImageIndex.scan([tmp_path / "images"])
    record, problems = parse_voc(f, ["cup"], images=index, require_image=True)
    assert record is None and kinds(problems) == ["missing_image"] and "a" in problems[0].message
    record, problems = parse_voc(f, ["cup"], images=index, require_image=False)
    assert record is not None and record.image == "" and problems == [] and (record.width, record.height) == (100, 50)


def test_unreadable_image_reported(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    f = tmp_path / "a.xml"
    f.write_text(voc())
    record, problems = parse_voc(f, ["cup"], images=tmp_path, require_image=True)
    assert record is None and kinds(problems) == ["bad_image", "missing_image"]


def test_every_box_equals_check_box(tmp_path):
    """parse_file takes a shortcut for boxes well inside the image: its boxes and problems must
    be exactly check_box's, at the borders too (0, fractions below 1, == size, past it)."""
    rng = np.random.default_rng(0)
    edges = [0, 0.5, 1, 1.5, 2, 49, 50, 50.5, 99, 100, 100.5, -1, 7.25]
    boxes = [tuple(rng.choice(edges, 4)) for _ in range(300)] + [(1, 1, 100, 50), (0.5, 1, 100, 50), (1, 1, 100.5, 50)]
    for size in [(100, 50), None]:
        f = tmp_path / "a.xml"
        f.write_text(voc(size=size, objs=[("cup", b) for b in boxes]))
        r = parse_file(str(f))
        expected, problems = [], [("missing_size", "")] if size is None else []
        for i, b in enumerate(boxes, 1):
            box = check_box([float(v) for v in b], *(size or (0, 0)), i, "cup", problems)
            expected += box or ()
        assert r.boxes == expected
        assert [(k, m) for k, m in r.problems if k != "missing_size"] == [(k, m) for k, m in problems if k != "missing_size"]


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-inf", "abc", "", "2147483648", "1e12", "1e300", "-7"])
def test_non_finite_size_is_unknown_not_a_crash(tmp_path, value):  # 2**31 and up overflowed int32 in columns.pack
    f = tmp_path / "a.xml"
    f.write_text(voc(size=(100, 50)).replace("<width>100</width>", f"<width>{value}</width>"))
    r = parse_file(str(f))
    assert (r.width, r.height) == (0, 0) and [k for k, _ in r.problems] == ["missing_size"] and len(r.names) == 1


# -- issue 13: nothing outside the folders is opened, no value is silently changed --------------
@pytest.mark.parametrize("how", ["relative", "absolute", "not_an_image"])
def test_path_outside_the_image_folders_is_not_followed(tmp_path, how):
    """<path> was opened wherever it pointed when no image matched by name, even with --images:
    ../../outside/photo.jpg or /abs/photo.jpg became the record's image, a text file was opened."""
    outside = img(tmp_path / "outside/photo.jpg")
    if how == "not_an_image":
        outside.write_text("private notes")
    (tmp_path / "data/images").mkdir(parents=True)
    xml = tmp_path / "data/ann/a.xml"
    xml.parent.mkdir(parents=True)
    written = os.path.relpath(outside, xml.parent) if how == "relative" else str(outside)
    xml.write_text(voc(fn="nomatch.jpg").replace("</filename>", f"</filename><path>{written}</path>"))
    index = ImageIndex.scan([tmp_path / "data/images"])
    record, problems = parse_voc(xml, ["cup"], images=index, require_image=True)
    assert record is None and kinds(problems) == ["image_outside", "missing_image"]  # no bad_image: not opened
    assert f"<path> {written}" in problems[0].message and "not read" in problems[0].message
    r = parse_file(str(xml), index)  # annotation-only: kept without an image, still reported
    assert r.ok and r.image == "" and kinds(r.problems) == ["image_outside"]


def test_fifo_image_is_reported_not_opened(tmp_path):
    os.mkfifo(tmp_path / "a.jpg")  # PIL's open() blocked forever on it
    f = tmp_path / "a.xml"
    f.write_text(voc())
    record, problems = parse_voc(f, ["cup"], images=tmp_path, require_image=True)
    assert record is None and kinds(problems) == ["bad_image", "missing_image"]
    assert "a FIFO (named pipe), not a regular file" in problems[0].message


@pytest.mark.parametrize("value, words", [("1e308", "out of range"), ("-3e9", "out of range"), ("1e39", "out of range"),
                                          ("inf", "non-finite"), ("NaN", "non-finite")])
def test_coordinate_out_of_range_is_dropped_not_cached_as_inf(tmp_path, value, words):
    """1e308 is a finite float64 but inf as the cache's float32: an inf box was cached without a word."""
    f = tmp_path / "a.xml"
    f.write_text(voc(size=None, objs=[("cup", (1, 1, value, 9)), ("cup", (1, 1, 2147483647, 9))]))
    r = parse_file(str(f))
    assert r.names == ["cup"] and r.boxes == [0, 0, 2147483647, 9]
    bad = [m for k, m in r.problems if k == "bad_box"]
    assert len(bad) == 1 and "object 1 (cup)" in bad[0] and words in bad[0] and bad[0].endswith("dropped")


def test_class_name_with_entity_or_control_character_reported_never_changed(tmp_path):
    """x&sec;y (an entity declared in the DTD, never expanded) was cut to "x" and a tab stayed in
    a class name, both without a word; a coordinate 1&e;0 was read as 1."""
    f = tmp_path / "a.xml"
    f.write_text('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY sec "ond"><!ENTITY e "0">]>'
                 + voc(objs=[("x&sec;y", (1, 1, 5, 5)), ("cup\tsmall", (1, 1, 5, 5)), ("line\nbreak", (1, 1, 5, 5)),
                             ("cup", ("1&e;0", 1, 5, 5)), ("  cup ", (1, 1, 5, 5))]))
    r = parse_file(str(f))
    assert r.names == ["cup"]  # only the last object: surrounding blanks are layout, stripped as before
    assert kinds(r.problems) == ["bad_name", "bad_name", "bad_name", "bad_box"]
    m = [msg for _, msg in r.problems]
    assert "object 1" in m[0] and "'x&sec;y'" in m[0] and "entity" in m[0] and m[0].endswith("dropped")
    assert "object 2" in m[1] and r"'cup\tsmall'" in m[1] and "control character" in m[1]
    assert "object 3" in m[2] and r"'line\nbreak'" in m[2]
    assert "object 4" in m[3] and "'1&e;0' is not a number" in m[3]


def corrupt_jpeg(path: Path, size=(40, 30)) -> Path:
    """A JPEG whose entropy-coded body has 40 flipped bytes: libjpeg decodes it with a warning."""
    import cv2

    rng = np.random.default_rng(0)
    data = bytearray(cv2.imencode(".jpg", rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))[1].tobytes())
    for i in range(len(data) // 2, len(data) // 2 + 40):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))
    return path


def test_verify_images_decodes_fully_and_names_the_file(tmp_path):
    """A JPEG with a corrupted body (or a PNG cut short) has a readable header, so it passed and
    was trained on, with only libjpeg's message on stderr naming no file."""
    import cv2

    corrupt_jpeg(tmp_path / "a.jpg")
    png = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8))[1].tobytes()
    (tmp_path / "b.png").write_bytes(png[: len(png) // 2])
    img(tmp_path / "c.jpg")
    for stem in "abc":
        (tmp_path / f"{stem}.xml").write_text(voc(size=(40, 30)))
    index = ImageIndex.scan([tmp_path])
    assert all(parse_file(str(tmp_path / f"{s}.xml"), index, require_image=True).ok for s in "abc")  # header only
    a, b, c = (parse_file(str(tmp_path / f"{s}.xml"), index, require_image=True, verify_images=True) for s in "abc")
    assert not a.ok and kinds(a.problems) == ["corrupt_image", "missing_image"]
    assert str(tmp_path / "a.jpg") in a.problems[0][1] and "Corrupt JPEG data" in a.problems[0][1]
    assert not b.ok and kinds(b.problems)[0] == "corrupt_image" and "libpng error" in b.problems[0][1]
    assert c.ok and c.problems == []
