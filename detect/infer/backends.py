"""Which runtime runs a :class:`~detect.infer.predict.Predictor`'s network: PyTorch, or ONNX
Runtime (an SSD on the CPU, 2-3x faster there; or a ``detect export`` file, checked against the
checkpoint it claims to come from)."""

from __future__ import annotations

from pathlib import Path

import torch

from detect.errors import UsageError
from detect.models.onnx_ssd import OnnxSSD

BACKENDS = ("auto", "torch", "onnxruntime")


def pick_backend(backend: str, model: torch.nn.Module, device: torch.device) -> str:
    """"auto": ONNX Runtime for an SSD on the CPU when it is installed (2-3x faster there), else
    PyTorch. An explicit "onnxruntime" that cannot work is an error that says why."""
    from detect.infer.export import has_export_head

    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(model, OnnxSSD):  # `detect export`'s file
        if backend == "torch":
            raise UsageError(f"{model.path} is an ONNX model: it runs on ONNX Runtime, not PyTorch; drop --backend torch "
                             "or pass the .pt checkpoint it was exported from")
        return "onnxruntime"
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return "torch"
    if has_export_head(model) and _onnxruntime_installed() and device.type == "cpu":
        return "onnxruntime"
    if backend == "onnxruntime":
        raise UsageError("backend 'onnxruntime' needs an SSD model on the CPU and onnxruntime installed "
                         "(pip install onnxruntime); use --backend torch")
    return "torch"


def _onnxruntime_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def checked_onnx(path: Path, names: list[str], imgsz: int) -> Path:
    """``path`` if it is a graph ``detect export`` wrote for a model with these classes and
    input size (its metadata says), else a :class:`UsageError` that says what differs."""
    import onnx

    from detect.readers import parse_json

    if not path.is_file():
        raise UsageError(f"--onnx {path}: file not found; write one with `detect export -o {path.name}` (add --int8 for INT8)")
    try:
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as e:  # onnx raises its own DecodeError types
        raise UsageError(f"--onnx {path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    if "classes" not in meta or "imgsz" not in meta:
        raise UsageError(f"--onnx {path}: no classes/imgsz metadata; only files written by `detect export` can be run")
    try:  # the bounded parse: nested metadata gave a RecursionError, 1e400 an OverflowError
        same = parse_json(meta["classes"]) == names and parse_json(meta["imgsz"]) == imgsz
    except ValueError:
        same = False
    if not same:
        raise UsageError(f"--onnx {path} was exported from another model (classes or input size differ from the "
                         f"--weights checkpoint's {imgsz} px, {len(names)} classes); pass the --weights it came from")
    return path
