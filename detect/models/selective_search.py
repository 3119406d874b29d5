"""Selective search region proposals (Uijlings et al., 2013) through OpenCV's ximgproc.

The proposal method Fast R-CNN was published with. Pure functions on one image, no project
state: :mod:`detect.engine.proposal_cache` runs them ahead of training over a whole annotation cache
(``detect proposals``), and :class:`detect.models.fast_rcnn.FastRCNN` calls them itself at
inference when a selective-search model is given an image without precomputed proposals
(``detect predict`` on new photos).

Boxes come back as float32[N, 4] xyxy in 0-based pixels of the image given (x2/y2 exclusive,
see :mod:`detect.structures`), in selective search's own ranking order, so ``boxes[:k]`` are the
``k`` best-ranked proposals. OpenCV ranks with a random factor (as the paper does) from a
generator Python cannot seed: the *set* of boxes of an image is repeatable, their order (and so
which survive a ``max_boxes`` cut) may vary between runs.

``cv2.ximgproc`` is only in OpenCV's *contrib* build. albumentations pulls in
``opencv-python-headless``, which shares the ``cv2`` folder; install
``opencv-contrib-python-headless`` after it (see the README) or ``cv2.ximgproc`` is missing.
"""

from __future__ import annotations

import numpy as np
import torch

MODES = ("fast", "quality")


def _ximgproc():
    import cv2

    if not hasattr(cv2, "ximgproc"):
        raise ImportError(
            f"cv2.ximgproc is missing (OpenCV {cv2.__version__} at {cv2.__file__} is not the contrib build): "
            "pip install --force-reinstall --no-deps opencv-contrib-python-headless "
            "(after albumentations, whose opencv-python-headless overwrites the cv2 folder)"
        )
    return cv2.ximgproc


def selective_search(
    image_bgr: np.ndarray,
    mode: str = "fast",
    max_boxes: int = 2000,
    resize: int = 500,
    min_size: float = 4.0,
) -> np.ndarray:
    """Selective-search proposals for one image.

    Args:
        image_bgr (uint8[H, W, 3] or [H, W]): the image, BGR as OpenCV reads it.
        mode: "fast" (1 colour space x 2 strategies) or "quality" (more diversifications,
            about 3-4x slower and 2-3x more boxes).
        max_boxes: keep at most this many of the best-ranked boxes (0: all).
        resize: run the search on a copy whose longer side is at most this many pixels (the
            search is superlinear in the pixel count); boxes are scaled back. 0 keeps the size.
            Images are never enlarged.
        min_size: drop boxes whose width or height, in original pixels, is below this.

    Returns:
        float32[N, 4]: xyxy boxes, 0-based pixels of ``image_bgr``, ranked best first, no
        duplicates, clipped to the image.
    """
    if mode not in MODES:
        raise ValueError(f"selective search mode {mode!r}: expected one of {MODES}")
    if image_bgr.ndim == 2:
        image_bgr = np.repeat(image_bgr[:, :, None], 3, axis=2)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"selective search needs a uint8 HxWx3 image, got {image_bgr.dtype} {image_bgr.shape}")
    import cv2

    h, w = image_bgr.shape[:2]
    scale = 1.0
    small = image_bgr
    if resize and max(h, w) > resize:
        scale = resize / max(h, w)
        small = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ss = _ximgproc().segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(small)
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSelectiveSearchQuality()
    rects = np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4)  # (N, 4) x, y, w, h
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)  # xywh -> xyxy (exclusive)
    if scale != 1.0:
        sy, sx = h / small.shape[0], w / small.shape[1]
        boxes *= np.array([sx, sy, sx, sy], np.float32)
    return _tidy(boxes, w, h, max_boxes, min_size)


def _tidy(boxes: np.ndarray, w: int, h: int, max_boxes: int, min_size: float) -> np.ndarray:
    """Clip, drop tiny boxes, drop exact duplicates (keeping the best rank), keep ``max_boxes``."""
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    wh = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[(wh >= min_size).all(axis=1)]
    # np.unique sorts; taking the first index of each row and re-sorting keeps the ranking
    _, first = np.unique(np.round(boxes, 2), axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_boxes:
        boxes = boxes[:max_boxes]
    return np.ascontiguousarray(boxes, dtype=np.float32)


def selective_search_tensor(image: torch.Tensor, mode: str = "fast", max_boxes: int = 2000, resize: int = 500) -> torch.Tensor:
    """Selective search on a model input (Tensor[3, H, W] float RGB in [0, 1], any device).

    Returns Tensor[N, 4] float32 xyxy pixels of that input, on the input's device. Runs on the CPU.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image Tensor[3, H, W], got shape {tuple(image.shape)}")
    rgb = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (3,H,W) -> (H,W,3)
    boxes = selective_search(np.ascontiguousarray(rgb[:, :, ::-1]), mode=mode, max_boxes=max_boxes, resize=resize)
    return torch.from_numpy(boxes).to(image.device)


def proposal_recall(
    proposals: list[np.ndarray],
    gt_boxes: list[np.ndarray],
    tops: tuple[int, ...] = (100, 300, 1000, 2000),
    ious: tuple[float, ...] = (0.5, 0.7),
) -> dict[tuple[int, float], float]:
    """Fraction of ground-truth boxes covered by a proposal among each image's first ``top``.

    Args:
        proposals: per image float32[N_i, 4] xyxy, ranked best first.
        gt_boxes: per image float32[G_i, 4] xyxy in the same pixels (difficult boxes removed
            by the caller if they should not count).

    Returns:
        {(top, iou): recall}; ``nan`` when there is no ground truth at all.
    """
    from torchvision.ops import box_iou

    best = {top: [] for top in tops}  # per top: max IoU of every gt box
    for props, gts in zip(proposals, gt_boxes):
        if len(gts) == 0:
            continue
        if len(props) == 0:
            for top in tops:
                best[top].append(np.zeros(len(gts), np.float32))
            continue
        iou = box_iou(torch.as_tensor(gts, dtype=torch.float32), torch.as_tensor(props, dtype=torch.float32)).numpy()  # (G, N)
        for top in tops:
            best[top].append(iou[:, :top].max(axis=1))
    out = {}
    for top in tops:
        allbest = np.concatenate(best[top]) if best[top] else np.zeros(0, np.float32)
        for t in ious:
            out[(top, t)] = float((allbest >= t).mean()) if allbest.size else float("nan")
    return out
