"""``detect export``: an SSD checkpoint to ONNX (dynamic batch axis) or TorchScript.

What the exported graph computes (network + box decoding; NMS is left to the runtime)::

    images  float32[B, 3, S, S]  RGB in [0, 1], letterboxed (or, for older checkpoints, stretched) to
                                 S x S (S = the checkpoint's imgsz; metadata ``resize``)
    boxes   float32[B, N, 4]     xyxy in pixels of the S x S input, one box per default box
    scores  float32[B, N, K]     softmax class probabilities, background column dropped

Normalisation (mean/std) and BatchNorm (folded into the convolutions) are inside the graph.
NMS stays outside on purpose: ONNX's ``NonMaxSuppression`` differs between runtimes in output
order and in how it treats ties and score thresholds, and TensorRT, OpenVINO and CoreML each
prefer their own NMS plugin; every one of them takes exactly these two tensors.
:func:`postprocess` turns them into detections with the SSD's own selection
(:func:`detect.models.postprocess.select_detections`), so ``detect predict`` gives the same
boxes as :func:`postprocess` on the exported outputs.

The graph is the SSD's one export head, ``SSD.decoded`` (the box math is
:func:`detect.boxes.decode_boxes`); the ONNX Runtime backend (:meth:`detect.models.onnx_ssd.OnnxSSD.of_model`)
runs the same graph, exported in memory by :func:`export_head`, and eval runs it in PyTorch.

The ONNX file carries metadata (``classes`` as JSON, ``imgsz``, ``mean``/``std``, ``input``),
so a consumer needs no other file. Parity with PyTorch at batch 1 and 3 is checked in
``tests/test_export.py``: scores within 1e-4 absolute, boxes within 1e-3 px (float32).
"""

from __future__ import annotations

import io
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from detect.errors import UsageError
from detect.infer.fuse import fuse_conv_bn
from detect.models.onnx_ssd import OnnxSSD
from detect.models.postprocess import select_detections
from detect.models.specs import spec_of_model

SCORE_ATOL = 1e-4  # parity tolerances stated in the docstring and tested
BOX_ATOL = 1e-3


class ExportableSSD(nn.Module):
    """``images -> (boxes, scores)`` of an SSD: its :meth:`~detect.models.ssd.SSD.decoded` as a
    module's forward, which is what ``torch.onnx.export`` and ``torch.jit.trace`` take.

    With ``imgsz`` the default boxes of that input size are computed once and passed in, so a
    traced graph holds them as a constant: computed in the graph, they read the shape of every
    feature map on every run, which in an INT8 graph also dequantizes each map just for its
    shape (:mod:`detect.infer.quantize`)."""

    def __init__(self, ssd: nn.Module, imgsz: int | None = None) -> None:
        super().__init__()
        if not has_export_head(ssd):
            raise TypeError(f"{type(ssd).__name__} cannot be exported: only detectors with an export head are (the SSD; "
                            "Fast R-CNN's proposal stage has per-image shapes that ONNX cannot express with a dynamic batch)")
        self.ssd = ssd
        self.anchors: torch.Tensor | None = None
        if imgsz:
            p = next(ssd.parameters())
            with torch.no_grad():
                self.anchors = ssd.head_outputs(torch.zeros(1, 3, imgsz, imgsz, device=p.device, dtype=p.dtype))[2]  # (N, 4)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ssd.decoded(images, self.anchors)  # (B, N, 4), (B, N, K)


def has_export_head(model: nn.Module) -> bool:
    """Whether ``model``'s row in :data:`~detect.models.specs.MODEL_SPECS` has an export head
    (``decoded``): what ``detect export`` writes and ONNX Runtime runs."""
    spec = spec_of_model(model)
    return spec is not None and spec.decoded


def export_head(model: nn.Module, imgsz: int, opset: int = 17) -> bytes:
    """``model``'s export head as a serialized ONNX graph, exported in memory (about a second;
    no metadata: :meth:`~detect.models.onnx_ssd.OnnxSSD.of_model` runs it with the live model)."""
    buf = io.BytesIO()
    onnx_export(ExportableSSD(model.eval(), imgsz), imgsz, buf, opset)
    return buf.getvalue()


def postprocess(boxes, scores, conf: float = 0.25, iou: float = 0.45, max_det: int = 300, pre_nms_topk: int = 1000) -> list[dict]:
    """Exported outputs -> per-image ``{"boxes", "scores", "labels"}`` (labels 0-based) by the
    SSD's own rule (:func:`~detect.models.postprocess.select_detections`): the best
    ``pre_nms_topk`` (box, class) pairs, score above ``conf``, non-empty boxes, per-class NMS,
    the best ``max_det``. Accepts numpy arrays."""
    return select_detections(torch.as_tensor(boxes), torch.as_tensor(scores), conf, iou, pre_nms_topk, max_det)


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence what tracing the SSD prints and what it does not mean here: TracerWarnings (the
    anchors and the clip size are read as Python numbers, right for the fixed input size S),
    the ONNX exporter's "Constant folding - Only steps=1" notes, and the deprecation notes of
    ``torch.jit.trace``/``save`` and of the TorchScript-based ONNX exporter (chosen on purpose:
    ``dynamo=False``; TorchScript is still what that format is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        for note in ("You are using the legacy TorchScript-based ONNX export", "The feature will be removed"):
            warnings.filterwarnings("ignore", message=note, category=DeprecationWarning)
        yield


def onnx_export(wrapper: ExportableSSD, imgsz: int, f: Any, opset: int = 17) -> None:
    """Trace ``wrapper`` to ONNX into ``f`` (a path or a file object): input ``images``, outputs
    ``boxes`` and ``scores``, a dynamic batch axis."""
    with torch.no_grad(), quiet_tracing():
        torch.onnx.export(
            wrapper, (torch.rand(2, 3, imgsz, imgsz),), f, dynamo=False, opset_version=opset, input_names=["images"],
            output_names=["boxes", "scores"], do_constant_folding=True,
            dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}},
        )


def load_exportable(weights: str | Path | None) -> tuple[ExportableSSD, dict]:
    """The checkpoint's SSD wrapped for export (BatchNorm folded, eval, CPU) and its metadata."""
    from detect.infer.weights import load_for_inference, resolve_weights

    path = resolve_weights(weights)
    # predict's loader: every unloadable file becomes a WeightsError; its NMS settings do not matter here
    model, cfg, classes = load_for_inference(path, torch.device("cpu"), conf=0.25, iou=0.45, max_det=300)
    if isinstance(model, OnnxSSD):
        raise UsageError(f"{path} is an ONNX model already; export the .pt checkpoint it came from")
    S = int(cfg.preprocess.imgsz)
    fused, _ = fuse_conv_bn(model.eval(), torch.rand(1, 3, S, S))
    wrapper = ExportableSSD(fused, S).eval()
    meta = {
        "classes": json.dumps(classes, ensure_ascii=False),
        "imgsz": str(S),
        "mean": json.dumps(list(cfg.preprocess.mean)),
        "std": json.dumps(list(cfg.preprocess.std)),
        "resize": cfg.preprocess.resize,  # how an image becomes the S x S input
        "object_size": str(float(cfg.preprocess.object_size)),  # the product size it learned: sliced inference reads it
        "input": f"images float32[B, 3, S, S] RGB in [0, 1], {cfg.preprocess.resize}ed to S x S"
                 f"{' (top-left, padded with 114)' if cfg.preprocess.resize == 'letterbox' else ''}; mean/std applied inside",
        "outputs": "boxes float32[B, N, 4] xyxy pixels of the S x S input; scores float32[B, N, K] (no background); NMS not included",
        "source": str(path),
    }
    return wrapper, meta


def export_onnx(wrapper: ExportableSSD, meta: dict, output: str | Path, opset: int = 17) -> Path:
    """Write the ONNX file (dynamic batch axis, metadata) and check it with the ONNX checker."""
    import onnx

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.part")
    onnx_export(wrapper, int(meta["imgsz"]), str(tmp), opset)
    proto = onnx.load(str(tmp))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(output)
    return output


def export_torchscript(wrapper: ExportableSSD, meta: dict, output: str | Path) -> Path:
    """Trace the wrapper (batch-size independent: no Python loop over images) and save it with
    the metadata as ``_extra_files`` (``meta.json``)."""
    S = int(meta["imgsz"])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.part")
    with torch.no_grad(), quiet_tracing():
        traced = torch.jit.trace(wrapper, torch.rand(2, 3, S, S), check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={"meta.json": json.dumps(meta, ensure_ascii=False)})
    tmp.replace(output)
    return output
