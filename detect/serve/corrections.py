"""Label Studio's corrected tasks -> a Pascal VOC dataset to fine-tune on (``detect serve
--label-studio-dir DIR``), and the fine-tuning run its ``START_TRAINING`` webhook starts.

Each ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` event writes the task's image
(``JPEGImages/task-<id>.<ext>``, the bytes as Label Studio serves them) and its boxes
(``Annotations/task-<id>.xml``, labelImg's VOC through :func:`detect.data.formats.writers.voc_xml`;
Label Studio's percent of the image from the top-left corner -> pixels); ``ANNOTATION_DELETED``
removes them. ``classes.txt`` is the project's labels, ``ImageSets/Main/{train,val}.txt`` a
split fixed by task id (one in five to val). ``START_TRAINING`` runs ``detect train --data DIR
--weights <the served weights> --time MINUTES --out DIR/runs/trainN`` in a subprocess, one at a
time; the service keeps serving the old weights (restart it with the new ``best.pt``).
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from detect.serve.errors import ApiError
from detect.structures import ImageRecord
from detect.utils import atomic_write_bytes, atomic_write_text

_EXT = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"RIFF", ".webp"), (b"BM", ".bmp"))


def boxes_of(result: list, labels: list[str], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Label Studio ``rectanglelabels`` regions -> (float32[N, 4] xyxy pixels, int64[N] indices
    into ``labels``); regions of other types or unknown labels are skipped, boxes clipped."""
    boxes, ids = [], []
    for region in result or []:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        v = region.get("value") or {}
        names = v.get("rectanglelabels") or []
        if not names or names[0] not in labels:
            continue
        try:
            x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError):
            continue
        x1, y1 = max(0.0, x / 100 * width), max(0.0, y / 100 * height)
        x2, y2 = min(float(width), (x + w) / 100 * width), min(float(height), (y + h) / 100 * height)
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            boxes.append((x1, y1, x2, y2))
            ids.append(labels.index(names[0]))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(ids, np.int64)


class Corrections:
    """The dataset folder and the one fine-tuning run (see the module docstring)."""

    def __init__(self, root: str | Path, weights: Optional[str | Path], minutes: float = 10.0) -> None:
        self.root = Path(root)
        self.weights = str(weights) if weights else None
        self.minutes = float(minutes)
        self.job: Optional[subprocess.Popen] = None
        self.job_out: Optional[Path] = None

    def _stem(self, task_id: object) -> str:
        tid = str(task_id)
        if not tid.isdigit():
            raise ApiError(422, "bad_task", f"task id {tid!r} is not a number")
        return f"task-{tid}"

    def save(self, task_id: object, image: bytes, size: tuple[int, int], result: list, labels: list[str]) -> str:
        """Write one corrected task (image and VOC XML) and refresh the class and split files."""
        from detect.data.formats.writers import voc_xml

        stem = self._stem(task_id)
        ext = next((e for magic, e in _EXT if image.startswith(magic)), ".jpg")
        w, h = size
        boxes, ids = boxes_of(result, labels, w, h)
        for old in (self.root / "JPEGImages").glob(f"{stem}.*"):  # a re-upload in another format
            old.unlink()
        img_path = self.root / "JPEGImages" / f"{stem}{ext}"
        img_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(img_path, image)
        record = ImageRecord(str(img_path), w, h, boxes, ids, np.zeros(len(ids), bool), np.zeros(len(ids), bool))
        xml = self.root / "Annotations" / f"{stem}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(xml, voc_xml(record, labels, img_path.name, str(img_path)))
        atomic_write_text(self.root / "classes.txt", "\n".join(labels) + "\n")
        self._splits()
        return stem

    def delete(self, task_id: object) -> None:
        stem = self._stem(task_id)
        for p in [self.root / "Annotations" / f"{stem}.xml", *(self.root / "JPEGImages").glob(f"{stem}.*")]:
            p.unlink(missing_ok=True)
        self._splits()

    def _splits(self) -> None:
        stems = sorted(p.stem for p in (self.root / "Annotations").glob("task-*.xml"))
        val = [s for s in stems if zlib.crc32(s.encode()) % 5 == 0]
        if not val and len(stems) >= 2:
            val = stems[:1]
        train = [s for s in stems if s not in set(val)]
        sets = self.root / "ImageSets" / "Main"
        sets.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sets / "train.txt", "".join(f"{s}\n" for s in train))
        atomic_write_text(sets / "val.txt", "".join(f"{s}\n" for s in val))

    def tasks(self) -> int:
        return len(list((self.root / "Annotations").glob("task-*.xml")))

    def start_training(self) -> dict:
        """Start ``detect train --weights`` on the corrected tasks, unless one is running."""
        if self.job is not None and self.job.poll() is None:
            return {"status": "busy", "run": str(self.job_out), "pid": self.job.pid}
        n = self.tasks()
        if n < 2:
            return {"status": "too few tasks", "tasks": n, "message": "fine-tuning needs at least 2 corrected tasks"}
        runs = self.root / "runs"
        k = 1
        while (runs / f"train{k}").exists():
            k += 1
        self.job_out = runs / f"train{k}"
        cmd = [sys.executable, "-m", "detect", "train", "--data", str(self.root), "--out", str(self.job_out),
               "--time", str(self.minutes), "--no-progress"]
        if self.weights:
            cmd += ["--weights", self.weights]
        runs.mkdir(parents=True, exist_ok=True)
        log = open(runs / f"train{k}.log", "wb")
        try:
            self.job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()  # the child holds its own copy
        return {"status": "started", "run": str(self.job_out), "pid": self.job.pid, "tasks": n,
                "log": str(runs / f"train{k}.log")}
