"""The SSD's input on the CPU: BGR uint8 images -> a float batch. One function, because
:class:`~detect.infer.predict.Predictor` and INT8 calibration (:mod:`detect.infer.quantize`)
must feed the network the same pixels."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch


def cpu_input(images: Sequence[np.ndarray], S: int) -> torch.Tensor:
    """BGR uint8 ``[H, W, 3]`` images -> ``Tensor[B, 3, S, S]`` float RGB in [0, 1] on the CPU,
    channels_last: resized as uint8 (``cv2.resize``, bilinear) before the float conversion.
    INT8 calibration (:mod:`detect.infer.quantize`) feeds the same input."""
    batch = np.empty((len(images), S, S, 3), np.uint8)
    for i, im in enumerate(images):
        small = im if im.shape[:2] == (S, S) else cv2.resize(im, (S, S), interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=batch[i])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)  # (B, S, S, 3) -> (B, 3, S, S), channels_last strides
    return x.float().mul_(1.0 / 255.0)
