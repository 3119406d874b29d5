"""Inference in Python: :class:`Predictor`. The commands built on it live elsewhere:
``detect predict`` and ``detect demo`` in :mod:`detect.infer.predict_cli`, ``detect val`` (its
large photos) in :mod:`detect.infer.val_cli`, ``detect audit`` in :mod:`detect.audit.audit_cli`,
``detect serve`` in :mod:`detect.serve`.

    pred = Predictor(device="auto", conf=0.25)            # the shipped weights; or Predictor("runs/train/best.pt")
    dets = pred.predict([cv2.imread("shelf.jpg")])        # list[Detections], original pixels
    for frame, det in pred.stream("video.mp4"): ...       # a generator: flat memory
    cv2.imwrite("out.jpg", pred.draw(frame.image, det))

Any checkpoint of either model loads by itself: its config (architecture, preprocessing) and
class names are inside it. A photo larger than the model needs (a store shelf) is cut into
overlapping slices at the scale of the products the model learned (``slice="auto"``, the
default; :mod:`detect.infer.slicing`), the slices run as batches and their detections are
merged, so every caller (``detect predict``, ``detect val``, video, the service) reads a
12-megapixel shelf as well as one product photo. Speed, in the order it matters:
- CPU: an SSD's network runs in ONNX Runtime (exported in memory at load; 2-3x faster than
  eager PyTorch there), its postprocess in PyTorch. The uint8 image is resized to S x S with
  ``cv2.resize`` before it becomes float (a 640x480 float resize costs more than the resize
  itself); the HWC uint8 array becomes a channels_last float tensor without a copy; on the
  PyTorch backend BatchNorm is folded into the convolutions.
- GPU: uint8 frames are uploaded as they are (4x less traffic than float) and resized and
  normalised on the device in one batch; fp16 with ``--half``.
- Everywhere: ``torch.inference_mode``; the model's own vectorised decode and one batched NMS;
  all boxes of a batch are moved to the CPU in one transfer; decode of the next frames runs
  in a background thread (:func:`detect.infer.sources.prefetch`).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from detect.config import Preprocess
from detect.errors import UsageError
from detect.infer.backends import checked_onnx, pick_backend
from detect.infer.fuse import optimize_for_inference
from detect.data.letterbox import PAD_VALUE, input_size
from detect.infer.preprocess import cpu_input
from detect.infer.second_look import SecondLook
from detect.infer import slice_run
from detect.infer.recentre import recentre_on
from detect.infer.slicing import SliceMode, SliceSettings
from detect.infer.sources import MAX_PIXELS, Frame, iter_source, prefetch
from detect.infer.weights import load_for_inference, resolve_weights
from detect.models.build import set_postprocess
from detect.models.context import CONTEXT_POOLS
from detect.models.onnx_ssd import OnnxSSD, torch_on_one_thread
from detect.structures import Detections
from detect.utils import select_device
from detect.viz.draw import draw_detections

class Predictor:
    """Detect products in BGR uint8 images with a checkpoint.

    Args:
        weights: checkpoint path, or the ``.onnx`` file of ``detect export`` (default: the shipped weights).
        device: "auto" | "cpu" | "cuda" | "cuda:i".
        half: fp16 on CUDA (ignored with a note on CPU).
        conf: score threshold; iou: NMS IoU threshold; max_det: detections kept per image (set
            on the model with :func:`~detect.models.build.set_postprocess`: the model applies
            them, and that is the only copy; :meth:`predict` takes none of its own).
        classes: keep only these classes (names or 0-based indices); None keeps all.
        fuse: fold BatchNorm into convolutions and use channels_last (identical outputs).
        backend: "auto" (ONNX Runtime for an SSD on the CPU when installed, else PyTorch),
            "torch" or "onnxruntime" (see :mod:`detect.models.onnx_ssd`); an ``.onnx`` file
            always runs on ONNX Runtime (on the CPU; its detections come back on ``device``).
        int8: run the SSD's network quantized to INT8 in ONNX Runtime (CPU): quantized on first
            use and cached (:func:`detect.infer.quantize.int8_model_for`), calibrated on
            ``calib`` (a dataset or image folder; None: synthetic shelves), at most
            ``calib_images`` images.
        onnx: run this exported graph (``detect export``, FP32 or ``--int8``) of ``weights``
            instead; its classes and input size must be the checkpoint's.
        threads: ONNX Runtime's operator threads on the CPU (None: see
            :func:`~detect.models.onnx_ssd.default_threads`); the PyTorch backend uses torch's
            own setting (``torch.set_num_threads``).
        slice: "auto" (cut photos larger than the model needs into slices at the scale of the
            products it learned), "off", or a slice side in photo pixels; ``overlap``,
            ``full_frame``, ``object_size`` (the products' side in the photo, when known),
            ``merge`` and ``recentre`` (a second pass of windows centred on the detections;
            "auto": for models of large products, :mod:`detect.infer.recentre`): see
            :class:`~detect.infer.slicing.SliceSettings`.
        slice_batch: slices (and probe views) per network call.
        classifier: a crop classifier (``detect train-classifier``'s best.pt) that takes a second
            look at every detection and fuses its class probability into the score
            (:mod:`detect.infer.second_look`; for photos of many product kinds: shelves, mosaics).
    """

    def __init__(
        self,
        weights: Optional[str | Path] = None,
        device: str | torch.device = "auto",
        half: bool = False,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 1000,
        classes: Optional[Sequence[str | int]] = None,
        fuse: bool = True,
        backend: str = "auto",
        int8: bool = False,
        calib: Optional[str] = None,
        calib_images: Optional[int] = None,
        onnx: Optional[str | Path] = None,
        threads: Optional[int] = None,
        slice: SliceMode = "auto",
        overlap: float = 0.25,
        full_frame: bool = False,
        object_size: Optional[float] = None,
        merge: str = "cut",
        recentre: str = "auto",
        slice_batch: int = 16,
        context_pool: Optional[str] = None,
        classifier: Optional[str | Path] = None,
    ) -> None:
        self.slicing = _slice_settings(slice, overlap, full_frame, object_size, merge, recentre)
        self.slice_batch = int(slice_batch)
        self.max_det = int(max_det)
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.weights = resolve_weights(weights)
        model, cfg, names = load_for_inference(self.weights, self.device, conf, iou, max_det)
        if context_pool is not None:  # where the context is pooled (models/context.py); read at every forward
            if context_pool not in CONTEXT_POOLS or isinstance(model, OnnxSSD):
                raise UsageError(f"context_pool must be one of {CONTEXT_POOLS}, on a .pt checkpoint (an exported graph "
                                 f"keeps the pooling it was exported with); got {context_pool!r} for {self.weights}")
            model.context_pool = context_pool
        graph = None
        if int8 or onnx:
            if isinstance(model, OnnxSSD):
                raise UsageError(f"{self.weights} is an exported graph already: --int8 and --onnx take the .pt checkpoint "
                                 "(or give the .int8.onnx file of detect export --int8 as --weights)")
            if self.device.type != "cpu" or backend == "torch":
                raise UsageError("--int8 and --onnx run on ONNX Runtime on the CPU: use --device cpu and --backend auto or onnxruntime")
            backend = "onnxruntime"
            if onnx:
                graph = checked_onnx(Path(onnx), names, int(cfg.preprocess.imgsz))
            else:
                from detect.infer.quantize import DEFAULT_CALIB_IMAGES, int8_model_for

                graph = int8_model_for(self.weights, calib, calib_images or DEFAULT_CALIB_IMAGES)
        self._setup(model, cfg.preprocess, names, half, classes, fuse, backend, graph, threads, conf, classifier)
        self.cfg = cfg

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        preprocess: Preprocess,
        classes: Sequence[str],
        device: str | torch.device = "cpu",
        half: bool = False,
        conf: float = 0.25,
        keep: Optional[Sequence[str | int]] = None,
        fuse: bool = True,
        backend: str = "auto",
        threads: Optional[int] = None,
        slice: SliceMode = "off",
        overlap: float = 0.25,
        full_frame: bool = False,
        object_size: Optional[float] = None,
        merge: str = "cut",
        recentre: str = "auto",
        slice_batch: int = 16,
        classifier: Optional[str | Path] = None,
    ) -> "Predictor":
        """A predictor around a model already in memory (tests, benchmarks, notebooks); ``conf``
        becomes the model's score threshold. Slicing is off unless asked for."""
        set_postprocess(model, score_thresh=conf)
        self = cls.__new__(cls)
        self.slicing = _slice_settings(slice, overlap, full_frame, object_size, merge, recentre)
        self.slice_batch = int(slice_batch)
        self.max_det = int(getattr(model, "max_det", 300) or 300)
        self.device = device if isinstance(device, torch.device) else select_device(str(device))
        self.weights = None
        self.cfg = None
        self._setup(model.to(self.device).eval(), preprocess, list(classes), half, keep, fuse, backend, threads=threads,
                    conf=conf, classifier=classifier)
        return self

    def _setup(self, model, preprocess: Preprocess, names: list[str], half: bool, keep, fuse: bool,
               backend: str, graph: Optional[Path] = None, threads: Optional[int] = None, conf: float = 0.25,
               classifier: Optional[str | Path] = None) -> None:
        self.classes = names
        self.conf = float(conf)  # the second look drops what its fused score puts under it
        self.second_look = SecondLook(classifier, names, self.device) if classifier else None
        self.imgsz = int(preprocess.imgsz)
        self.resize = preprocess.resize
        self.object_size = float(preprocess.object_size)  # 0: unknown (older checkpoints)
        self.recentre = recentre_on(self.slicing.recentre, self.imgsz, self.object_size)
        self.half = bool(half) and self.device.type == "cuda"
        if half and not self.half:
            print("note: --half needs CUDA; running in fp32 on the CPU", file=sys.stderr)
        self.keep = _class_ids(keep, names) if keep else None
        self.fused = 0
        self.backend = pick_backend(backend, model, self.device)
        if fuse and self.backend == "torch":  # ONNX Runtime folds BatchNorm itself
            example = torch.rand(1, 3, self.imgsz, self.imgsz, device=self.device)
            model, self.fused = optimize_for_inference(model, example, channels_last=True)
        self.model = model.half() if self.half else model
        self.runner = self.model
        if self.backend == "onnxruntime" and not isinstance(model, OnnxSSD):  # an exported file runs itself
            from detect.infer.export import export_head

            head = graph if graph is not None else export_head(self.model, self.imgsz)  # the live model's graph
            self.runner = OnnxSSD.of_model(self.model, head, threads)
        elif isinstance(model, OnnxSSD) and threads:
            model.set_threads(threads)
        self.graph = graph
        self._keep_t = torch.as_tensor(self.keep, device=self.device) if self.keep is not None else None

    # ----------------------------------------------------------------------------- preprocess
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """BGR uint8 ``[H, W, 3]`` images (any sizes) -> ``Tensor[B, 3, S, S]`` RGB in [0, 1],
        channels_last, on the device (fp16 with ``half``)."""
        S = self.imgsz
        if self.device.type == "cpu":
            return cpu_input(images, S, self.resize)
        dtype = torch.float16 if self.half else torch.float32
        out = []
        for group in _same_size_runs(images):  # frames of one video, slices of a photo: one upload, one resize
            u8 = self._upload(group)  # (b, H, W, 3) uint8 on the device
            x = u8.permute(0, 3, 1, 2).to(dtype)  # (b, H, W, 3) -> (b, 3, H, W)
            h, w = input_size(x.shape[-2], x.shape[-1], S, self.resize)
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            if (h, w) != (S, S):  # letterbox: pad right and bottom, as training did
                x = F.pad(x, (0, S - w, 0, S - h), value=float(PAD_VALUE))
            out.append(x.flip(1).mul_(1.0 / 255.0))  # BGR -> RGB, [0, 1]
        x = torch.cat(out) if len(out) > 1 else out[0]
        return x.contiguous(memory_format=torch.channels_last)

    def _upload(self, group: list[np.ndarray]) -> torch.Tensor:
        """Copy same-size uint8 images into a reused pinned host buffer and send it to the GPU
        in one asynchronous transfer (one host copy instead of two). Reusing the buffer is safe:
        every :meth:`predict` ends by copying its results to the host, which waits for this
        transfer to finish."""
        if len(group) < 8:  # single frames/small batches: pinning a new buffer costs more than it saves
            return torch.from_numpy(np.stack(group)).to(self.device)
        shape = (len(group), *group[0].shape)
        buf = getattr(self, "_pinned", None)
        if buf is None or tuple(buf.shape) != shape:
            buf = torch.empty(shape, dtype=torch.uint8).pin_memory()
            self._pinned = buf
        _copy_into(buf.numpy(), group)
        return buf.to(self.device, non_blocking=True)

    # ----------------------------------------------------------------------------- predict
    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], slice_side: Optional[Sequence[Optional[int]]] = None) -> list[Detections]:
        """Detect in a batch of BGR uint8 images; boxes come back in each image's own pixels.
        Images larger than the model needs are sliced (see the class docstring); ``slice_side``
        (one per image, None: not sliced) overrides the choice, e.g. :meth:`stream`'s for a video."""
        if len(images) == 0:
            return []
        for im in images:
            if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8):
                got = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
                raise ValueError(f"Predictor.predict expects BGR uint8 images [H, W, 3] (as cv2.imread gives), got {got}")
        with torch_on_one_thread() if self.backend == "onnxruntime" else nullcontext():  # ORT's threads have the cores
            if slice_side is not None:
                sides, whole = list(slice_side), [None] * len(images)
            else:
                sides, whole = slice_run.plan(images, self.slicing, self.imgsz, self.object_size, self._detect, self.slice_batch)
            if not any(sides) and not any(w is not None for w in whole):  # the common case: every image one input
                dets = self._detect(images)
            else:
                dets = slice_run.run(images, sides, whole, self.slicing, self._detect, self.slice_batch, self.classes,
                                     self.max_det)
                if self.recentre and any(sides):
                    dets = slice_run.recentre(images, dets, sides, self._detect, self.slice_batch, self.classes,
                                              self.max_det)
        if self.second_look is not None:
            dets = self.second_look.rescore(images, dets, self.conf, self.max_det)
        return dets

    def slice_sides(self, images: Sequence[np.ndarray]) -> list[Optional[int]]:
        """The slice side (photo pixels) each image is cut at, None for images read whole
        (:func:`detect.infer.slice_run.plan`)."""
        return slice_run.plan(images, self.slicing, self.imgsz, self.object_size, self._detect, self.slice_batch)[0]

    def _detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One network call on ``images`` read whole (each letterboxed or stretched to the input)."""
        if not images:
            return []
        x = self.preprocess(images)
        outputs = self.runner(x)
        return self._postprocess(outputs, [im.shape[:2] for im in images])

    def _postprocess(self, outputs: list[dict], sizes: list[tuple[int, int]]) -> list[Detections]:
        """Keep the asked-for classes, map boxes from S x S to each image's pixels, and move the
        whole batch to the CPU in one transfer (the model applied the score threshold). The
        batch is handled as one flat set of rows, not image by image: on a GPU with 256 images
        a per-image loop was ~1,500 small kernel launches."""
        S = self.imgsz
        B = len(outputs)
        dev = self.device
        counts = [o["boxes"].shape[0] for o in outputs]  # known on the host: no device sync below
        boxes = torch.cat([o["boxes"].float().reshape(-1, 4) for o in outputs])  # (K, 4)
        scores = torch.cat([o["scores"].float().reshape(-1) for o in outputs])  # (K,)
        labels = torch.cat([o["labels"].reshape(-1) for o in outputs])  # (K,)
        image = torch.repeat_interleave(torch.arange(B, device=dev), torch.tensor(counts, device=dev),
                                        output_size=sum(counts))  # (K,) the image of each row
        hw = torch.tensor(sizes, dtype=torch.float32, device=dev)  # (B, 2) = h, w
        whwh = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], 1)  # (B, 4) = w, h, w, h
        ihw = torch.tensor([input_size(h, w, S, self.resize) for h, w in sizes], dtype=torch.float32, device=dev)  # (B, 2)
        scale = whwh / torch.stack([ihw[:, 1], ihw[:, 0], ihw[:, 1], ihw[:, 0]], 1)  # (B, 4) input -> image pixels
        if self._keep_t is not None:
            keep = torch.isin(labels, self._keep_t)
            boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
        limit = whwh[image]  # (K, 4)
        boxes = torch.minimum((boxes * scale[image]).clamp_(min=0), limit)  # S x S pixels -> the image's, clipped to it
        flat = torch.cat([boxes, scores[:, None], labels[:, None].float(), image[:, None].float()], 1).cpu().numpy()  # (K, 7)
        img = flat[:, 6].astype(np.int64)
        flat = flat[np.lexsort((-flat[:, 4], img))]  # by image, then by decreasing score (stable)
        dets = []
        for part in np.split(flat, np.cumsum(np.bincount(img, minlength=B))[:-1]):
            dets.append(Detections(part[:, :4].astype(np.float32), part[:, 4].astype(np.float32), part[:, 5].astype(np.int64), self.classes))
        return dets

    # ----------------------------------------------------------------------------- stream, draw
    def stream(self, source: str, batch: int = 1, depth: int = 4,
               max_pixels: int = MAX_PIXELS) -> Iterator[tuple[Frame, Optional[Detections]]]:
        """Yield ``(frame, detections)`` for every frame of ``source`` (image, folder, glob,
        .txt list, video, webcam index, stream URL). Unreadable frames, and images of more than
        ``max_pixels`` pixels (0: no limit), come with ``frame.image is None``, ``frame.error``
        set and ``detections=None``. Frames are decoded ``depth`` ahead in a background thread
        and run through the model ``batch`` at a time."""
        pending: list[Frame] = []
        sides: dict[tuple, Optional[int]] = {}  # (video, frame shape) -> its slice side: one probe per video
        for fr in prefetch(iter_source(source, max_pixels=max_pixels), depth=max(depth, batch)):
            if fr.image is None:
                yield from self._flush(pending, sides)
                pending = []
                yield fr, None
                continue
            pending.append(fr)
            if len(pending) >= batch or fr.kind == "stream":  # a live stream cannot wait for a batch
                yield from self._flush(pending, sides)
                pending = []
        yield from self._flush(pending, sides)

    def _flush(self, frames: list[Frame], memo: dict[tuple, Optional[int]]) -> Iterator[tuple[Frame, Detections]]:
        """Detect in ``frames``. Still photos are planned one by one inside :meth:`predict` (a
        photo read whole reuses its probe's detections); a video's frames share the slice side
        chosen for its first one, kept in ``memo`` (one probe per video, not per frame)."""
        if not frames:
            return
        images = [f.image for f in frames]
        if all(f.kind == "image" for f in frames):
            yield from zip(frames, self.predict(images))
            return
        keys = [(f.path, im.shape) for f, im in zip(frames, images)]
        new = {k: im for k, im in zip(keys, images) if k not in memo}
        memo.update(zip(new, self.slice_sides(list(new.values()))))
        yield from zip(frames, self.predict(images, slice_side=[memo[k] for k in keys]))

    def draw(self, image: np.ndarray, detections: Detections, **kwargs) -> np.ndarray:
        """A copy of ``image`` with boxes, names and scores drawn (see :func:`draw_detections`)."""
        return draw_detections(image, detections.boxes, detections.scores, detections.labels, self.classes, **kwargs)


def _slice_settings(mode: SliceMode, overlap: float, full_frame: bool, object_size: Optional[float],
                    merge: str, recentre: str) -> SliceSettings:
    try:
        return SliceSettings(mode, float(overlap), bool(full_frame), object_size, merge, recentre)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _class_ids(keep: Sequence[str | int], names: list[str]) -> list[int]:
    ids = []
    for k in keep:
        if isinstance(k, int) or (isinstance(k, str) and k.isdigit() and k not in names):
            i = int(k)
            if not 0 <= i < len(names):
                raise UsageError(f"--classes: index {i} is out of range; this model has {len(names)} classes (0..{len(names) - 1})")
            ids.append(i)
        elif k in names:
            ids.append(names.index(k))
        else:
            raise UsageError(f"--classes: unknown class {k!r}; this model knows: {', '.join(names)}")
    return sorted(set(ids))


_COPY_POOL: Optional[ThreadPoolExecutor] = None
_COPY_MIN = 32  # images per copy thread: below that a thread costs more than it saves


def _copy_into(host: np.ndarray, images: Sequence[np.ndarray]) -> None:
    """``host[i] = images[i]`` for every image, in up to 8 threads when the batch is large
    (NumPy copies without the GIL: on a 16-core GPU machine one thread took 6.4 ms of a 55 ms
    batch of 256 320x320 images)."""
    global _COPY_POOL
    n = len(images)
    parts = min(8, os.cpu_count() or 1, n // _COPY_MIN)
    if parts <= 1:
        for i, im in enumerate(images):
            host[i] = im
        return
    if _COPY_POOL is None:
        _COPY_POOL = ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="detect-copy")

    def copy(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            host[i] = images[i]

    step = -(-n // parts)
    for f in [_COPY_POOL.submit(copy, lo, min(n, lo + step)) for lo in range(0, n, step)]:
        f.result()


def _same_size_runs(images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    runs: list[list[np.ndarray]] = []
    for im in images:
        if runs and runs[-1][0].shape == im.shape:
            runs[-1].append(im)
        else:
            runs.append([im])
    return runs
