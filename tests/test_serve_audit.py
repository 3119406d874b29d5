"""``POST /v1/audit``: the answer is ``detect audit``'s JSON for the photo (the command's
``audit.json`` entry, run on the same file; with other options, ``audit_detections`` on the
service's own Predictor), a planogram uploads as a file or text, and bad planograms and options are 422s naming what is wrong."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

with warnings.catch_warnings():  # starlette's note about its httpx client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from detect.audit.audit import audit_detections  # noqa: E402
from detect.cli import main  # noqa: E402
from detect.infer.weights import DEFAULT_WEIGHTS  # noqa: E402
from detect.serve.app import create_app  # noqa: E402
from detect.serve.batcher import filter_detections  # noqa: E402
from detect.serve.service import ServeConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLANOGRAM = ROOT / "datasets" / "planogram_example.csv"

pytestmark = pytest.mark.skipif(not Path(DEFAULT_WEIGHTS).is_file(), reason=f"no shipped weights at {DEFAULT_WEIGHTS}")


@pytest.fixture(scope="module")
def shelf(tmp_path_factory) -> Path:
    from detect.data.synth import render_scene

    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "shelf.jpg"), render_scene(11, 0, size=320, kind="shelf").image)
    return folder / "shelf.jpg"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(ServeConfig(device="cpu", max_wait_ms=2))) as c:  # the shipped weights
        yield c


def cli_audit(photo: Path, out: Path, *options: str) -> dict:
    """``detect audit``'s audit.json entry for ``photo``."""
    assert main(["audit", str(photo), "--save-dir", str(out), "--no-progress", "--no-save", "--device", "cpu", *options]) == 0
    (entry,) = json.loads((out / "audit.json").read_text())["images"]
    return entry


def without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_audit_answers_detect_audits_json(client, shelf, tmp_path):
    data = shelf.read_bytes()
    r = client.post("/v1/audit", files={"image": ("shelf.jpg", data, "image/jpeg"),
                                        "planogram": ("plan.csv", PLANOGRAM.read_bytes(), "text/csv")})
    assert r.status_code == 200, r.text
    body = r.json()
    want = cli_audit(shelf, tmp_path / "a", "--planogram", str(PLANOGRAM))
    assert without(body, "model", "options", "time_ms", "source") == without(want, "source")
    assert body["source"] == "shelf.jpg" and body["products"] > 0 and len(body["compliance"]["positions"]) == 10
    assert body["options"] == {"conf": 0.25, "occupancy_conf": 0.1, "iou": 0.45, "max_det": 1000, "gap_ratio": 1.55,
                               "shelf_edges": "products", "planogram": "plan.csv"}
    assert set(body["time_ms"]) >= {"decode", "inference", "audit", "total"}

    # options, a raw body without a planogram, the planogram as a text field
    q = "conf=0.5&occupancy_conf=0.2&gap_ratio=2&shelf_edges=image"
    raw = client.post(f"/v1/audit?{q}", content=data, headers={"Content-Type": "image/jpeg"}).json()
    image = cv2.imread(str(shelf))
    det = filter_detections(client.app.state.service.predictor.predict([image])[0], 0.2, 1000, None)
    want = audit_detections(det, image.shape[1], image.shape[0], conf=0.5, shelf_edges="image", ratio=2.0).to_dict()
    assert without(raw, "model", "options", "time_ms") == want and "compliance" not in raw
    text = client.post("/v1/audit", files={"image": ("s.jpg", data, "image/jpeg")},
                       data={"planogram": PLANOGRAM.read_text()}).json()
    assert text["compliance"] == body["compliance"] and text["options"]["planogram"] == "planogram"


def test_product_ids_through_a_product_map(client, shelf):
    plan = "shelf,position,product,facings\n1,1,0001,3\n1,2,milk_carton,2\n"
    files = {"image": ("shelf.jpg", shelf.read_bytes(), "image/jpeg"), "planogram": ("p.csv", plan.encode(), "text/csv"),
             "product_map": ("map.json", b'{"0001": "cereal_box"}', "application/json")}
    r = client.post("/v1/audit", files=files)
    assert r.status_code == 200, r.text
    assert [p["product"] for p in r.json()["compliance"]["positions"]][:2] == ["cereal_box", "milk_carton"]


@pytest.mark.parametrize("files, query, code, words", [
    ({"planogram": ("p.csv", b"shelf,position,product,facings\n1,1,can,2\n1,2,beer,1\n")}, "", "bad_planogram",
     "p.csv: line 3: unknown product 'beer'"),
    ({"planogram": ("p.json", b'[{"shelf": 1, "position": 1}]')}, "", "bad_planogram", "p.json: line 1: missing product, facings"),
    ({"planogram": ("p.csv", b"\xff\xfe\x00bad")}, "", "bad_planogram", "not UTF-8"),
    ({"product_map": ("m.csv", b"product,class\n1,can\n")}, "", "bad_planogram", "without a planogram"),
    ({}, "?conf=0.1&occupancy_conf=0.2", "bad_option", "occupancy_conf (0.2) must be at most conf (0.1)"),
    ({}, "?gap_ratio=1", "bad_option", "gap_ratio"),
    ({}, "?shelf_edges=walls", "bad_option", "shelf_edges"),
])
def test_bad_planograms_and_options_are_422(client, shelf, files, query, code, words):
    r = client.post(f"/v1/audit{query}", files={"image": ("shelf.jpg", shelf.read_bytes(), "image/jpeg"), **files})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"], err


def test_bad_photos_are_4xx_and_the_route_is_in_the_schema(client):
    assert client.post("/v1/audit", content=b"not an image", headers={"Content-Type": "image/jpeg"}).status_code == 400
    r = client.post("/v1/audit", files={"planogram": ("p.csv", PLANOGRAM.read_bytes(), "text/csv")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_image"
    schema = client.get("/openapi.json").json()
    assert "/v1/audit" in schema["paths"]
    assert 'detect_requests_total{route="/v1/audit",status="200"}' in client.get("/metrics").text
