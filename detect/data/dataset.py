"""The torch ``Dataset`` over annotation records, image decoding, and the batch collate.

An item is ``(image, target)``:

- ``image``: Tensor[3, S, S] float32 in [0, 1], RGB, stretched to the model input S x S
  (by the transform; see :mod:`detect.data.transforms`); with ``uint8=True`` the same image as
  uint8 in [0, 255], which the training and evaluation loaders use: a batch then crosses the
  worker processes' shared memory and the host-to-device copy in a quarter of the bytes, and
  :func:`float_images` makes it [0, 1] floats on the device;
- ``target``: ``boxes`` float32[N, 4] (xyxy, pixels of the S x S image), ``labels``
  int64[N], ``difficult`` bool[N], ``image_id`` int (the record's index), ``orig_size``
  int64[2] = (h, w) of the file as decoded, and with an evaluation pipeline
  (:func:`~detect.data.transforms.eval_transform`) ``input_hw`` int64[2]: where the image lands in
  the S x S input (letterboxed: the rest is padding), which maps detections back.

Images are decoded with OpenCV as stored (``IMREAD_UNCHANGED``) and normalised to 8-bit RGB:
grayscale is repeated to three channels, an alpha channel is dropped, 16-bit samples are
scaled to 8 bits. A file that is missing or cannot be decoded raises :class:`ImageReadError`
naming it; what the decoder prints on the way (libjpeg's "Corrupt JPEG data") is printed again
on stderr with the file's name.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from detect.data.images import decode_image
from detect.data.letterbox import input_size
from detect.structures import ImageRecord, Unreadable


class ImageReadError(OSError):
    """An image file that is missing or cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # keep both fields across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to uint8[H, W, 3] RGB.

    Grayscale -> three equal channels; BGRA -> RGB (alpha dropped: the model sees no
    transparency); 16-bit -> 8-bit (``v / 257``, so 65535 -> 255); float images are taken
    as [0, 1]. Raises :class:`ImageReadError` for a missing, empty or undecodable file.
    """
    path = os.fspath(path)
    if not path:
        raise ImageReadError("<no path>", "the record has no image file (was the cache built without --images?)")
    try:
        data = np.fromfile(path, np.uint8)  # also reads non-ASCII paths on Windows, unlike cv2.imread
    except FileNotFoundError:
        raise ImageReadError(path, "file not found (moved or deleted since the cache was built? rebuild it)") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read file: {e.strerror or e}") from None
    if data.size == 0:
        raise ImageReadError(path, "empty file")
    img, said = decode_image(data)
    if img is None:
        raise ImageReadError(path, "not a decodable image (corrupt, truncated or an unsupported format)"
                             + (f"; the decoder says: {said}" if said else ""))
    if said:  # libjpeg's "Corrupt JPEG data: ..." names no file
        print(f"warning: {path}: the image decoder says: {said}", file=sys.stderr, flush=True)
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)  # 16-bit -> 8-bit
    elif img.dtype in (np.float32, np.float64):
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(path, f"unsupported pixel type {img.dtype}; convert it to 8- or 16-bit")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(path, f"unsupported image layout {img.shape}; expected gray, BGR or BGRA")


def _flags(a: np.ndarray, n: int) -> np.ndarray:
    """A record's bool[N] flags, or N False when it has none (old or partial records)."""
    a = np.asarray(a, bool)
    return a if a.shape == (n,) else np.zeros(n, bool)


class Targets(list):
    """The targets of a batch (a list, one dict per image) and ``unreadable``: the
    :class:`Unreadable` items :func:`collate` dropped from it. A list subclass, so it survives
    DataLoader workers and pinning with the attribute.

    Pickled (a DataLoader worker sending the batch), the tensors of each key are sent as one
    concatenated tensor and split back into per-image views on arrival: every tensor crossing
    a process border gets its own shared-memory segment, and 4-5 small tensors per image made
    a 2-worker loader of 320 px images run at half the rate of the same loader without targets
    (252 against 535 images/s)."""

    unreadable: list[Unreadable]

    def __init__(self, targets: Sequence[dict[str, Any]] = (), unreadable: Sequence[Unreadable] = ()) -> None:
        super().__init__(targets)
        self.unreadable = list(unreadable)

    def __reduce__(self):
        return _unpack_targets, (*_pack_targets(self), self.unreadable)


def _pack_targets(targets: Sequence[dict[str, Any]]) -> tuple[int, list[str], dict[str, Any], dict[str, dict[int, Any]]]:
    """``(n, keys, packed, rest)``: ``packed[key] = (Tensor, sizes)`` for every key whose values
    are tensors of one dtype, at least 1-D with the same trailing shape in all ``n`` dicts
    (concatenated along dim 0, ``sizes`` their lengths); ``rest[key] = {i: value}``: every other
    key's values, by dict; ``keys`` in first-seen order."""
    keys = list(dict.fromkeys(k for t in targets for k in t))
    packed: dict[str, Any] = {}
    rest: dict[str, dict[int, Any]] = {}
    for k in keys:
        vals = [t[k] for t in targets if k in t]
        v0 = vals[0]
        if (len(vals) == len(targets) and torch.is_tensor(v0) and v0.dim() >= 1
                and all(torch.is_tensor(v) and v.dtype == v0.dtype and v.dim() == v0.dim() and v.shape[1:] == v0.shape[1:]
                        for v in vals)):
            packed[k] = (torch.cat(vals), [int(v.shape[0]) for v in vals])
        else:
            rest[k] = {i: t[k] for i, t in enumerate(targets) if k in t}
    return len(targets), keys, packed, rest


def _unpack_targets(n: int, keys: list[str], packed: dict[str, Any], rest: dict[str, dict[int, Any]],
                    unreadable: list[Unreadable]) -> "Targets":
    """:func:`_pack_targets` undone: per-image dicts, the packed tensors split into views."""
    split = {k: t.split(sizes) for k, (t, sizes) in packed.items()}
    dicts: list[dict[str, Any]] = [{} for _ in range(n)]
    for k in keys:
        if k in split:
            for d, v in zip(dicts, split[k]):
                d[k] = v
        else:
            for i, v in rest[k].items():
                dicts[i][k] = v
    return Targets(dicts, unreadable)


class DetectionDataset(Dataset):
    """Images and boxes of annotation records, augmented by an albumentations pipeline.

    Args:
        records: :class:`~detect.structures.ImageRecord` s (``Cache.records``).
        transform: a pipeline from :mod:`detect.data.transforms` (called as
            ``transform(image=, bboxes=, index=)``), or None to return the image unresized.
        skip_unreadable: an image that cannot be read returns an :class:`Unreadable` (which
            :func:`collate` drops and counts) instead of raising :class:`ImageReadError`.
        uint8: images as uint8 Tensor[3, S, S] in [0, 255] instead of float32 in [0, 1] (see
            :func:`float_images`).

    The transform's random state is reseeded once per process from ``torch.initial_seed()``
    (which differs per DataLoader worker and follows ``torch.manual_seed``), so workers do
    not repeat each other's augmentations and runs are reproducible.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Optional[Callable[..., dict[str, Any]]] = None,
                 skip_unreadable: bool = False, uint8: bool = False) -> None:
        self.records = list(records)
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.uint8 = uint8
        self._seeded_pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.records)

    def _seed_transform(self) -> None:
        pid = os.getpid()
        if self._seeded_pid != pid and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(torch.initial_seed() % 2**32))
        self._seeded_pid = pid

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]] | Unreadable:
        got = self.item(i)
        return got if isinstance(got, Unreadable) else got[:2]

    def item(self, i: int, extra_boxes: Optional[np.ndarray] = None
             ) -> tuple[torch.Tensor, dict[str, Any], np.ndarray] | Unreadable:
        """Item ``i`` as ``dataset[i]`` gives it, and ``extra_boxes`` (float32[P, 4] xyxy pixels
        of the original image, e.g. proposals, in order) moved by the *same* transform call as
        the ground truth: float32[P', 4] in pixels of the S x S image, order kept. A crop drops
        an extra box as it drops a ground-truth one; empty ones (after clipping) are dropped.
        An unreadable image gives an :class:`Unreadable` when ``skip_unreadable``."""
        r = self.records[i]
        try:
            img = read_image_rgb(r.image)
            h, w = img.shape[:2]
            if r.width and r.height and (r.width, r.height) != (w, h):
                raise ImageReadError(r.image, f"decoded size {w}x{h} differs from the cache's {r.width}x{r.height}; "
                                     "the file changed since the cache was built: rebuild it")
        except ImageReadError as e:
            if not self.skip_unreadable:
                raise
            return Unreadable(int(i), e.path, e.reason)
        n = len(r.boxes)
        extra = np.zeros((0, 4), np.float32) if extra_boxes is None else extra_boxes
        boxes = np.concatenate([np.asarray(r.boxes, np.float32).reshape(n, 4), np.asarray(extra, np.float32).reshape(-1, 4)])
        np.clip(boxes, 0, [w, h, w, h], out=boxes)  # border boxes stay valid for albumentations
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[(np.arange(len(boxes)) < n) | nonempty]  # (N + P', 4): albumentations rejects empty extra boxes
        index = np.arange(len(boxes))  # >= n: an extra box
        if self.transform is not None:
            self._seed_transform()
            out = self.transform(image=img, bboxes=boxes, index=index)
            img = out["image"]
            index = np.asarray(out["index"], np.int64).reshape(-1)
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)  # (N' + P', 4) after crops, order kept
        extra, boxes, index = np.ascontiguousarray(boxes[index >= n]), boxes[index < n], index[index < n]
        image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)  # (S, S, 3) -> (3, S, S)
        image = image.contiguous() if self.uint8 else image.float().div_(255.0)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(np.asarray(r.labels, np.int64)[index]),
            "difficult": torch.from_numpy(_flags(r.difficult, n)[index]),
            "image_id": int(i),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }
        resize = getattr(self.transform, "resize", None)  # an eval pipeline: where the image landed in the input
        if resize is not None:
            target["input_hw"] = torch.tensor(input_size(h, w, image.shape[-1], resize), dtype=torch.int64)
        return image, target, extra


def float_images(images: torch.Tensor) -> torch.Tensor:
    """A batch as the model takes it: uint8 [0, 255] (``DetectionDataset(uint8=True)``) ->
    float32 [0, 1] on the tensor's device; float images pass unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]] | Unreadable]) -> tuple[torch.Tensor, Targets]:
    """``[(Tensor[3, S, S], target), ...]`` -> ``(Tensor[B, 3, S, S], Targets[target, ...])``;
    :class:`Unreadable` items are dropped and listed in ``Targets.unreadable`` (B counts the
    rest; with none left the images are an empty ``Tensor[0]``)."""
    unreadable = [b for b in batch if isinstance(b, Unreadable)]
    items = [b for b in batch if not isinstance(b, Unreadable)] if unreadable else batch
    images = [b[0] for b in items]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise ValueError(f"collate needs images of one size, got {sorted(shapes)}; "
                         "use a transform that resizes to the model input (eval_transform(imgsz))")
    return (torch.stack(images) if images else torch.zeros(0)), Targets([b[1] for b in items], unreadable)
