"""Inference sources as generators: one image, a folder, a glob, a .txt list of paths, a video
file, a webcam index or an RTSP/HTTP(S)/RTMP stream URL.

Every source yields :class:`Frame` items one at a time, so memory stays flat on long videos
and endless streams. Bad input is an item too: an unreadable image, a video that will not
open or a corrupt video frame yields a ``Frame`` with ``image=None`` and ``error`` set; the
caller reports it and goes on. :func:`prefetch` moves decoding to a small background thread
with a bounded queue, so the next frames are decoded while the model runs on this one
(OpenCV releases the GIL while it decodes).
"""

from __future__ import annotations

import glob
import io
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from detect.data.images import IMAGE_EXTS, MAX_PIXELS, header_pixels, header_pixels_of  # IMAGE_EXTS: what cv2.imread decodes
from detect.errors import UsageError
from detect.readers import FileReadError, read_file

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".ts", ".3gp", ".gif", ".asf", ".mts"}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceError(UsageError):
    """The source does not exist or names nothing readable (a usage error: exit code 2)."""


@dataclass
class Frame:
    """One decoded image or video frame.

    Attributes:
        image (uint8[H, W, 3] BGR or None): ``None`` when it could not be read (see ``error``).
        path: file or stream it came from.
        index: running number over the whole source (0, 1, 2 ...).
        frame: frame number inside a video or stream, ``None`` for still images.
        kind: ``"image"``, ``"video"`` or ``"stream"``.
        fps: frames per second of a video/stream (0 for images or when unknown).
        root: folder the source was a listing of (to keep relative output paths), else None.
        error: why the image is missing, ``None`` when it was read.
    """

    image: Optional[np.ndarray]
    path: str
    index: int = 0
    frame: Optional[int] = None
    kind: str = "image"
    fps: float = 0.0
    root: Optional[str] = None
    error: Optional[str] = None


def is_stream(source: str) -> bool:
    return source.lower().startswith(STREAM_PREFIXES) or source.isdigit()


def expand(source: str) -> tuple[list[str], Optional[str]]:
    """The files a file/folder/glob/.txt source names, sorted, and the folder to keep output
    paths relative to. Raises :class:`SourceError` when the source names nothing."""
    p = Path(source)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS and f.is_file())
        if not files:
            raise SourceError(f"{source}: folder has no images or videos (looked for {', '.join(sorted(IMAGE_EXTS)[:6])} ...)")
        return files, str(p)
    if p.suffix.lower() == ".txt" and p.exists() and not p.is_dir():  # a FIFO too: the reader names it
        base = p.parent
        files = []
        try:  # the bounded reader: a FIFO or a link to /dev/zero is refused, not read forever
            text = read_file(p, "list of paths").decode("utf-8", "replace")
        except FileReadError as e:
            raise SourceError(str(e)) from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                f = Path(line)
                files.append(str(f if f.is_absolute() else base / f))
        if not files:
            raise SourceError(f"{source}: list of paths is empty")
        return files, None
    if p.is_file():
        return [str(p)], None
    if any(c in source for c in "*?["):
        files = sorted(f for f in glob.glob(source, recursive=True) if Path(f).is_file())
        if not files:
            raise SourceError(f"{source}: no file matches this pattern")
        return files, None
    raise SourceError(f"{source}: no such file, folder, pattern or stream")


def iter_source(source: str, stream_retries: int = 30, max_pixels: int = MAX_PIXELS) -> Iterator[Frame]:
    """Yield every frame of ``source`` (see the module docstring); images above ``max_pixels``
    (0: no limit) are error items, not decoded. Raises :class:`SourceError` before the first
    item when the source does not exist."""
    if is_stream(source):
        cap_src: int | str = int(source) if source.isdigit() else source
        return _iter_capture(cap_src, source, "stream", 0, max_failures=stream_retries)
    files, root = expand(source)
    return _iter_files(files, root, max_pixels)


def _iter_files(files: list[str], root: Optional[str], max_pixels: int = MAX_PIXELS) -> Iterator[Frame]:
    index = 0
    for f in files:
        if Path(f).suffix.lower() in VIDEO_EXTS:
            for fr in _iter_capture(f, f, "video", index):
                fr.root = root
                index += 1
                yield fr
        else:
            image, error = read_image(f, max_pixels)
            yield Frame(image, f, index, None, "image", 0.0, root, error)
            index += 1


def read_image(path: str, max_pixels: int = MAX_PIXELS) -> tuple[Optional[np.ndarray], Optional[str]]:
    """Read an image as uint8 BGR ``[H, W, 3]`` (EXIF orientation applied; grey, alpha and
    16-bit images converted). Returns ``(image, None)`` or ``(None, reason)``; an image of more
    than ``max_pixels`` pixels by its header (0: no limit) is not decoded (a small file can
    decode to gigabytes)."""
    try:
        too_big = _above_limit(header_pixels(path), max_pixels) if max_pixels else None
    except OSError as e:
        return None, f"cannot read file: {e.strerror or e}"
    if too_big:
        return None, too_big
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: non-ASCII paths work on every OS
    except OSError as e:
        return None, f"cannot read file: {e.strerror or e}"
    return _decode(data)


def decode_bytes(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[Optional[np.ndarray], Optional[str]]:
    """:func:`read_image` of an image already in memory (an upload to ``detect serve``): the
    same pixel limit read from the header before anything is decoded, the same decoder."""
    too_big = _above_limit(header_pixels_of(io.BytesIO(data)), max_pixels) if max_pixels and data else None
    if too_big:
        return None, too_big
    return _decode(np.frombuffer(data, dtype=np.uint8))


def _above_limit(size: Optional[tuple[int, str]], max_pixels: int) -> Optional[str]:
    """Why an image of ``size`` (:func:`header_pixels`) is refused, or None."""
    if size is None or size[0] <= max_pixels:
        return None
    pixels, dims = size
    return (f"image of {dims + ' = ' if dims else ''}{_megapixels(pixels)} megapixels, above the limit of "
            f"{_megapixels(max_pixels)} (--max-pixels); not decoded")


def _decode(data: np.ndarray) -> tuple[Optional[np.ndarray], Optional[str]]:
    if data.size == 0:
        return None, "empty file"
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None, "not a readable image (corrupt or unsupported format)"
    return image, None


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}" if pixels >= 1e6 else f"{pixels / 1e6:.2g}"


def _iter_capture(cap_src: int | str, name: str, kind: str, start_index: int, max_failures: int = 30) -> Iterator[Frame]:
    """Frames of a video file or a stream. A frame that fails to decode is yielded as an error
    item and skipped; ``max_failures`` failures in a row end the source (a dead stream, or a
    file truncated beyond repair), reported as one more error item."""
    cap = cv2.VideoCapture(cap_src)
    if not cap.isOpened():
        what = f"webcam {cap_src}" if isinstance(cap_src, int) else kind
        yield Frame(None, name, start_index, None, kind, 0.0, None, f"cannot open {what} (missing codec, corrupt file, no such camera or unreachable stream)")
        return
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "video" else 0
        index, frame_no, failures, shape = start_index, 0, 0, None
        while True:
            ok, image = cap.read()
            if ok and image is not None and image.size and (shape is None or image.shape == shape):
                shape = image.shape
                failures = 0
                yield Frame(image, name, index, frame_no, kind, fps)
            else:
                at_end = kind == "video" and (total <= 0 or frame_no >= total)
                if not ok and at_end:
                    return
                failures += 1
                why = "frame has a different size than the first" if ok and image is not None and image.size else "frame failed to decode"
                yield Frame(None, name, index, frame_no, kind, fps, None, why)
                if failures >= max_failures:
                    yield Frame(None, name, index + 1, frame_no + 1, kind, fps, None, f"{failures} frames in a row failed: giving up on this {kind}")
                    return
            index += 1
            frame_no += 1
    finally:
        cap.release()


def prefetch(items: Iterable[Frame], depth: int = 4) -> Iterator[Frame]:
    """Run ``items`` in a background thread, ``depth`` frames ahead (a bounded queue keeps
    memory flat). Exceptions of the producer are raised here; closing this generator stops
    the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    t = threading.Thread(target=produce, name="detect-decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)
