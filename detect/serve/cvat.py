"""A CVAT auto-annotation function (``cvat-sdk``'s detection function interface).

    pip install cvat-cli
    cvat-cli --server-host http://cvat:8080 --auth USER task auto-annotate TASK_ID \\
        --function-module detect.serve.cvat -p weights=str:runs/train/best.pt -p conf=float:0.3

CVAT matches labels by name: the task's labels that have the name of a model class get
rectangles (``--allow-unmatched-labels`` when the model knows classes the task does not).
The boxes are ``Predictor.predict``'s, as in ``detect predict``; the threshold is CVAT's
``--conf-threshold`` when given, else ``conf``. cvat-sdk is imported only here (``pip install
cvat-sdk``), so the rest of the package never needs it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from detect.infer.predict import Predictor
from detect.serve.batcher import filter_detections


class DetectFunction:
    """``spec`` (the model's classes as rectangle labels) and ``detect(context, PIL image)``."""

    def __init__(self, weights: Optional[str] = None, device: str = "cpu", conf: float = 0.25, iou: float = 0.45,
                 max_det: int = 1000, predictor: Optional[Predictor] = None) -> None:
        import cvat_sdk.auto_annotation as cvataa

        self.conf = float(conf)
        self.predictor = predictor or Predictor(weights, device=device, conf=min(self.conf, 0.05), iou=iou,
                                                max_det=max_det)
        self.max_det = int(max_det)
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(name, i, type="rectangle") for i, name in enumerate(self.predictor.classes)])

    def detect(self, context, image) -> list:
        """Rectangles (xyxy pixels of ``image``) for every detection at or above the threshold."""
        import cvat_sdk.auto_annotation as cvataa

        rgb = np.asarray(image.convert("RGB"))  # PIL: RGB (H, W, 3) uint8
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # the Predictor takes BGR, as cv2.imread gives
        threshold = self.conf if context.conf_threshold is None else float(context.conf_threshold)
        det = filter_detections(self.predictor.predict([bgr])[0], threshold, self.max_det, None)
        return [cvataa.rectangle(int(label), [float(v) for v in box]) for box, label in zip(det.boxes, det.labels)]


def create(weights: Optional[str] = None, device: str = "cpu", conf: float = 0.25, iou: float = 0.45,
           max_det: int = 1000) -> DetectFunction:
    """What ``cvat-cli ... --function-module detect.serve.cvat -p name=type:value`` calls."""
    return DetectFunction(weights, device, conf, iou, max_det)
