"""``detect export``: an SSD checkpoint to ONNX (FP32 or ``--int8``) or TorchScript; the
formats are :mod:`detect.infer.export` and :mod:`detect.infer.quantize`."""

from __future__ import annotations

import argparse
import json

from detect.errors import UsageError
from detect.infer.export import export_onnx, export_torchscript, load_exportable


def cmd_export(args: argparse.Namespace) -> int:
    """``detect export``: exit 0 when written; unusable weights, options or output raise UsageError."""
    try:
        wrapper, meta = load_exportable(args.weights)  # WeightsError: a UsageError
    except TypeError as e:  # not an SSD
        raise UsageError(str(e)) from None
    int8 = getattr(args, "int8", False)
    if int8 and args.format != "onnx":
        raise UsageError("--int8 writes an ONNX file: use --format onnx")
    try:
        if int8:
            from detect.infer.quantize import export_int8

            out = export_int8(wrapper, meta, args.output, args.calib, args.calib_images, args.opset)
        elif args.format == "onnx":
            out = export_onnx(wrapper, meta, args.output, args.opset)
        else:
            out = export_torchscript(wrapper, meta, args.output)
    except ImportError as e:
        raise UsageError(f"{args.format} export needs an extra package ({e}); pip install 'retail-detect[export]'") from None
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e}") from None
    print(f"exported {meta['source']} -> {out} ({args.format}{', INT8' if int8 else ''}; input images[B, 3, {meta['imgsz']}, {meta['imgsz']}], "
          f"outputs boxes[B, N, 4], scores[B, N, {len(json.loads(meta['classes']))}]; NMS not included: see detect.infer.export.postprocess)")
    return 0
