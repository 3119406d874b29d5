"""Annotated video output: an MP4 with the source's frame rate and frame size, in H.264 (what
browsers play) where an encoder is available, else MPEG-4 Part 2 (``mp4v``).

OpenCV's PyPI wheels have no H.264 encoder (no x264 or OpenH264: licensing), so H.264 goes
through PyAV (``av``, BSD; its wheels bundle FFmpeg with libx264): ``libx264``, ``yuv420p``,
CRF 23, preset ``ultrafast`` (720p: about the speed of OpenCV's mp4v at a third of its file
size), ``+faststart`` (playable while it downloads). yuv420p needs an even width and height:
an odd side gets one black pixel row or column. Without PyAV (or an FFmpeg without libx264)
the sink falls back to OpenCV's ``mp4v`` and says so once on stderr; :attr:`VideoSink.codec`
tells which was used (``detect predict`` prints it).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

H264 = "h264 (PyAV, libx264)"
MP4V = "mp4v (OpenCV)"
_NOTED: list[bool] = []  # the fallback note is printed once per process


def h264_available() -> bool:
    """Whether PyAV with a libx264 encoder is installed (the wheels of ``av`` have it)."""
    try:
        import av

        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # ImportError, av's UnknownCodecError
        return False


class _AvWriter:
    """``cv2.VideoWriter``'s ``write``/``release``/``isOpened`` over PyAV's libx264 encoder."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import av

        self.w, self.h = size
        self.container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = self.w + self.w % 2, self.h + self.h % 2  # yuv420p: even sides
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23", "preset": "ultrafast"}  # about mp4v's speed, a third of its size
        self._av = av

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoWriter's spelling)
        return True

    def write(self, frame: np.ndarray) -> None:
        if self.w % 2 or self.h % 2:
            frame = cv2.copyMakeBorder(frame, 0, self.h % 2, 0, self.w % 2, cv2.BORDER_CONSTANT)
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        for packet in self.stream.encode(vf):
            self.container.mux(packet)

    def release(self) -> None:
        for packet in self.stream.encode():  # flush the encoder's delayed frames
            self.container.mux(packet)
        self.container.close()


class VideoSink:
    """Write BGR uint8 frames to ``path`` at ``fps``; the frame size is fixed by the first frame
    (or ``size=(w, h)``), and later frames of another size are resized to it.

    Args:
        depth: frames waiting for the encoder at most (0: encode in the caller's thread).
    """

    def __init__(self, path: str | Path, fps: float, size: Optional[tuple[int, int]] = None, fourcc: str = "auto",
                 depth: int = 4) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else 30.0  # streams/webcams may report 0
        self.size = size
        self.fourcc = fourcc  # "auto": H.264 through PyAV when available, else mp4v; or an OpenCV fourcc
        self.codec = ""  # which encoder wrote the file (H264 or MP4V), once the first frame is written
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
        if self.fourcc == "auto" and h264_available():
            self._writer, self.codec = _AvWriter(self._tmp, self.fps, (w, h)), H264
        else:
            fourcc = "mp4v" if self.fourcc == "auto" else self.fourcc
            if self.fourcc == "auto" and not _NOTED:
                _NOTED.append(True)
                print("note: no H.264 encoder (pip install av for PyAV's libx264): annotated videos are MPEG-4 Part 2 "
                      "(mp4v), which browsers do not play", file=sys.stderr)
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
            self.codec = MP4V if fourcc == "mp4v" else f"{fourcc} (OpenCV)"
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write {fourcc} video here (codec missing or folder not writable)")
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
