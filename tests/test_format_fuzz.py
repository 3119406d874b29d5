"""Fuzzing the readers of YOLO labels, COCO JSON, detections.jsonl, data.yaml / dataset YAML and
exported .onnx files (RUN_SLOW=1; issue 24). Each format gets >= 2,000 seeded mutants of a valid
file: bytes flipped, cut short, chunks repeated, numbers made huge, non-finite or strings, deep
nesting, YAML aliases, control characters, bytes that are not UTF-8, wrong types. A reader may
accept a mutant or report it (a problem, or a usage error naming the file); it may never raise
anything else, never hang (each case is timed), and what it accepts is sane (finite boxes inside
the image). The VOC parser has its own fuzz test (test_voc_fuzz.py)."""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
import pytest

from dataset_fixtures import coco_doc, image

CASES = int(__import__("os").environ.get("FUZZ_CASES", 2000))
SLOWEST = 10.0  # seconds one case may take: more is a hang
HUGE = ["1e308", "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "9" * 400, "2147483648", "-0", "true", "null",
        '"12"', "[]", "{}", "0.5", "-64", "1e-400"]
NUMBER = re.compile(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?")


# -- generic mutations (bytes -> bytes) -----------------------------------------------------------
def _flip(d: bytes, rng: random.Random) -> bytes:
    b = bytearray(d)
    for _ in range(rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _truncate(d: bytes, rng: random.Random) -> bytes:
    return d[: rng.randrange(max(len(d), 1))]


def _repeat(d: bytes, rng: random.Random) -> bytes:
    i, j = sorted(rng.randrange(len(d) + 1) for _ in range(2))
    return d[:j] + d[i:j] * rng.randint(2, 50) + d[j:]


def _number(d: bytes, rng: random.Random) -> bytes:
    found = list(NUMBER.finditer(d))
    if not found:
        return d
    m = rng.choice(found)
    return d[: m.start()] + rng.choice(HUGE).encode() + d[m.end():]


def _nest(d: bytes, rng: random.Random) -> bytes:
    n = rng.choice([50, 500, 5000, 50000])
    i = rng.randrange(len(d) + 1)
    return d[:i] + b"[" * n + b"]" * n + d[i:]


def _control(d: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(d) + 1)
    return d[:i] + rng.choice([b"\x00", b"\x01", b"\n", b"\r", b"\t", b"\x7f", b"\xff\xfe", b"\xe9", b"\xef\xbb\xbf"]) + d[i:]


def _utf16(d: bytes, rng: random.Random) -> bytes:
    return d.decode("utf-8", "replace").encode(rng.choice(["utf-16", "utf-16-le", "latin-1"]), "replace")


def _long(d: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(d) + 1)
    return d[:i] + b"x" * rng.choice([10_000, 200_000]) + d[i:]


GENERIC = [_flip, _truncate, _repeat, _number, _number, _nest, _control, _utf16, _long]


def mutants(seed: bytes, extra: list, rng: random.Random, n: int = CASES):
    ops = GENERIC + extra
    for k in range(n):
        d = seed
        for _ in range(rng.choice([1, 1, 2, 3])):
            d = rng.choice(ops)(d, rng)
        yield k, d


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    assert dt < SLOWEST, f"{fn.__name__} took {dt:.1f} s"
    return out


def check_row(r) -> None:
    """A parsed image row: finite boxes inside the image."""
    boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)
    assert np.isfinite(boxes).all()
    if len(boxes):
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= r.width).all() and (boxes[:, 3] <= r.height).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


# -- YOLO ---------------------------------------------------------------------------------------------
def _polygon(d: bytes, rng: random.Random) -> bytes:
    return d + b"1 " + b" ".join(rng.choice(HUGE[:8] + ["0.1", "0.9"]).encode() for _ in range(rng.choice([6, 7, 8]))) + b"\n"


@pytest.mark.slow
def test_yolo_labels(tmp_path):
    from detect.data.images import FileStat
    from detect.data.formats.yolo import parse_image

    rng = random.Random(24)
    img = image(tmp_path / "images" / "a.jpg")
    st = FileStat(str(img), img.stat().st_size, img.stat().st_mtime_ns)
    seed = b"0 0.5 0.5 0.25 0.5\n1 0.9 0.5 0.4 0.2\n1 0.25 0.25 0.5 0.25 0.5 0.5\n0 0.1 0.1 0.05 0.05\n"
    (tmp_path / "labels").mkdir()
    n = 0
    for k, d in mutants(seed, [_polygon], rng):
        label = tmp_path / "labels" / f"{k}.txt"
        label.write_bytes(d)
        r = timed(parse_image, st, str(label), ["cup", "tea"], str(tmp_path.resolve()))
        if r.ok:
            check_row(r)
            assert set(r.names) <= {"cup", "tea"}
        n += 1
    assert n >= CASES


# -- COCO ---------------------------------------------------------------------------------------------
def _coco_field(d: bytes, rng: random.Random) -> bytes:
    try:
        doc = json.loads(d)
    except (ValueError, RecursionError):
        return d
    if not isinstance(doc, dict):
        return d
    key = rng.choice(["images", "annotations", "categories"])
    items = doc.get(key)
    if isinstance(items, list) and items and isinstance(items[0], dict):
        item = rng.choice(items)
        if item:
            field = rng.choice(list(item))
            item[field] = rng.choice(["1234", True, None, [], {}, -1, 1e308, "x\x00y", [1, 2], [[1, 2, 3, 4]],
                                      "\udce9", 10**30, [0, 0, 1e308, 1e308]])
    return json.dumps(doc).encode()


@pytest.mark.slow
def test_coco_json(tmp_path):
    from detect.data.formats.coco import ImageFinder, parse_coco
    from detect.data.images import ImageIndex

    rng = random.Random(24)
    for n in "abc":
        image(tmp_path / "images" / f"{n}.jpg")
    seed = json.dumps(coco_doc(["a.jpg", "b.jpg", "c.jpg", "d.jpg"])).encode()
    finder = ImageFinder(tmp_path / "images", ImageIndex.scan([tmp_path / "images"]))
    (tmp_path / "ann").mkdir()
    n = 0
    for k, d in mutants(seed, [_coco_field, _coco_field, _coco_field], rng):
        path = tmp_path / "ann" / f"{k}.json"
        path.write_bytes(d)
        classes, rows, problems = timed(parse_coco, path, finder, str(tmp_path.resolve()))
        assert all(isinstance(c, str) for c in classes)
        for r in rows:
            if r.ok:
                check_row(r)
        n += 1
    assert n >= CASES


# -- detections.jsonl ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_detections_jsonl(tmp_path):
    from detect.data.convert.converter import ConvertError, read_predictions

    rng = random.Random(24)
    img = image(tmp_path / "s.jpg")
    rows = [{"source": str(img), "width": 64, "height": 48, "detections": [
        {"box": [1.5, 2, 20, 30], "label": 0, "name": "cup", "score": 0.9},
        {"box": [30, 5, 64, 40], "label": 2, "name": "jar", "score": 0.4}], "counts": {"cup": 1, "jar": 1}},
        {"source": "/etc/passwd", "width": 64, "height": 48, "detections": []},
        {"source": str(img), "frame": 3, "width": 64, "height": 48, "detections": []}]
    seed = "".join(json.dumps(r) + "\n" for r in rows).encode()
    n = 0
    for k, d in mutants(seed, [_coco_field], rng):
        path = tmp_path / f"{k}.jsonl"
        path.write_bytes(d)
        try:
            classes, records, problems = timed(read_predictions, path)
        except ConvertError:
            n += 1
            continue
        for r in records:
            assert r.image == str(img.resolve())
            check_row(r)
        n += 1
    assert n >= CASES


# -- YAML ---------------------------------------------------------------------------------------------
def _alias(d: bytes, rng: random.Random) -> bytes:
    k = rng.choice([3, 9])
    laughs = b"x0: &a0 [" + b"v, " * k + b"v]\n" + b"".join(
        f"x{i}: &a{i} [".encode() + b", ".join([f"*a{i - 1}".encode()] * k) + b"]\n" for i in range(1, rng.choice([4, 9])))
    return laughs + d.replace(b"names:", b"names: *a1\nold_names:", 1)


def _tag(d: bytes, rng: random.Random) -> bytes:
    return d.replace(b"train:", rng.choice([b"train: !!python/object/apply:os.system ['true']\nx:", b"train: !!binary aGVsbG8=\nx:",
                                            b"train: &t [images/train]\nt2: *t\nx:", b"? [a, b]\n: c\ntrain:"]), 1)


@pytest.mark.slow
def test_yaml(tmp_path):
    from detect.data.formats.voc_dataset import load_spec
    from detect.data.spec import DatasetError
    from detect.data.formats.yolo import DataYamlError, read_data_yaml

    rng = random.Random(24)
    root = tmp_path / "ds"
    image(root / "images" / "train" / "a.jpg")
    image(root / "images" / "val" / "b.jpg")
    (root / "ann").mkdir()
    data_seed = b"path: .\ntrain: images/train\nval: images/val\nnc: 2\nnames: {0: cup, 1: tea}\nroboflow: {v: 3}\n"
    spec_seed = f"name: g\nroot: {root}\nannotations: ann\nimages: images\nsplits:\n  train: null\n".encode()
    n = 0
    for which, seed, read, errors in (("data", data_seed, read_data_yaml, DataYamlError),
                                      ("spec", spec_seed, load_spec, DatasetError)):
        for k, d in mutants(seed, [_alias, _tag], rng):
            path = root / f"{which}{k}.yaml"
            path.write_bytes(d)
            try:
                got = timed(read, path)
            except errors:
                n += 1
                continue
            if which == "data":
                assert all(isinstance(c, str) and c for c in got.names) and len(got.names) == len(set(got.names))
            n += 1
    assert n >= 2 * CASES


# -- .onnx --------------------------------------------------------------------------------------------
def _graph(imgsz: int = 32, classes: int = 3) -> bytes:
    """A tiny graph with `detect export`'s interface: images[B, 3, S, S] -> boxes[B, 4, 4],
    scores[B, 4, K] (a pooled mean, so it runs in microseconds)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["g"]),  # (B, 3, 1, 1)
             helper.make_node("Flatten", ["g"], ["f"]),  # (B, 3)
             helper.make_node("Tile", ["f", "reps4"], ["t"]),  # (B, 12)
             helper.make_node("Reshape", ["t", "shape_boxes"], ["boxes"]),  # (B, 3, 4)
             helper.make_node("Tile", ["f", "repsk"], ["u"]),  # (B, 3 * K)
             helper.make_node("Reshape", ["u", "shape_scores"], ["scores"])]  # (B, 3, K)
    init = [helper.make_tensor("reps4", TensorProto.INT64, [2], [1, 4]),
            helper.make_tensor("repsk", TensorProto.INT64, [2], [1, classes]),
            helper.make_tensor("shape_boxes", TensorProto.INT64, [3], [0, 3, 4]),
            helper.make_tensor("shape_scores", TensorProto.INT64, [3], [0, 3, classes])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, imgsz, imgsz])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["B", 3, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", 3, classes])], init)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    meta = {"classes": json.dumps(["cup", "tea", "jar"][:classes]), "imgsz": str(imgsz), "mean": "[0.5, 0.5, 0.5]",
            "std": "[0.25, 0.25, 0.25]"}
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    return m.SerializeToString()


META_VALUES = ["[" * 3000 + "]" * 3000, "[]", '["a"]', '["a", "b", "c", "d"]', "100000", "0", "-64", "48", "1e400", "NaN",
               '"32"', "[0.5, 0.5]", "[NaN, 1, 1]", "[0, 0, 0]", '{"a": 1}', "", "\x00", '["a\\u0000"]', "32.5", "true"]


@pytest.mark.slow
def test_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    import torch

    from detect.errors import UsageError
    from detect.models.onnx_ssd import OnnxSSD

    rng = random.Random(24)
    good = onnx.load_from_string(_graph())
    n = opened = 0
    for k in range(CASES):
        kind = k % 4
        if kind < 2:  # metadata values and keys
            m = onnx.ModelProto()
            m.CopyFrom(good)
            props = {p.key: p.value for p in m.metadata_props}
            for _ in range(rng.choice([1, 2])):
                key = rng.choice(["classes", "imgsz", "mean", "std"])
                if rng.random() < 0.1:
                    props.pop(key, None)
                else:
                    props[key] = rng.choice(META_VALUES)
            del m.metadata_props[:]
            for key, v in props.items():
                m.metadata_props.add(key=key, value=v)
            data = m.SerializeToString()
        elif kind == 2:  # the graph's declared sizes against its metadata
            data = _graph(imgsz=rng.choice([16, 32, 48]), classes=rng.choice([1, 2, 3]))
            m = onnx.load_from_string(data)
            props = {p.key: p.value for p in m.metadata_props}
            props["imgsz"], props["classes"] = rng.choice(["32", "48"]), rng.choice(['["a", "b", "c"]', '["a"]'])
            del m.metadata_props[:]
            for key, v in props.items():
                m.metadata_props.add(key=key, value=v)
            data = m.SerializeToString()
        else:  # bytes
            data = rng.choice(GENERIC)(_graph(), rng)
        path = tmp_path / f"{k}.onnx"
        path.write_bytes(data)
        t = time.perf_counter()
        try:
            model = OnnxSSD(path)
            dets = model(torch.rand(1, 3, model.preprocess.imgsz, model.preprocess.imgsz))
            assert len(dets) == 1 and set(dets[0]) == {"boxes", "scores", "labels"}
            assert all(0 <= c < len(model.classes) for c in dets[0]["labels"].tolist())
            opened += 1
        except UsageError as e:
            assert str(path) in str(e)
        assert time.perf_counter() - t < SLOWEST
        n += 1
    assert n >= CASES and opened > 0
