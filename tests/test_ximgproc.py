"""Selective search needs OpenCV's contrib build (cv2.ximgproc). albumentations installs
opencv-python-headless, which shares the cv2 folder; a fresh install must put
opencv-contrib-python-headless on top of it. This test fails (it never skips) when that order
was wrong, so CI on a fresh machine catches it."""

from __future__ import annotations

import numpy as np

from detect.models.selective_search import selective_search


def test_cv2_has_ximgproc_selective_search() -> None:
    import cv2

    assert hasattr(cv2, "ximgproc"), (
        f"cv2 {cv2.__version__} at {cv2.__file__} lacks ximgproc: "
        "pip install --force-reinstall --no-deps opencv-contrib-python-headless"
    )
    assert hasattr(cv2.ximgproc.segmentation, "createSelectiveSearchSegmentation")


def test_selective_search_finds_a_painted_rectangle() -> None:
    img = np.full((64, 80, 3), 30, np.uint8)
    img[10:40, 20:60] = (0, 200, 255)  # rows 10..39, cols 20..59 -> xyxy [20, 10, 60, 40]
    boxes = selective_search(img, mode="fast", max_boxes=0, resize=0)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes[:, [0, 2]].min() >= 0 and boxes[:, [0, 2]].max() <= 80 and boxes[:, [1, 3]].max() <= 64
    hit = np.all(np.abs(boxes - np.array([20, 10, 60, 40], np.float32)) <= 1, axis=1)
    assert hit.any(), boxes[:10]
    assert len(np.unique(boxes, axis=0)) == len(boxes)  # no duplicates


def test_resize_scales_boxes_back_to_original_pixels() -> None:
    img = np.full((200, 400, 3), 30, np.uint8)
    img[50:150, 100:300] = (0, 200, 255)  # xyxy [100, 50, 300, 150]
    boxes = selective_search(img, mode="fast", max_boxes=50, resize=100)  # searched at 100x50
    assert len(boxes) <= 50
    hit = np.all(np.abs(boxes - np.array([100, 50, 300, 150], np.float32)) <= 4, axis=1)
    assert hit.any(), boxes[:10]
