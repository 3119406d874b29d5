"""Dynamic batching in front of one :class:`~detect.infer.predict.Predictor`.

Concurrent requests each hand in one decoded image; a single worker thread takes the first
waiting image, then waits up to ``max_wait`` seconds for more until it has ``max_batch``, and
runs :meth:`Predictor.predict` once on the lot. One thread owns the model, so the model is held
once and never runs twice at the same time (ONNX Runtime and PyTorch already use every core
for one batch; two batches at once would only fight over them).

The wait is only for company that is coming: requests announce themselves when they start
(:meth:`Batcher.arriving`, held while the body is read and decoded), and the first image runs
at once when nothing else is queued or arriving. One client alone never waits ``max_wait``;
sixteen at once fill batches.

Images that need different postprocess settings cannot share a forward pass: requests carry a
:class:`Key` (the NMS IoU, the slicing mode), and one batch holds one key. The score threshold,
``max_det`` and the class filter are applied per request afterwards (:func:`filter_detections`),
so those never split a batch. ``max_batch=1`` (``detect serve --max-batch 1``) is the
same server with batching off.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from detect.infer.predict import Predictor
from detect.models.build import set_postprocess
from detect.structures import Detections


@dataclass(frozen=True)
class Key:
    """What must be equal for two images to share a batch: the NMS IoU threshold and the
    slicing mode (``None``: the Predictor's own)."""

    iou: float
    slice: Optional[str] = None


@dataclass
class Job:
    image: np.ndarray
    key: Key
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class Result:
    """What the worker hands back for one image: its detections and where the time went."""

    detections: Detections
    batch_size: int  # images in the forward pass this one shared
    queue_s: float  # waiting for the batch to start
    infer_s: float  # the batch's Predictor.predict


class Batcher:
    """``submit(image, key) -> Future[Result]``; ``close()`` stops the worker after the batch
    in flight, and fails what is still waiting with :class:`Closed`.

    Args:
        predictor: the one Predictor (its ``conf`` is the lowest score any request can ask for).
        max_batch: images per forward pass at most (1: no batching).
        max_wait: seconds the first image of a batch waits for company.
        max_queue: images waiting at most; beyond, :meth:`submit` raises :class:`Busy` (HTTP 503)
            instead of letting latency and memory grow without bound.
        on_batch: called with the size and the ``predict`` seconds of every batch run (metrics).
    """

    def __init__(self, predictor: Predictor, max_batch: int = 8, max_wait: float = 0.005, max_queue: int = 256,
                 on_batch: Optional[Callable[[int, float], None]] = None) -> None:
        if max_batch < 1 or max_wait < 0 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait >= 0")
        self.predictor = predictor
        self.max_batch, self.max_wait = int(max_batch), float(max_wait)
        self.on_batch = on_batch
        self.slices = _takes_slice(predictor)
        self.default_iou = float(getattr(predictor.model, "nms_thresh", 0.45))
        self._iou = self.default_iou
        self._queue: queue.Queue[Optional[Job]] = queue.Queue(maxsize=max_queue)
        self._held: Optional[Job] = None  # taken from the queue but of another key than the batch being formed
        self._thread = threading.Thread(target=self._run, name="detect-batcher", daemon=True)
        self._closed = False
        self._arriving = 0
        self._lock = threading.Lock()
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Hold this while a request that will :meth:`submit` reads and decodes its image: a
        batch being formed waits for it (up to ``max_wait``) instead of running without it."""
        with self._lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._lock:
                self._arriving -= 1

    def submit(self, image: np.ndarray, key: Key) -> Future:
        if self._closed:
            raise Closed("the server is shutting down")
        job = Job(image, key)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self._queue.maxsize} images are waiting already; try again shortly") from None
        return job.future

    def close(self, timeout: float = 10.0) -> None:
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # the worker is stuck in a batch: what waits is failed below
            pass
        self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.future.done():
                job.future.set_exception(Closed("the server is shutting down"))

    # ----------------------------------------------------------------------------- worker
    def _next(self, timeout: Optional[float]) -> Optional[Job]:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()

    def _run(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            stop = False
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0 or (self._arriving == 0 and self._held is None and self._queue.empty()):
                    break  # nobody else is coming: do not wait for company
                try:
                    job = self._next(min(left, _POLL))
                except queue.Empty:
                    continue
                if job is None:
                    stop = True
                    break
                if job.key != first.key:  # runs in the next batch
                    self._held = job
                    break
                batch.append(job)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[Job]) -> None:
        key = batch[0].key
        start = time.perf_counter()
        try:
            if key.iou != self._iou:
                set_postprocess(self.predictor.model, nms_thresh=key.iou)  # read at every forward; this thread alone runs it
                self._iou = key.iou
            kwargs = {"slice": key.slice} if key.slice is not None and self.slices == "predict" else {}
            dets = self.predictor.predict([j.image for j in batch], **kwargs)
        except Exception as e:  # noqa: BLE001 - handed to every waiting request (HTTP 500 with the reason)
            for j in batch:
                j.future.set_exception(e)
            return
        took = time.perf_counter() - start
        if self.on_batch is not None:
            self.on_batch(len(batch), took)
        for j, d in zip(batch, dets):
            j.future.set_result(Result(d, len(batch), start - j.queued, took))


_POLL = 0.001  # seconds between looks at whether more requests are still arriving


class Busy(RuntimeError):
    """Too many images waiting (HTTP 503)."""


class Closed(RuntimeError):
    """The batcher is shut down (HTTP 503)."""


def _takes_slice(predictor: Predictor) -> Optional[str]:
    """Where this Predictor takes a ``slice`` option: "predict" (per call), "init" (fixed when
    built), or None (a Predictor without sliced inference)."""
    if "slice" in inspect.signature(predictor.predict).parameters:
        return "predict"
    if "slice" in inspect.signature(type(predictor).__init__).parameters:
        return "init"
    return None


def filter_detections(det: Detections, conf: float, max_det: int, keep: Optional[np.ndarray]) -> Detections:
    """One request's view of a batch's detections: score >= ``conf``, only the classes in
    ``keep`` (0-based ids; None: all), the ``max_det`` best. Rows stay sorted by score (the
    Predictor sorts them), so the cut keeps the highest."""
    mask = det.scores >= conf
    if keep is not None:
        mask &= np.isin(det.labels, keep)
    idx = np.flatnonzero(mask)[:max_det]
    return Detections(det.boxes[idx], det.scores[idx], det.labels[idx], det.classes)
