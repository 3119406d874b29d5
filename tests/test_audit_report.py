"""detect audit's outputs: the self-contained HTML report (parsed: every table, the photo
embedded, nothing fetched from elsewhere), JSON and CSV; the command on a small photo with the
shipped weights; a bad planogram is a usage error naming the line."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.audit.audit import audit_detections
from detect.audit.planogram import read_planogram
from detect.audit.report import embed_jpeg, image_section, write_html, write_tables
from detect.cli import main
from detect.infer.weights import DEFAULT_WEIGHTS
from detect.structures import Detections

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cola", "chips", "tea"]


class Page(HTMLParser):
    """Tables (by class) with their header and rows, images, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._table = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table = self.tables.setdefault(a.get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "img":
            self.images.append(a.get("src", ""))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def shelf_result(tmp_path: Path):
    boxes, labels = [], []
    for r, base in enumerate((150, 300)):
        for k in range(8):
            if (r, k) in ((1, 3), (1, 4)):
                continue  # two empty facings on the second shelf
            boxes.append([10 + k * 45, base - 100, 50 + k * 45, base])
            labels.append(0 if k < 4 else 1 + r)
    det = Detections(np.asarray(boxes, np.float32), np.full(len(boxes), 0.9, np.float32), np.asarray(labels), CLASSES)
    p = tmp_path / "plan.csv"
    p.write_text("shelf,position,product,facings\n1,1,cola,4\n1,2,chips,4\n2,1,cola,4\n2,2,tea,4\n")
    pg = read_planogram(p, CLASSES)
    image = np.full((320, 380, 3), 200, np.uint8)
    return image, audit_detections(det, 380, 320, pg, source="shelf<1>.jpg")


def test_html_report_has_every_table_and_the_embedded_photo(tmp_path):
    image, res = shelf_result(tmp_path)
    d = res.to_dict()
    path = write_html(tmp_path / "report.html", [image_section(d, embed_jpeg(image))], "Shelf audit")
    page = parse(path)
    assert set(page.tables) == {"rows", "facings", "share", "gaps", "compliance"}
    assert [r[0] for r in page.tables["rows"][1:]] == ["1", "2"]
    assert page.tables["gaps"][1][:2] == ["2", "2"] and page.tables["gaps"][1][3:] == ["cola", "tea"]
    assert ["2", "1", "cola", "4", "3", "wrong_facings", ""] in page.tables["compliance"]
    assert ["2", "2", "tea", "4", "3", "wrong_facings", ""] in page.tables["compliance"]
    (src,) = page.images
    assert src.startswith("data:image/jpeg;base64,")
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    for tag, a in page.tags:  # opens from the file system: nothing loaded from anywhere else
        assert tag not in ("script", "link", "iframe")
        assert not any(str(v).startswith(("http:", "https:", "//")) for k, v in a.items() if k in ("src", "href"))
    assert "shelf&lt;1&gt;.jpg" in path.read_text()  # names are escaped


def test_json_and_csv_tables(tmp_path):
    _, res = shelf_result(tmp_path)
    d = json.loads(res.to_json())
    assert d["compliance"]["counts"] == {"ok": 2, "missing": 0, "misplaced": 0, "wrong_facings": 2}
    assert d["empty_facings"] == 2 and len(d["detections"]) == 14
    paths = write_tables(tmp_path, [d], [])
    assert sorted(p.name for p in paths) == ["compliance.csv", "facings.csv", "gaps.csv", "share.csv"]
    rows = list(csv.DictReader(open(tmp_path / "facings.csv")))
    assert {(r["row"], r["product"], r["facings"]) for r in rows} == {("1", "cola", "4"), ("1", "chips", "4"),
                                                                      ("2", "cola", "3"), ("2", "tea", "3")}


@pytest.fixture(scope="module")
def shelf_photo(tmp_path_factory) -> Path:
    from detect.data.synth import render_scene

    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "shelf.jpg"), render_scene(11, 0, size=320, kind="shelf").image)
    return folder / "shelf.jpg"


def test_detect_audit_on_a_photo_with_the_shipped_weights(tmp_path, shelf_photo, capsys):
    if not Path(DEFAULT_WEIGHTS).is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_WEIGHTS}")
    out = tmp_path / "audit"
    rc = main(["audit", str(shelf_photo), "--save-dir", str(out), "--no-progress", "--device", "cpu",
               "--planogram", str(ROOT / "datasets" / "planogram_example.csv")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "planogram compliance" in text and "report:" in text
    doc = json.loads((out / "audit.json").read_text())
    (img,) = doc["images"]
    assert img["products"] > 0 and len(img["rows"]) >= 1 and len(img["compliance"]["positions"]) == 10
    for name in ("report.html", "facings.csv", "share.csv", "gaps.csv", "compliance.csv", "shelf.jpg"):
        assert (out / name).is_file(), name
    page = parse(out / "report.html")
    assert {"rows", "facings", "share", "gaps", "compliance"} <= set(page.tables) and page.images[0].startswith("data:image/jpeg")


def test_bad_planogram_exits_2_naming_the_line(tmp_path, shelf_photo, capsys):
    if not Path(DEFAULT_WEIGHTS).is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_WEIGHTS}")
    bad = tmp_path / "plan.csv"
    bad.write_text("shelf,position,product,facings\n1,1,can,2\n1,2,beer,1\n")
    rc = main(["audit", str(shelf_photo), "--save-dir", str(tmp_path / "o"), "--no-progress", "--device", "cpu",
               "--planogram", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and f"detect audit: error: {bad}: line 3: unknown product 'beer'" in err
    assert main(["audit", str(tmp_path / "none.jpg"), "--save-dir", str(tmp_path / "o")]) == 2


def test_save_dir_that_is_a_file_or_holds_the_photo_exits_2(tmp_path, shelf_photo, capsys):
    """Checked before any weights load: a file as --save-dir, or the photo's own folder (its
    annotated copy would replace it)."""
    a_file = tmp_path / "x.txt"
    a_file.write_text("")
    assert main(["audit", str(shelf_photo), "--save-dir", str(a_file), "--no-progress"]) == 2
    assert "--save-dir" in capsys.readouterr().err
    assert main(["audit", str(shelf_photo), "--save-dir", str(shelf_photo.parent), "--no-progress"]) == 2
    assert "would replace" in capsys.readouterr().err
