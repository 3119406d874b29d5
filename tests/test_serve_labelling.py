"""The labelling-tool backends: Label Studio's ML backend routes of ``detect serve`` and the CVAT
auto-annotation function, with a tiny SSD checkpoint.

Label Studio: a stand-in Label Studio on 127.0.0.1 serves a task image only with the right
token; predictions are checked against ``Predictor.predict`` (percent of the image from its
top-left corner) and, when ``label-studio-sdk`` is importable, validated by its
``LabelInterface.validate_prediction`` (Label Studio's own rules for a labelling config).
CVAT: the function's output goes through cvat-sdk's own label matching and validation
(``_AnnotationMapper.validate_and_remap``, what ``annotate_task`` applies to every frame)."""

from __future__ import annotations

import base64
import http.server
import logging
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from detect.infer.predict import Predictor  # noqa: E402
from detect.serve.app import create_app  # noqa: E402
from detect.serve.label_studio import label_map, parse_label_config  # noqa: E402
from detect.serve.service import ServeConfig  # noqa: E402
from _predict_helpers import CLASSES, confident_ssd_checkpoint, synthetic_image  # noqa: E402

TOKEN = "t0ken-of-label-studio"
CONFIG = f"""<View>
  <Image name="photo" value="$img"/>
  <RectangleLabels name="products" toName="photo">
    <Label value="Cola"/><Label value="{CLASSES[1]}"/><Label value="shelf tag"/>
  </RectangleLabels>
</View>"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return confident_ssd_checkpoint(tmp_path_factory.mktemp("labelling") / "tiny.pt")


class _LabelStudio(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen_auth: list[str] = []

    def do_GET(self):  # noqa: N802
        self.seen_auth.append(self.headers.get("Authorization", ""))
        data = self.files.get(self.path)
        ok = data is not None and self.headers.get("Authorization") == f"Token {TOKEN}"
        self.send_response(200 if ok else 401)
        body = data if ok else b"unauthorised"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def label_studio():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LabelStudio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def jpeg(seed: int, w: int = 120, h: int = 80) -> bytes:
    return cv2.imencode(".jpg", synthetic_image(w, h, seed))[1].tobytes()


def test_label_config_and_names():
    cfg = parse_label_config(CONFIG)
    assert (cfg.from_name, cfg.to_name, cfg.data_key) == ("products", "photo", "img")
    assert label_map(cfg.labels, CLASSES) == {0: "Cola", 1: CLASSES[1]}  # お茶 has no label
    assert label_map(["Milk carton", "tea-box"], ["milk_carton", "tea_box", "can"]) == {0: "Milk carton", 1: "tea-box"}


def test_predict_setup_webhook(weights, label_studio):
    _LabelStudio.files = {"/data/upload/1/shelf.jpg": jpeg(11)}
    app = create_app(ServeConfig(weights=str(weights), device="cpu"))
    reference = Predictor(weights, device="cpu", conf=0.05)
    with TestClient(app) as c:
        assert c.get("/health").json()["status"] == "UP"
        r = c.post("/setup", json={"project": "3.1700000000", "schema": CONFIG, "hostname": label_studio,
                                   "access_token": TOKEN})
        assert r.status_code == 200 and r.json()["model_version"].startswith("tiny-")
        version = r.json()["model_version"]
        inline = "data:image/jpeg;base64," + base64.b64encode(jpeg(12, 64, 96)).decode()
        tasks = [{"id": 1, "data": {"img": "/data/upload/1/shelf.jpg"}},
                 {"id": 2, "data": {"img": inline}},
                 {"id": 3, "data": {"img": "/data/upload/1/missing.jpg"}},
                 {"id": 4, "data": {"other": "x"}}]
        r = c.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "3.1700000000"})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 4 and all(p["model_version"] == version for p in results)
        assert results[2]["result"] == [] and results[3]["result"] == []  # bad tasks: empty, the rest go on
        assert f"Token {TOKEN}" in _LabelStudio.seen_auth
        for pred, data in ((results[0], jpeg(11)), (results[1], jpeg(12, 64, 96))):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            h, w = image.shape[:2]
            det = reference.predict([image])[0]
            want = [(b, s, CLASSES[1] if l == 1 else "Cola") for b, s, l in zip(det.boxes, det.scores, det.labels)
                    if s >= 0.25 and l in (0, 1)]
            assert len(pred["result"]) == len(want) > 0
            for region, (box, score, name) in zip(pred["result"], want):
                v = region["value"]
                assert (region["from_name"], region["to_name"], region["type"]) == ("products", "photo", "rectanglelabels")
                assert (region["original_width"], region["original_height"]) == (w, h)
                assert v["rectanglelabels"] == [name] and region["score"] == pytest.approx(float(score), abs=1e-4)
                x1, y1, x2, y2 = box.tolist()
                assert v["x"] == pytest.approx(100 * x1 / w, abs=1e-3) and v["y"] == pytest.approx(100 * y1 / h, abs=1e-3)
                assert v["width"] == pytest.approx(100 * (x2 - x1) / w, abs=1e-3)
                assert v["height"] == pytest.approx(100 * (y2 - y1) / h, abs=1e-3)
                assert 0 <= v["x"] <= 100 and 0 <= v["x"] + v["width"] <= 100 + 1e-6
        ev = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {}})
        assert ev.status_code == 200 and ev.json()["events"] == {"ANNOTATION_CREATED": 1}
        assert c.post("/webhook", json={"action": "PROJECT_UPDATED"}).json()["status"] == "Unknown event"
        # bad requests are 4xx with a message
        assert c.post("/predict", content=b"not json").status_code == 400
        assert c.post("/predict", json={"tasks": "x", "label_config": CONFIG}).status_code == 422
        bad = c.post("/predict", json={"tasks": [], "label_config": "<View><Text name='t' value='$t'/></View>"})
        assert bad.status_code == 422 and "RectangleLabels" in bad.json()["error"]["message"]
        none = c.post("/setup", json={"project": "4", "schema": CONFIG.replace("Cola", "Pepsi").replace(CLASSES[1], "x")})
        assert none.status_code == 422 and none.json()["error"]["code"] == "no_common_labels"
        # a project without /setup has no Label Studio address for its own files
        r = c.post("/predict", json={"tasks": tasks[:1], "label_config": CONFIG, "project": "9.1"})
        assert r.json()["results"][0]["result"] == []


def test_predictions_valid_for_label_studio(weights):
    """Label Studio's own rules (label-studio-sdk's LabelInterface), when installed."""
    li = pytest.importorskip("label_studio_sdk.label_interface")
    app = create_app(ServeConfig(weights=str(weights), device="cpu", conf=0.05))
    inline = "data:image/jpeg;base64," + base64.b64encode(jpeg(13)).decode()
    with TestClient(app) as c:
        results = c.post("/predict", json={"tasks": [{"id": 1, "data": {"img": inline}}], "label_config": CONFIG}).json()["results"]
    interface = li.LabelInterface(CONFIG)
    assert results[0]["result"]
    assert interface.validate_prediction(results[0], return_errors=True) in ([], True)
    broken = dict(results[0], result=[dict(results[0]["result"][0], value=dict(results[0]["result"][0]["value"], x=130))])
    assert interface.validate_prediction(broken, return_errors=True)  # the validator does catch a bad region


def test_cvat_function(weights):
    cvataa = pytest.importorskip("cvat_sdk.auto_annotation")
    from PIL import Image
    from cvat_sdk import models
    from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl

    from detect.serve import cvat

    fn = cvat.create(weights=str(weights), conf=0.25)
    assert isinstance(fn.spec, cvataa.DetectionFunctionSpec)
    assert [lab.name for lab in fn.spec.labels] == CLASSES
    bgr = synthetic_image(120, 80, 14)
    pil = Image.fromarray(bgr[:, :, ::-1].copy())  # CVAT hands RGB PIL images
    shapes = fn.detect(_DetectionFunctionContextImpl(frame_name="shelf.jpg"), pil)
    det = Predictor(weights, device="cpu", conf=0.05).predict([bgr])[0]
    want = [(b, l) for b, s, l in zip(det.boxes, det.scores, det.labels) if s >= 0.25]
    assert len(shapes) == len(want) > 0
    for shape, (box, label) in zip(shapes, want):
        assert str(shape.type) == "rectangle" and shape.label_id == label
        assert shape.points == pytest.approx(box.tolist(), abs=1e-3)
    strict = fn.detect(_DetectionFunctionContextImpl(frame_name="shelf.jpg", conf_threshold=0.99), pil)
    assert len(strict) == sum(1 for s in det.scores if s >= 0.99) < len(shapes)
    # cvat-sdk's own mapping onto a task whose labels are a subset, by name, with other ids
    task_labels = [models.Label(name=CLASSES[1], id=70, type="rectangle", attributes=[], sublabels=[]),
                   models.Label(name="price tag", id=71, type="rectangle", attributes=[], sublabels=[])]
    mapper = _AnnotationMapper(logging.getLogger("cvat"), fn.spec.labels, task_labels,
                               allow_unmatched_labels=True, conv_mask_to_poly=False)
    _, mapped = mapper.validate_and_remap(shapes, 5)
    assert len(mapped) == sum(1 for _, l in want if l == 1)
    assert all(s.label_id == 70 and s.frame == 5 and s.source == "auto" for s in mapped)


def test_webhook_collects_corrections_and_starts_fine_tuning(weights, label_studio, tmp_path, monkeypatch):
    """ANNOTATION_CREATED/UPDATED write the corrected task as Pascal VOC (read back here by the
    project's own dataset reader), ANNOTATION_DELETED removes it, START_TRAINING starts
    `detect train --weights <served weights>` on the folder (the subprocess is recorded, not run)."""
    from detect.data.spec import resolve_data
    from detect.serve import corrections

    _LabelStudio.files = {f"/data/upload/1/{i}.jpg": jpeg(20 + i, 100, 50) for i in range(3)}
    started = []

    class FakePopen:
        pid = 4242

        def __init__(self, cmd, **kwargs):
            started.append(cmd)

        def poll(self):
            return None

    monkeypatch.setattr(corrections.subprocess, "Popen", FakePopen)
    folder = tmp_path / "corrected"
    app = create_app(ServeConfig(weights=str(weights), device="cpu", label_studio_url=label_studio,
                                 label_studio_token=TOKEN, label_studio_dir=str(folder), finetune_minutes=3))
    project = {"id": 3, "label_config": CONFIG}

    def region(x, y, w, h, label):
        return {"type": "rectanglelabels", "from_name": "products", "to_name": "photo",
                "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}}

    with TestClient(app) as c:
        too_few = c.post("/webhook", json={"action": "START_TRAINING", "project": project}).json()
        assert too_few["status"] == "too few tasks"
        for i in range(3):
            r = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": project,
                                         "task": {"id": 10 + i, "data": {"img": f"/data/upload/1/{i}.jpg"}},
                                         "annotation": {"result": [region(10, 20, 30, 40, "Cola"),
                                                                   region(50, 0, 50, 100, "shelf tag"),
                                                                   region(0, 0, 5, 5, "unknown")]}})
            assert r.status_code == 200 and r.json()["saved"] == f"task-{10 + i}", r.text
        deleted = c.post("/webhook", json={"action": "ANNOTATION_DELETED", "project": project, "task": {"id": 12}})
        assert deleted.json()["tasks"] == 2
        bad = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": project,
                                       "task": {"id": 13, "data": {"img": "/data/upload/1/missing.jpg"}}, "annotation": {}})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "url_failed"
        run = c.post("/webhook", json={"action": "START_TRAINING", "project": project}).json()
        assert run["status"] == "started" and run["tasks"] == 2
        assert c.post("/webhook", json={"action": "START_TRAINING", "project": project}).json()["status"] == "busy"
    cmd = started[0]
    assert cmd[1:4] == ["-m", "detect", "train"] and cmd[cmd.index("--weights") + 1] == str(weights)
    assert cmd[cmd.index("--data") + 1] == str(folder) and cmd[cmd.index("--time") + 1] == "3.0"
    assert (folder / "classes.txt").read_text().split("\n")[:3] == ["Cola", CLASSES[1], "shelf tag"]
    records = []
    for split in ("train", "val"):
        records += resolve_data(str(folder), split).records
    assert sorted(Path(r.image).name for r in records) == ["task-10.jpg", "task-11.jpg"]
    for r in records:
        assert (r.width, r.height) == (100, 50)
        assert np.allclose(r.boxes, [[10, 10, 40, 30], [50, 0, 100, 50]], atol=1.0)
        assert r.labels.tolist() == [0, 2]
