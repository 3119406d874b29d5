"""Albumentations pipelines for detection: train (crop, flip, colour) and eval (resize only).

Both end with the model's input of ``imgsz`` x ``imgsz``, made one of two ways
(``preprocess.resize``, see :mod:`detect.data.letterbox`): ``letterbox`` (the default: aspect
ratio kept, padded at the right and bottom) or ``stretch`` (checkpoints from before
letterboxing). :func:`detect.infer.preprocess.cpu_input` and ``Predictor`` pad the same way.

Large photos (a whole store shelf) are not squeezed into the input in training:
:class:`ScaleCrop` cuts a window at the scale where the photo's products come out
``crop_object`` pixels (native-scale crops with scale jitter), so the model learns products at
the size slicing shows them at inference (:mod:`detect.infer.slicing`).

Boxes travel as albumentations ``pascal_voc``, which
is exactly our format: float ``[x1, y1, x2, y2]`` in pixels, 0-based, x2/y2 the exclusive
edge (a box may end at x2 == width). Boxes are clipped to the image before any check, so a
box touching the border is never rejected.

Call a pipeline as ``t(image=img, bboxes=boxes, index=np.arange(N))``: the ``index`` label
field carries each surviving box's position in the input, so a box dropped by a crop (less
than ``min_visibility`` of its area left) drops its label and flags too
(see :class:`detect.data.dataset.DetectionDataset`).
"""

from __future__ import annotations

from typing import Any, Optional

import albumentations as A
import cv2
import numpy as np

from detect.data.letterbox import PAD_VALUE, RESIZE_MODES, input_size  # noqa: F401 (re-exported)

LABEL_FIELDS = ["index"]


def bbox_params(min_visibility: float = 0.0) -> A.BboxParams:
    """``pascal_voc`` boxes, clipped to the image, degenerate ones dropped, and boxes that keep
    less than ``min_visibility`` of their area after a crop dropped."""
    return A.BboxParams(format="pascal_voc", label_fields=LABEL_FIELDS, min_visibility=min_visibility,
                        clip=True, filter_invalid_bboxes=True)


def to_input(imgsz: int, resize: str = "letterbox") -> list[A.BasicTransform]:
    """The steps that make any image the model's ``imgsz`` x ``imgsz`` input (see the module
    docstring); boxes scale with the image."""
    if resize == "stretch":
        return [A.Resize(imgsz, imgsz, interpolation=cv2.INTER_LINEAR)]
    if resize != "letterbox":
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    return [A.LongestMaxSize(max_size=imgsz, interpolation=cv2.INTER_LINEAR),
            A.PadIfNeeded(imgsz, imgsz, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE)]


def eval_transform(imgsz: int, resize: str = "letterbox") -> A.Compose:
    """The model's input of any image (letterboxed or stretched to ``imgsz`` x ``imgsz``); the
    pipeline's ``resize`` attribute says which, so a dataset can tell where each image landed
    (``input_hw`` in its targets, which evaluation maps detections back with)."""
    t = A.Compose(to_input(imgsz, resize), bbox_params=bbox_params(0.0))
    t.resize = resize
    return t


def train_transform(imgsz: int, strength: float = 1.0, min_visibility: float = 0.3, resize: str = "letterbox",
                    crop_object: float = 0.0) -> Any:
    """Training augmentation scaled by ``strength`` (0: same as :func:`eval_transform`).

    ``letterbox`` (the default): :class:`ScaleCrop` (native-scale crops of photos whose products
    would come out under ``crop_object`` pixels, else random zoom-in crops with probability
    ``0.75 * strength``, capped at 0.9), then letterbox, flip and colour jitter as below.
    ``stretch`` (checkpoints from before letterboxing), the earlier pipeline:

    - random crop (probability ``0.75 * strength``, capped at 0.9), one of:
      a crop that keeps every box (``RandomSizedBBoxSafeCrop``: zooms in on the products) or a
      random-area crop (``RandomResizedCrop``, area from ``1 - 0.7 * strength`` to all of it)
      that may cut boxes: those keeping under ``min_visibility`` of their area are dropped;
    - horizontal flip (p 0.5);
    - colour jitter (brightness, contrast, saturation ``0.3 * strength``, hue ``0.02 * strength``:
      small, brand colours carry class information);
    - resize (stretch) to ``imgsz`` x ``imgsz``.
    """
    if strength <= 0:
        return eval_transform(imgsz, resize)
    s = float(strength)
    j = 0.3 * s
    jitter = [A.HorizontalFlip(p=0.5),
              A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, 0.02 * s), p=min(1.0, 0.8 * s))]
    if resize != "stretch":
        rest = A.Compose(to_input(imgsz, resize) + jitter, bbox_params=bbox_params(0.0))
        return ScaleCrop(rest, imgsz, crop_object, zoom=min(0.9, 0.75 * s), min_area=max(0.1, 1.0 - 0.7 * s),
                         min_visibility=min_visibility)
    crop = A.OneOf([
        A.RandomSizedBBoxSafeCrop(imgsz, imgsz, erosion_rate=0.0),
        A.RandomResizedCrop(size=(imgsz, imgsz), scale=(max(0.1, 1.0 - 0.7 * s), 1.0), ratio=(0.6, 1.6)),
    ], p=min(0.9, 0.75 * s))
    return A.Compose([crop, *to_input(imgsz, resize), *jitter], bbox_params=bbox_params(min_visibility))


def median_side(boxes: np.ndarray) -> float:
    """The median of sqrt(w * h) over float[N, 4] xyxy boxes (0 when there are none)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(b) == 0:
        return 0.0
    return float(np.median(np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))))


def cut_to_window(boxes: np.ndarray, window: tuple[int, int, int, int], min_visibility: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(cut float32[N, 4], keep bool[N])``: xyxy ``boxes`` in the pixels of ``window`` (x0, y0,
    x1, y1), cut to it, and which keep at least ``min_visibility`` of their area (and some area)."""
    x0, y0, x1, y1 = window
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    cut = np.clip(boxes - np.float32([x0, y0, x0, y0]), 0, np.float32([x1 - x0, y1 - y0] * 2))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = (cut[:, 2] - cut[:, 0]) * (cut[:, 3] - cut[:, 1])
    keep = (cut[:, 2] > cut[:, 0]) & (cut[:, 3] > cut[:, 1]) & (kept >= min_visibility * np.maximum(area, 1e-6))
    return cut, keep


class ScaleCrop:
    """A window of the photo, then ``rest`` (letterbox to the input, flip, colour): called like
    an albumentations pipeline, ``t(image=, bboxes=, index=)``.

    The window, per photo with median box side ``m`` (:func:`median_side`) and longer side ``L``:
    - ``m * imgsz / L < crop_object / 1.5`` (whole, its products would be too small, e.g. a store
      shelf): a square window of side ``imgsz * m / crop_object`` times a log-uniform jitter in
      [0.7, 1.4], so its products come out about ``crop_object`` input pixels (native-scale crop);
    - else, with probability ``zoom``: a random window of ``min_area``..1 of the photo's area,
      aspect 0.6-1.6 (zooms in on the products);
    - else the whole photo.
    Windows are centred on a random box 80% of the time (so they hold products), else anywhere;
    boxes are cut to the window and dropped when they keep under ``min_visibility`` of their area.
    """

    def __init__(self, rest: A.Compose, imgsz: int, crop_object: float, zoom: float, min_area: float,
                 min_visibility: float) -> None:
        self.rest, self.imgsz, self.crop_object = rest, int(imgsz), float(crop_object)
        self.zoom, self.min_area, self.min_visibility = float(zoom), float(min_area), float(min_visibility)
        self.rng = np.random.default_rng(0)

    def set_random_seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.rest.set_random_seed(int(self.rng.integers(2**31)))

    def window(self, h: int, w: int, boxes: np.ndarray) -> Optional[tuple[int, int, int, int]]:
        """The crop (x0, y0, x1, y1) for an ``h`` x ``w`` photo with ``boxes``, or None (whole)."""
        rng = self.rng
        m = median_side(boxes)
        L = max(h, w)
        if self.crop_object > 0 and m > 0 and m * self.imgsz / L < self.crop_object / 1.5:
            side = self.imgsz * m / self.crop_object * float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
            cw, ch = min(int(round(side)), w), min(int(round(side)), h)
        elif rng.random() < self.zoom:
            area = rng.uniform(self.min_area, 1.0) * h * w
            aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
            cw = int(min(w, max(8, round(np.sqrt(area * aspect)))))
            ch = int(min(h, max(8, round(np.sqrt(area / aspect)))))
        else:
            return None
        if len(boxes) and rng.random() < 0.8:
            b = boxes[int(rng.integers(len(boxes)))]
            cx, cy = (b[0] + b[2]) / 2 + rng.uniform(-0.4, 0.4) * cw, (b[1] + b[3]) / 2 + rng.uniform(-0.4, 0.4) * ch
            x0, y0 = int(round(cx - cw / 2)), int(round(cy - ch / 2))
        else:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        x0, y0 = min(max(x0, 0), w - cw), min(max(y0, 0), h - ch)
        return x0, y0, x0 + cw, y0 + ch

    def __call__(self, image: np.ndarray, bboxes: Any, index: Any) -> dict[str, Any]:
        boxes = np.asarray(bboxes, np.float32).reshape(-1, 4)
        index = np.asarray(index, np.int64).reshape(-1)
        h, w = image.shape[:2]
        win = self.window(h, w, boxes)
        if win is not None:
            x0, y0, x1, y1 = win
            image = image[y0:y1, x0:x1]
            cut, ok = cut_to_window(boxes, win, self.min_visibility)
            boxes, index = cut[ok], index[ok]
        return self.rest(image=np.ascontiguousarray(image), bboxes=boxes, index=index)
