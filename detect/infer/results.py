"""Tabular outputs of ``detect predict``: detections and per-class product counts (shelf
counting) per image or video frame, as JSON lines and CSV, and the run summary.

Files (in the save folder):
- ``detections.jsonl``: one line per image/frame:
  ``{"source", "frame", "width", "height", "detections": [{"box": [x1, y1, x2, y2], "score",
  "label", "name"}], "counts": {name: n}}``; unreadable inputs get a line with ``"error"``.
- ``detections.csv``: one row per detection: ``source, frame, x1, y1, x2, y2, score, label, name``.
- ``counts.csv``: one row per image/frame, one column per class (products of that class).
- ``summary.json``: totals (see :meth:`Summary.to_dict`).

Lines are appended as frames are processed (an endless stream still produces them) into a
temporary file that is renamed to its final name when the run ends, interrupted or not.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional

from detect.infer.sources import Frame
from detect.structures import Detections
from detect.utils import atomic_write_text


class _StreamFile:
    """A text file written under a temporary name and renamed on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.part")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f: IO[str] = open(self.tmp, "w", encoding="utf-8", newline="")

    def close(self) -> Path:
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.path


class ResultWriter:
    """Append detections of each image/frame to the JSON lines and/or CSV files."""

    def __init__(self, save_dir: Path, classes: list[str], jsonl: bool, csv_: bool) -> None:
        self.classes = classes
        self.files: list[_StreamFile] = []
        self.jsonl = self._open(save_dir / "detections.jsonl") if jsonl else None
        self.det_csv = self.count_csv = None
        if csv_:
            self.det_csv = csv.writer(self._open(save_dir / "detections.csv").f)
            self.det_csv.writerow(["source", "frame", "x1", "y1", "x2", "y2", "score", "label", "name"])
            self.count_csv = csv.writer(self._open(save_dir / "counts.csv").f)
            self.count_csv.writerow(["source", "frame", "total", *classes])

    def _open(self, path: Path) -> _StreamFile:
        self.files.append(_StreamFile(path))
        return self.files[-1]

    def write(self, frame: Frame, det: Optional[Detections], size: Optional[tuple[int, int]] = None) -> None:
        """One image/frame's rows; ``size`` (h, w) when ``frame`` carries no image (``--ray``)."""
        if self.jsonl is not None:
            row: dict = {"source": frame.path, "frame": frame.frame}
            if det is None:
                row["error"] = frame.error
            else:
                h, w = size or frame.image.shape[:2]
                row.update(width=w, height=h, detections=det.to_list(), counts=det.counts())
            self.jsonl.f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if det is not None and self.det_csv is not None:
            fr = "" if frame.frame is None else frame.frame
            for d in det.to_list():
                self.det_csv.writerow([frame.path, fr, *d["box"], d["score"], d["label"], d["name"]])
            counts = det.counts()
            self.count_csv.writerow([frame.path, fr, len(det), *(counts.get(c, 0) for c in self.classes)])

    def close(self) -> list[Path]:
        return [f.close() for f in self.files]


@dataclass
class Summary:
    """Totals of a predict run: what was processed, what failed, what was found."""

    images: int = 0  # still images processed
    frames: int = 0  # video/stream frames processed
    failed: list[str] = field(default_factory=list)  # "path[#frame]: why" of every input that failed
    detections: int = 0
    per_class: Counter = field(default_factory=Counter)
    outputs: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    elapsed: float = 0.0
    extra: dict = field(default_factory=dict)  # more facts for summary.json (--ray: the cluster's share)

    def add(self, frame: Frame, det: Optional[Detections]) -> None:
        if det is None:
            where = frame.path if frame.frame is None else f"{frame.path}#{frame.frame}"
            self.failed.append(f"{where}: {frame.error}")
            return
        if frame.frame is None:
            self.images += 1
        else:
            self.frames += 1
        self.detections += len(det)
        self.per_class.update(det.counts())

    @property
    def processed(self) -> int:
        return self.images + self.frames

    def finish(self) -> None:
        self.elapsed = time.perf_counter() - self.started

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "frames": self.frames,
            "failed": len(self.failed),
            "failures": self.failed,
            "detections": self.detections,
            "per_class": dict(self.per_class.most_common()),
            "seconds": round(self.elapsed, 3),
            "fps": round(self.processed / self.elapsed, 2) if self.elapsed > 0 else None,
            "outputs": self.outputs,
            **self.extra,
        }

    def text(self, max_failures: int = 20) -> str:
        out = io.StringIO()
        fps = self.processed / self.elapsed if self.elapsed > 0 else 0.0
        out.write(f"processed {self.images} images and {self.frames} video frames in {self.elapsed:.1f}s ({fps:.1f}/s); ")
        out.write(f"{self.detections} products found\n")
        if self.per_class:
            w = max(len(k) for k in self.per_class)
            for name, n in self.per_class.most_common():
                out.write(f"  {name:<{w}}  {n}\n")
        if self.failed:
            out.write(f"{len(self.failed)} inputs failed:\n")
            for f in self.failed[:max_failures]:
                out.write(f"  {f}\n")
            if len(self.failed) > max_failures:
                out.write(f"  ... and {len(self.failed) - max_failures} more (see summary.json)\n")
        return out.getvalue().rstrip("\n")

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
