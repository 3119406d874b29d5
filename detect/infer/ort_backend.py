"""ONNX Runtime backend for the SSD's network on the CPU.

ONNX Runtime runs this network 2-3x faster than eager PyTorch on a CPU (it fuses every
convolution with its activation and plans memory once). The graph is the one ``detect export``
writes, the SSD's export head (network, softmax, box decoding: ``SSD.decoded``), exported in
memory (no file; about a second at load); the SSD's own selection (``SSD.postprocess``: score
threshold, top-k, one batched NMS, with its current settings) turns the two outputs into
detections, so both backends return the same boxes (to float rounding, tested).

Used by :class:`~detect.infer.predict.Predictor` when ``backend`` is "onnxruntime", or "auto"
on a CPU with onnxruntime installed. Given a ``model`` (an ONNX file ``detect export`` wrote, or
its bytes: the INT8 one of :mod:`detect.infer.quantize`), it runs that graph instead. Fast
R-CNN stays on PyTorch (its proposal stage has per-image shapes).
"""

from __future__ import annotations

import io
import os

import torch
from torch import nn

from detect.infer.export import ExportableSSD, onnx_export
from detect.models.onnx_ssd import ort_session, run_decoded


def supports(model: nn.Module) -> bool:
    """Whether ``model`` can run on this backend (an SSD) and onnxruntime is installed."""
    if not (hasattr(model, "decoded") and hasattr(model, "postprocess")):
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OrtSSD:
    """Callable like the SSD in eval mode: ``Tensor[B, 3, S, S] -> list[dict]``, CPU only.
    ``model``: an exported graph of this SSD to run (file or bytes); None exports it here."""

    def __init__(self, ssd: nn.Module, imgsz: int, threads: int | None = None, opset: int = 17,
                 model: bytes | str | os.PathLike | None = None) -> None:
        self.ssd = ssd.eval()
        if model is None:
            buf = io.BytesIO()
            onnx_export(ExportableSSD(self.ssd, imgsz), imgsz, buf, opset)
            model = buf.getvalue()
        self.session = ort_session(model if isinstance(model, bytes) else str(model), threads)

    def __call__(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.ssd.postprocess(*run_decoded(self.session, images))
