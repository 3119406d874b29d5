"""Plain data types shared by every stage.

One box format inside the code: float xyxy, 0-based pixels, with ``x2``/``y2`` the
continuous right/bottom edge (a box covering pixel columns 0..9 is [0, 10)). VOC's
1-based inclusive integer corners are converted in :mod:`detect.data.formats.voc`, where data
enters, and nowhere else.

Class labels are 0-based indices into the dataset's class list everywhere outside the
models; a model that needs a background class adds it internally and removes it again
before returning detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageRecord:
    """One annotated image of a cache.

    Attributes:
        image: path of the image file ("" when it could not be found).
        width, height: real image size in pixels (the image wins over the XML's ``<size>``).
        boxes (float32[N, 4]): xyxy, 0-based pixels, clipped to the image.
        labels (int64[N]): 0-based indices into the cache's ``classes``.
        difficult (bool[N]), truncated (bool[N]): VOC flags (False when absent).
        annotation: path of the XML file the record came from.
    """

    image: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    annotation: str = ""

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Problem:
    """A defect found in the input: which file, what kind, and a message saying what to fix."""

    file: str
    kind: str  # e.g. "parse_error", "degenerate_box", "box_clipped", "unknown_class", "missing_image", "size_mismatch"
    message: str

    def __str__(self) -> str:  # bytes of a file name that are not UTF-8 as \xNN: printable to any stream
        text = f"{self.file}: [{self.kind}] {self.message}"
        return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Unreadable:
    """A dataset item whose image could no longer be read (deleted, truncated or changed since
    the cache was built): what :class:`~detect.data.dataset.DetectionDataset` returns with
    ``skip_unreadable``; its ``collate`` drops it from the batch and lists it."""

    index: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Detections:
    """Detections of one image, in the original image's pixels (see :mod:`detect.infer.predict`).

    Attributes:
        boxes (float32[K, 4]): xyxy, 0-based pixels of the original image, clipped to it.
        scores (float32[K]): confidences in [0, 1], sorted high to low.
        labels (int64[K]): 0-based indices into ``classes``.
        classes: the model's class names (all of them, not only the detected ones).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def names(self) -> list[str]:
        """Class name of each detection (length K)."""
        return [self.classes[int(i)] for i in self.labels]

    def counts(self) -> dict[str, int]:
        """Products per class in this image (shelf counting); classes with none are left out."""
        ids, n = np.unique(self.labels, return_counts=True)
        return {self.classes[int(i)]: int(c) for i, c in zip(ids, n)}

    def to_list(self, decimals: int = 2) -> list[dict]:
        """JSON-ready rows: ``{"box": [x1, y1, x2, y2], "score", "label", "name"}``."""
        return [
            {"box": [round(float(v), decimals) for v in b], "score": round(float(s), 4), "label": int(l), "name": self.classes[int(l)]}
            for b, s, l in zip(self.boxes, self.scores, self.labels)
        ]
