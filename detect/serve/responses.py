"""Response bodies: this service's own JSON, and Roboflow's hosted-API shape.

Every shape is made from a :class:`~detect.structures.Detections` (float xyxy, 0-based pixels
of the image as sent) by a pure function; only the Roboflow one converts boxes (to centre x/y,
width, height, the format its clients read).
"""

from __future__ import annotations

import uuid

import numpy as np

from detect.structures import Detections


def detect_body(det: Detections, image: np.ndarray, model: str, options: dict, timing: dict) -> dict:
    """``POST /v1/detect``: ``{"model", "image": {"width", "height"}, "detections": [{"box":
    [x1, y1, x2, y2], "score", "label", "name"}], "counts": {name: n}, "options", "time_ms"}``;
    detections and counts are those of ``detect predict --save-json``."""
    h, w = image.shape[:2]
    return {"model": model, "image": {"width": int(w), "height": int(h)}, "detections": det.to_list(),
            "counts": det.counts(), "options": options, "time_ms": timing}


def roboflow_body(det: Detections, image: np.ndarray, seconds: float) -> dict:
    """Roboflow's object-detection response: ``{"time", "image": {"width", "height"},
    "predictions": [{"x", "y", "width", "height", "confidence", "class", "class_id",
    "detection_id"}]}`` with x/y the box centre in pixels."""
    h, w = image.shape[:2]
    preds = []
    for (x1, y1, x2, y2), s, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
        preds.append({"x": round((x1 + x2) / 2, 1), "y": round((y1 + y2) / 2, 1), "width": round(x2 - x1, 1),
                      "height": round(y2 - y1, 1), "confidence": round(s, 4), "class": det.classes[label],
                      "class_id": int(label), "detection_id": str(uuid.uuid4())})
    return {"time": round(seconds, 4), "image": {"width": int(w), "height": int(h)}, "predictions": preds}


def ms(seconds: float) -> float:
    """Seconds -> milliseconds, as the ``time_ms`` of a response shows them."""
    return round(seconds * 1000.0, 2)
