"""Planogram files (detect/audit/planogram.py): CSV and JSON, product maps, and bad input as a
clear usage error naming the file and line; compliance verdicts (detect/audit/compliance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detect.audit.audit import audit_detections
from detect.audit.compliance import align, check
from detect.audit.planogram import PlanogramError, read_planogram
from detect.errors import UsageError
from detect.structures import Detections

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cola", "chips", "tea"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_and_json_give_the_same_planogram(tmp_path):
    csv_p = write(tmp_path, "p.csv", "Shelf,Position,Product,Facings,notes\n2,1,tea,2,x\n1,2,chips,3,\n1,1,cola,4,\n\n")
    json_p = write(tmp_path, "p.json", json.dumps({"positions": [
        {"shelf": 1, "position": 1, "product": "cola", "facings": 4},
        {"shelf": 1, "position": 2, "product": "chips", "facings": 3},
        {"shelf": 2, "position": 1, "product": "tea", "facings": "2"}]}, indent=1))
    a, b = read_planogram(csv_p, CLASSES), read_planogram(json_p, CLASSES)
    assert a.to_list() == b.to_list() == [
        {"shelf": 1, "position": 1, "product": "cola", "facings": 4},
        {"shelf": 1, "position": 2, "product": "chips", "facings": 3},
        {"shelf": 2, "position": 1, "product": "tea", "facings": 2}]
    assert [p.label for p in a.positions] == [0, 1, 2] and a.shelves == [1, 2]


def test_product_ids_through_a_mapping_file(tmp_path):
    pg = write(tmp_path, "p.csv", "shelf;position;product;facings\n1;1;5449000000996;2\n1;2;0012345;1\n")
    csv_map = write(tmp_path, "m.csv", "product,class\n5449000000996,cola\n0012345,tea\n")
    json_map = write(tmp_path, "m.json", '{"5449000000996": "cola", "0012345": "tea"}')
    for m in (csv_map, json_map):
        assert [p.product for p in read_planogram(pg, CLASSES, m).positions] == ["cola", "tea"]
    with pytest.raises(PlanogramError, match=r"p\.csv: line 2: unknown product '5449000000996'.*--product-map"):
        read_planogram(pg, CLASSES)


@pytest.mark.parametrize("text, message", [
    ("shelf,position,product,facings\n1,1,cola,2\n1,2,beer,1\n", r"line 3: unknown product 'beer'; the model knows cola, chips, tea"),
    ("shelf,position,product,facings\n1,1,cola,2\n1,2,chips,1\n1,1,tea,1\n", r"line 4: shelf 1 position 1 is given twice \(also on line 2\)"),
    ("shelf,position,product,facings\n1,1,cola,-2\n", r"line 2: facings must be a whole number >= 1, got '-2'"),
    ("shelf,position,product,facings\n1,1,cola,0\n", r"line 2: facings must be a whole number >= 1, got '0'"),
    ("shelf,position,product,facings\n1,1.5,cola,2\n", r"line 2: position must be a whole number >= 0, got '1.5'"),
    ("shelf,position,product,facings\nx,1,cola,2\n", r"line 2: shelf must be a whole number >= 0, got 'x'"),
    ("shelf,position,product,facings\n1,1,,2\n", r"line 2: missing product"),
    ("shelf,product,facings\n1,cola,2\n", r"line 1: missing column position .*found shelf, product, facings"),
    ("shelf,position,product,facings\n", r"has no positions"),
])
def test_bad_csv_names_file_and_line(tmp_path, text, message):
    p = write(tmp_path, "plan.csv", text)
    with pytest.raises(UsageError, match=r"plan\.csv: " + message if "line" in message else message):
        read_planogram(p, CLASSES)


def test_bad_json_names_the_line_of_the_entry(tmp_path):
    text = '{\n "positions": [\n  {"shelf": 1, "position": 1, "product": "cola", "facings": 2},\n' \
           '  {"shelf": 1,\n   "position": 2, "product": "cola", "facings": -1}\n ]\n}\n'
    with pytest.raises(PlanogramError, match=r"plan\.json: line 4: facings must be a whole number >= 1, got -1"):
        read_planogram(write(tmp_path, "plan.json", text), CLASSES)
    with pytest.raises(PlanogramError, match=r"line 2: not valid JSON"):
        read_planogram(write(tmp_path, "broken.json", '{\n "positions": [,]}'), CLASSES)
    with pytest.raises(PlanogramError, match="entry 1: a position must be an object"):
        read_planogram(write(tmp_path, "list.json", "[[1, 1, 2]]"), CLASSES)
    with pytest.raises(PlanogramError, match="file not found"):
        read_planogram(tmp_path / "none.csv", CLASSES)
    with pytest.raises(PlanogramError, match="not UTF-8"):
        (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00shelf")
        read_planogram(tmp_path / "bin.csv", CLASSES)


def test_the_shipped_examples_read_and_agree():
    names = ["cereal_box", "milk_carton", "soda_bottle", "chips_bag", "can", "jar", "chocolate_bar", "soap_bottle",
             "tea_box", "yogurt_cup"]
    a = read_planogram(ROOT / "datasets" / "planogram_example.csv", names)
    b = read_planogram(ROOT / "datasets" / "planogram_example.json", names)
    assert a.to_list() == b.to_list() and len(a.positions) >= 6


def test_alignment_keeps_later_slots_in_place():
    pairs = align([0, 0, 1, 1], [0, 1, 1])  # one cola facing too few
    assert pairs[2:] == [(2, 1), (3, 2)] and sorted(pairs[:2]) in ([(0, -1), (1, 0)], [(0, 0), (1, -1)])
    assert align([0, 1], [0, 2, 1]) == [(0, 0), (-1, 1), (1, 2)]  # one slot too many


def shelf(base: float, seq: list, w: float = 40, s: float = 5):
    """Boxes of one row from a sequence of labels, None = an empty facing."""
    boxes, labels = [], []
    for k, l in enumerate(seq):
        if l is not None:
            x = k * (w + s)
            boxes.append([x, base - 100, x + w, base])
            labels.append(l)
    return boxes, labels


def test_verdicts_ok_missing_misplaced_and_wrong_facings(tmp_path):
    """Shelf 1 as planned; shelf 2: chips missing (2 empty facings), a tea standing in the
    cola's place, one tea facing too few (empty)."""
    pg = read_planogram(write(tmp_path, "p.csv", "shelf,position,product,facings\n"
                              "1,1,cola,3\n1,2,chips,2\n1,3,tea,3\n"
                              "2,1,cola,2\n2,2,chips,2\n2,3,tea,3\n2,4,cola,2\n"), CLASSES)
    b1, l1 = shelf(200, [0, 0, 0, 1, 1, 2, 2, 2])
    b2, l2 = shelf(400, [2, 2, None, None, 2, 2, None, 0, 0])
    det = Detections(np.asarray(b1 + b2, np.float32), np.full(len(l1 + l2), 0.9, np.float32), np.asarray(l1 + l2), CLASSES)
    res = audit_detections(det, 9 * 45, 450, pg, shelf_edges="image")
    got = [(v.position.shelf, v.position.product, v.status, v.observed) for v in res.compliance.verdicts]
    assert got == [(1, "cola", "ok", 3), (1, "chips", "ok", 2), (1, "tea", "ok", 3),
                   (2, "cola", "misplaced", 0), (2, "chips", "missing", 0), (2, "tea", "wrong_facings", 2), (2, "cola", "ok", 2)]
    assert res.compliance.verdicts[3].found == ["tea"]
    assert res.compliance.score == pytest.approx(4 / 7)
    assert res.compliance.counts() == {"ok": 4, "missing": 1, "misplaced": 1, "wrong_facings": 1}


def test_a_shelf_out_of_the_photo_is_missing_and_rows_shift_to_fit():
    """The photo shows only the planogram's second shelf: it is matched to the one row, and
    the first shelf's positions are missing."""
    from detect.audit.planogram import build_planogram

    pg = build_planogram([(1, {"shelf": 0, "position": 0, "product": "tea", "facings": 2}),
                          (2, {"shelf": 1, "position": 0, "product": "cola", "facings": 3})], CLASSES, {}, "p")
    comp = check(pg, [[0, 0, 0]], CLASSES)
    assert [(v.position.product, v.status, v.row) for v in comp.verdicts] == [("tea", "missing", -1), ("cola", "ok", 0)]


def test_a_row_the_planogram_does_not_know_is_skipped():
    """Three shelves, and between the first two a row of false detections: every shelf is
    still matched with its own row."""
    from detect.audit.planogram import build_planogram

    pg = build_planogram([(1, {"shelf": 1, "position": 1, "product": "cola", "facings": 3}),
                          (2, {"shelf": 2, "position": 1, "product": "chips", "facings": 2}),
                          (3, {"shelf": 2, "position": 2, "product": "tea", "facings": 2}),
                          (4, {"shelf": 3, "position": 1, "product": "tea", "facings": 3})], CLASSES, {}, "p")
    comp = check(pg, [[0, 0, 0], [2], [1, 1, 2, 2], [2, 2, 2]], CLASSES)
    assert [(v.position.shelf, v.status, v.row) for v in comp.verdicts] == [(1, "ok", 0), (2, "ok", 2), (2, "ok", 2), (3, "ok", 3)]
