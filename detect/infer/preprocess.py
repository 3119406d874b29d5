"""The SSD's input on the CPU: BGR uint8 images -> a float batch. One function, because
:class:`~detect.infer.predict.Predictor` and INT8 calibration (:mod:`detect.infer.quantize`)
must feed the network the same pixels."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from detect.data.letterbox import PAD_VALUE, input_size


def cpu_input(images: Sequence[np.ndarray], S: int, resize: str = "letterbox") -> torch.Tensor:
    """BGR uint8 ``[H, W, 3]`` images -> ``Tensor[B, 3, S, S]`` float RGB in [0, 1] on the CPU,
    channels_last: resized as uint8 (``cv2.resize``, bilinear) before the float conversion,
    letterboxed (top-left, padded with ``PAD_VALUE``, like training) or stretched (``resize``).
    INT8 calibration (:mod:`detect.infer.quantize`) feeds the same input."""
    if resize == "stretch":
        batch = np.empty((len(images), S, S, 3), np.uint8)
    else:
        batch = np.full((len(images), S, S, 3), PAD_VALUE, np.uint8)
    for i, im in enumerate(images):
        h, w = input_size(im.shape[0], im.shape[1], S, resize)
        small = im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=batch[i, :h, :w])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)  # (B, S, S, 3) -> (B, 3, S, S), channels_last strides
    return x.float().mul_(1.0 / 255.0)
