"""``detect export``: an SSD checkpoint to ONNX (FP32 or ``--int8``) or TorchScript; the
formats are :mod:`detect.infer.export` and :mod:`detect.infer.quantize`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detect.checks import checked
from detect.errors import UsageError
from detect.infer.common_cli import add_int8_options
from detect.infer.export import export_onnx, export_torchscript, load_exportable

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}


def default_output(weights: str | Path, fmt: str, int8: bool = False) -> Path:
    """Where ``detect export`` writes without ``-o``: beside the weights, ``w.pt`` -> ``w.onnx``
    (``w.int8.onnx`` with ``--int8``)."""
    return Path(weights).with_suffix((".int8" if int8 else "") + SUFFIXES[fmt])


def add_export_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect export``."""
    p.add_argument("--weights", help="SSD checkpoint (default: the shipped weights)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="file format")
    p.add_argument("-o", "--output", help="file to write, never the weights (default: beside the weights, w.pt -> w.onnx "
                   "or w.torchscript, w.int8.onnx with --int8; the shipped weights' export goes to the current folder)")
    p.add_argument("--opset", type=checked(int, ">= 7"), default=17, help="ONNX opset")
    add_int8_options(p, "write")


def cmd_export(args: argparse.Namespace) -> int:
    """``detect export``: exit 0 when written; unusable weights, options or output raise UsageError."""
    from detect.infer.weights import resolve_weights
    from detect.utils import OutputPathError, check_output_path

    int8 = getattr(args, "int8", False)
    if int8 and args.format != "onnx":
        raise UsageError("--int8 writes an ONNX file: use --format onnx")
    weights = resolve_weights(args.weights)  # WeightsError: a UsageError
    # the shipped weights may sit in a read-only install: their export goes to this folder
    output = Path(args.output or default_output(weights if args.weights else weights.name, args.format, int8))
    try:
        check_output_path(output, [weights])  # `-o w.pt` replaced the checkpoint with the ONNX file
    except OutputPathError as e:
        raise UsageError(str(e)) from None
    try:
        wrapper, meta = load_exportable(weights)  # WeightsError: a UsageError
    except TypeError as e:  # not an SSD
        raise UsageError(str(e)) from None
    try:
        if int8:
            from detect.infer.quantize import export_int8

            out = export_int8(wrapper, meta, output, args.calib, args.calib_images, args.opset)
        elif args.format == "onnx":
            out = export_onnx(wrapper, meta, output, args.opset)
        else:
            out = export_torchscript(wrapper, meta, output)
    except ImportError as e:
        raise UsageError(f"{args.format} export needs an extra package ({e}); pip install 'retail-detect[export]'") from None
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e}") from None
    print(f"exported {meta['source']} -> {out} ({args.format}{', INT8' if int8 else ''}; input images[B, 3, {meta['imgsz']}, {meta['imgsz']}], "
          f"outputs boxes[B, N, 4], scores[B, N, {len(json.loads(meta['classes']))}]; NMS not included: see detect.infer.export.postprocess)")
    return 0
