"""Label Studio's ML backend, served by ``detect serve`` beside the web API.

In Label Studio: Settings -> Model -> Connect model, URL ``http://HOST:8000`` (the ``detect serve``
address). Label Studio then calls

- ``GET /health``: is the backend up (``{"status": "UP"}``);
- ``POST /setup``: ``{"project", "schema" (the labelling config), "hostname", "access_token"}``
  -> ``{"model_version"}``;
- ``POST /predict``: ``{"tasks", "label_config", "project"}`` -> ``{"results": [one prediction per
  task]}``; each prediction is ``{"result": [regions], "score", "model_version"}``, a region
  ``{"from_name", "to_name", "type": "rectanglelabels", "original_width", "original_height",
  "value": {"x", "y", "width", "height", "rotation": 0, "rectanglelabels": [name]}, "score"}``
  with x/y/width/height in percent of the image from its top-left corner;
- ``POST /webhook``: annotation events (``ANNOTATION_CREATED`` ...); with ``detect serve
  --label-studio-dir DIR`` each corrected task is saved there as Pascal VOC and
  ``START_TRAINING`` fine-tunes the served weights on them (:mod:`detect.serve.corrections`).

The labelling config's first ``<RectangleLabels>`` names the regions; model classes map to its
``<Label value>`` by name (exactly, else ignoring case, spaces, ``-`` and ``_``); classes
without a label are left out. Task images are read from the task's data: Label Studio's own
files (``/data/upload/...``, ``/data/local-files/...``) from its address with its token (the
``hostname``/``access_token`` of ``/setup``, else ``--label-studio-url`` and
``$LABEL_STUDIO_API_KEY``), ``http(s)`` URLs of that host or of an ``--allow-urls`` host, and
``data:`` URIs. The detections are ``Predictor.predict``'s, through the service's batcher.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from fastapi import FastAPI, Request

from detect.serve.corrections import Corrections
from detect.serve.errors import ApiError
from detect.serve.service import Service
from detect.serve.uploads import fetch_url
from detect.structures import Detections

EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")


@dataclass
class LabelConfig:
    """What a labelling config says about rectangles: the control (``from_name``), the image
    (``to_name``), the task data key holding the image, and the label names."""

    from_name: str
    to_name: str
    data_key: str
    labels: list[str]


def parse_label_config(xml: str) -> LabelConfig:
    """The first ``<RectangleLabels>`` of a labelling config and the ``<Image>`` it labels
    (an :class:`ApiError` 422 when there is none). Parsed without entities or network."""
    from lxml import etree

    from detect.data.formats.xml_file import parse_xml

    try:
        root = parse_xml(xml.encode("utf-8") if isinstance(xml, str) else xml)
    except (etree.XMLSyntaxError, ValueError) as e:
        raise ApiError(422, "bad_label_config", f"the labelling config is not XML ({e})") from None
    for control in root.iter("RectangleLabels"):
        to_name = control.get("toName", "")
        image = next((im for im in root.iter("Image") if im.get("name") == to_name), None)
        if image is None:
            continue
        value = image.get("value", "")
        labels = [lab.get("value") for lab in control.iter("Label") if lab.get("value")]
        return LabelConfig(control.get("name", ""), to_name, value[1:] if value.startswith("$") else value, labels)
    raise ApiError(422, "bad_label_config", "the labelling config has no <RectangleLabels> on an <Image>; "
                   "this backend predicts rectangles")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def label_map(labels: list[str], classes: list[str]) -> dict[int, str]:
    """Model class id -> Label Studio label: the same name, else the same ignoring case,
    spaces, ``-`` and ``_`` (``milk_carton`` finds ``Milk carton``)."""
    exact = {name: name for name in labels}
    loose = {_key(name): name for name in labels}
    out = {}
    for i, c in enumerate(classes):
        hit = exact.get(c) or loose.get(_key(c))
        if hit is not None:
            out[i] = hit
    return out


def to_prediction(det: Detections, width: int, height: int, cfg: LabelConfig, labels: dict[int, str],
                  model_version: str) -> dict:
    """One task's prediction: rectangles in percent of the image from its top-left corner."""
    result = []
    for k, ((x1, y1, x2, y2), score, label) in enumerate(zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist())):
        name = labels.get(int(label))
        if name is None:
            continue
        result.append({
            "id": f"detect-{k}", "from_name": cfg.from_name, "to_name": cfg.to_name, "type": "rectanglelabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"x": 100.0 * x1 / width, "y": 100.0 * y1 / height, "width": 100.0 * (x2 - x1) / width,
                      "height": 100.0 * (y2 - y1) / height, "rotation": 0, "rectanglelabels": [name]},
            "score": round(float(score), 4),
        })
    score = sum(r["score"] for r in result) / len(result) if result else 0.0
    return {"result": result, "score": round(score, 4), "model_version": model_version}


def model_version(svc: Service) -> str:
    """``<weights stem>-<first 8 hex of its SHA-256>``: changes whenever the weights do."""
    path = svc.predictor.weights
    if path is None:
        return svc.model_name
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{svc.model_name}-{h.hexdigest()[:8]}"


@dataclass
class Access:
    """Where a project's Label Studio is and the token to read its files."""

    url: str = ""
    token: str = ""


class Backend:
    """State of the Label Studio routes: the model version, each project's Label Studio access
    (from ``/setup``; the default from the command line), and webhook counts."""

    def __init__(self, svc: Service, url: str = "", token: str = "") -> None:
        self.svc = svc
        self.version = model_version(svc)
        self.default = Access(url.rstrip("/"), token)
        self.projects: dict[str, Access] = {}
        self.events: dict[str, int] = {}
        self.corrections: Optional[Corrections] = None

    def access(self, project: Any) -> Access:
        pid = str(project or "").split(".", 1)[0]
        return self.projects.get(pid, self.default)

    async def image_bytes(self, ref: Any, access: Access) -> bytes:
        """The bytes of a task's image reference (see the module docstring)."""
        if not isinstance(ref, str) or not ref:
            raise ApiError(422, "bad_task", f"the task's image is {ref!r}, not a URL or path")
        if ref.startswith("data:"):
            try:
                return base64.b64decode(ref.split(",", 1)[1])
            except (IndexError, ValueError):
                raise ApiError(422, "bad_task", "the task's data: URI is not base64") from None
        parts = urllib.parse.urlsplit(ref)
        ls_host = urllib.parse.urlsplit(access.url).hostname if access.url else None
        if not parts.scheme:  # Label Studio's own file: /data/upload/..., /data/local-files/?d=...
            if not access.url:
                raise ApiError(422, "no_label_studio_url", f"the task's image {ref} is a Label Studio file; start "
                               "detect serve with --label-studio-url (and $LABEL_STUDIO_API_KEY), or let Label "
                               "Studio send its hostname in /setup")
            ref = access.url + "/" + ref.lstrip("/")
            parts = urllib.parse.urlsplit(ref)
        allowed = set(self.svc.allow_urls) | ({ls_host} if ls_host else set())
        headers = {"Authorization": f"Token {access.token}"} if access.token and parts.hostname == ls_host else {}
        return await fetch_url(ref, frozenset(allowed), self.svc.cfg.max_bytes, headers=headers)


def add_routes(app: FastAPI, svc: Service, auth: Callable[[Request], None], url: str = "", token: str = "",
               corrections: Optional[Corrections] = None) -> Backend:
    """Label Studio's routes on ``app`` (``/health`` is the service's own); with ``corrections``
    the webhook collects corrected tasks and starts fine-tuning (:mod:`detect.serve.corrections`)."""
    backend = Backend(svc, url, token)
    backend.corrections = corrections

    async def json_body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise ApiError(400, "bad_json", "the body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object")
        return data

    @app.post("/setup", tags=["label studio"], summary="Label Studio: connect a project")
    async def setup(request: Request) -> dict:
        auth(request)
        data = await json_body(request)
        schema = data.get("schema") or data.get("label_config")
        if schema:
            cfg = parse_label_config(schema)
            if not label_map(cfg.labels, svc.classes):
                raise ApiError(422, "no_common_labels", f"none of the project's labels ({', '.join(cfg.labels)}) "
                               f"is a class of this model ({', '.join(svc.classes)})")
        if data.get("hostname"):
            pid = str(data.get("project") or "").split(".", 1)[0]
            backend.projects[pid] = Access(str(data["hostname"]).rstrip("/"), str(data.get("access_token") or ""))
        return {"model_version": backend.version}

    @app.post("/predict", tags=["label studio"], summary="Label Studio: pre-label tasks")
    async def predict(request: Request) -> dict:
        t0 = time.perf_counter()
        auth(request)
        data = await json_body(request)
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise ApiError(422, "bad_tasks", "'tasks' must be a list of Label Studio tasks")
        cfg = parse_label_config(data.get("label_config") or "")
        labels = label_map(cfg.labels, svc.classes)
        access = backend.access(data.get("project"))
        opts = svc.options()
        results = []
        for task in tasks:
            ref = (task.get("data") or {}).get(cfg.data_key) if isinstance(task, dict) else None
            try:
                with svc.batcher.arriving():
                    image = await svc.decode_async(await backend.image_bytes(ref, access))
                    pending = svc.submit(image, opts)
                det, _ = await svc.result(pending, opts)
            except ApiError as e:  # one bad task: an empty prediction for it, the others go on
                tid = task.get("id") if isinstance(task, dict) else None
                print(f"detect serve: Label Studio task {tid}: {e.message}", file=sys.stderr)
                svc.metrics.errors.labels("/predict", e.code).inc()
                results.append({"result": [], "score": 0.0, "model_version": backend.version})
                continue
            h, w = image.shape[:2]
            results.append(to_prediction(det, w, h, cfg, labels, backend.version))
        svc.metrics.answered("/predict", time.perf_counter() - t0)
        return {"results": results, "model_version": backend.version}

    @app.post("/webhook", tags=["label studio"], summary="Label Studio: annotation events")
    async def webhook(request: Request) -> dict:
        auth(request)
        data = await json_body(request)
        event = str(data.get("action") or "")
        if event not in EVENTS:
            return {"status": "Unknown event", "action": event}
        backend.events[event] = backend.events.get(event, 0) + 1
        out = {"status": "ok", "action": event, "events": dict(backend.events)}
        corrections = backend.corrections
        if corrections is None:
            return {**out, "message": "start detect serve with --label-studio-dir DIR to collect corrected tasks "
                    "and fine-tune on them"}
        if event == "START_TRAINING":
            return {**out, **corrections.start_training()}
        project = data.get("project") if isinstance(data.get("project"), dict) else {}
        task = data.get("task") if isinstance(data.get("task"), dict) else {}
        annotation = data.get("annotation") if isinstance(data.get("annotation"), dict) else {}
        task_id = task.get("id", annotation.get("task"))
        if event == "ANNOTATION_DELETED":
            corrections.delete(task_id)
            return {**out, "tasks": corrections.tasks()}
        cfg = parse_label_config(project.get("label_config") or "")
        raw = await backend.image_bytes((task.get("data") or {}).get(cfg.data_key), backend.access(project.get("id")))
        image = await svc.decode_async(raw)  # checked: readable, within the pixel limit
        stem = corrections.save(task_id, raw, (image.shape[1], image.shape[0]), annotation.get("result") or [], cfg.labels)
        return {**out, "saved": stem, "tasks": corrections.tasks()}

    return backend
