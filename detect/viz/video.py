"""Annotated video output: an MP4 (``mp4v``) with the source's frame rate and frame size.

Frames are encoded in a background thread (OpenCV releases the GIL while it encodes, so the
next frame is detected meanwhile) through a queue of a few frames, so memory stays flat over
any length. The file is written under a temporary name beside the target and renamed when
closed, so an interrupted run never leaves a half-written file under the final name (it does
leave the finished part, renamed, when :meth:`VideoSink.close` runs from a ``finally``).
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Optional

import cv2
import numpy as np


class VideoSink:
    """Write BGR uint8 frames to ``path`` at ``fps``; the frame size is fixed by the first frame
    (or ``size=(w, h)``), and later frames of another size are resized to it.

    Args:
        depth: frames waiting for the encoder at most (0: encode in the caller's thread).
    """

    def __init__(self, path: str | Path, fps: float, size: Optional[tuple[int, int]] = None, fourcc: str = "mp4v",
                 depth: int = 4) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 30.0  # streams/webcams may report 0
        self.size = size
        self.fourcc = fourcc
        self.frames = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self._writer: Optional[cv2.VideoWriter] = None
        self._depth = depth
        self._queue: Optional[queue.Queue] = None
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def _open(self, w: int, h: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (w, h)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
        if not self._writer.isOpened():
            raise OSError(f"{self.path}: OpenCV cannot write {self.fourcc} video here (codec missing or folder not writable)")
        if self._depth > 0:
            self._queue = queue.Queue(maxsize=self._depth)
            self._thread = threading.Thread(target=self._encode, name="detect-encode", daemon=True)
            self._thread.start()

    def _encode(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            try:
                self._writer.write(frame)
            except BaseException as e:  # reported by the next write() or close()
                self._error = e

    def write(self, frame: np.ndarray) -> None:
        """Queue one frame (the caller may reuse its own array afterwards only if it passed a
        copy: the frame is encoded later)."""
        if self._error is not None:
            raise self._error
        if self._writer is None:
            w, h = self.size or (frame.shape[1], frame.shape[0])
            self._open(w, h)
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        if self._queue is not None:
            self._queue.put(frame)
        else:
            self._writer.write(frame)
        self.frames += 1

    def close(self) -> Optional[Path]:
        """Finish the file and move it to its final name; returns the path (None when no frame
        was written)."""
        if self._writer is None:
            return None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = self._queue = None
        self._writer.release()
        self._writer = None
        os.replace(self._tmp, self.path)
        if self._error is not None:
            raise self._error
        return self.path

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def video_info(path: str | Path) -> dict:
    """``{"frames", "fps", "width", "height"}`` of a video file as OpenCV reads it (frames are
    counted by decoding, not taken from the header)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"{path}: cannot open video")
    try:
        info = {"fps": float(cap.get(cv2.CAP_PROP_FPS)), "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
        n = 0
        while cap.grab():
            n += 1
        info["frames"] = n
        return info
    finally:
        cap.release()
