"""Checkpoints: one self-describing dict per file, read only with ``torch.load(weights_only=True)``.

Schema (``FORMAT`` = "retail-detect/1"):

=============  ===================================================================
key            value
=============  ===================================================================
format         "retail-detect/1" (checked on load; other versions are refused)
config         ``ExperimentConfig.to_dict()`` (model, data, train, preprocess)
classes        list[str], index = 0-based label
model          state dict of the bare model (fp32, or fp16 in a ``half`` export)
ema            ``{"model": state dict, "updates", "decay", "tau"}`` or None
epoch          number of finished epochs
best_map       best val ``voc_ap50`` so far (NaN before the first evaluation)
metrics        list of per-epoch CSV rows (dicts of str -> float/int/str)
optimizer      optimizer state dict                        (training checkpoints only)
scheduler      LambdaLR state dict                         (training checkpoints only)
scaler         GradScaler state dict                       (training checkpoints only)
rng            list (one per rank) of {"torch", "cuda", "numpy", "python"}  (training only)
=============  ===================================================================

Everything is tensors, numbers, strings, lists and dicts, so ``weights_only=True`` loads it:
NumPy's and Python's RNG states are stored as tensors/lists, never as pickled objects.
``load_model`` rebuilds the network from the stored config (backbone weights not needed) and
prefers the EMA weights. The preprocessing is stored once, in ``config["preprocess"]``.

Older files of this FORMAT keep loading. :func:`load_checkpoint` drops what they stored twice
(a top-level ``preprocess`` copy and the SSD's ``mean``/``std`` buffers in the state dicts,
:data:`RETIRED_WEIGHTS`); :func:`stored_config` gives fields added since the value that rebuilds
their network (:data:`ADDED_FIELDS`), and settings that moved are read from where they were
(:data:`detect.config.MOVED`, e.g. Fast R-CNN's old ``model.extra`` dict).
"""

from __future__ import annotations

import copy
import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from detect.config import ExperimentConfig, upgrade
from detect.errors import UsageError
from detect.checks import model_size_problem
from detect.data.cache.safe_pickle import PICKLE_DATA_ERRORS
from detect.models.crop_classifier import KIND as CLASSIFIER_KIND
from detect.utils import atomic_write

FORMAT = "retail-detect/1"
# Config fields added after checkpoints of this FORMAT were written, with the value that
# rebuilds those older checkpoints' network (a missing field would otherwise take today's default).
ADDED_FIELDS = {("model", "conv_head"): False, ("model", "context"): "none",
                ("model", "fast_rcnn", "semantic"): False, ("model", "ssd", "box_classifier"): False,
                ("preprocess", "resize"): "stretch",  # trained before letterboxing
                ("preprocess", "object_size"): 0.0}  # unknown: slicing estimates the scale from the photo alone
FORMAT_NAME = FORMAT.split("/")[0]
# State-dict entries older checkpoints hold and today's models do not save: the SSD's mean/std
# buffers (the config holds the preprocessing).
RETIRED_WEIGHTS = ("mean", "std")


class CheckpointError(UsageError):
    """The file is not a checkpoint this version can read; the message says why and what to do."""


WHAT_TO_PASS = "pass the best.pt of a `detect train` run (or, to detect and evaluate, the .onnx file of `detect export`)"
_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"BM", "a BMP image"),
          (b"\x93NUMPY", "a NumPy .npy array"), (b"\x1f\x8b", "a gzip file"), (b"%PDF", "a PDF document"),
          (b"\x89HDF", "an HDF5 file (Keras or other weights)"), (b"7z\xbc\xaf", "a 7-Zip archive"))


def weights_kind(path: str | Path) -> str:
    """What a weights file holds, from its first bytes (and a ZIP's list of names): "checkpoint"
    (a PyTorch file; ``torch.load`` judges the rest), "onnx" (``detect export``'s file), or
    what it is, for messages: "a text file", "a TorchScript file", "a PNG image", "an empty
    file", "a file of unknown format"."""
    from detect.models.onnx_ssd import looks_like_onnx

    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):  # torch.save's format, TorchScript, .npz, any ZIP
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged ZIP archive (a truncated download?)"
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "a TorchScript file (`detect export --format torchscript` writes those; it holds no config)"
        if any(n.endswith("data.pkl") for n in names):
            return "checkpoint"
        return "a NumPy .npz archive" if names and all(n.endswith(".npy") for n in names) else "a ZIP archive"
    if head[:1] == b"\x80":  # a pickle (torch.save's legacy format)
        return "checkpoint"
    if looks_like_onnx(head):
        return "onnx"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError as e:
            if e.start >= len(head) - 3:  # a character cut at the end of the head
                return "a text file"
    return "a file of unknown format"


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """Write ``{"format": FORMAT, **state}`` to ``path`` atomically (temp file + rename), so a
    crash mid-write leaves the previous file intact."""
    state = {"format": FORMAT, **state}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))
    return Path(path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its format.

    Raises FileNotFoundError for a missing file and CheckpointError for a file that is not a
    retail-detect checkpoint, is of another format version, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    kind = weights_kind(path)
    if kind == "onnx":
        raise CheckpointError(f"{path} is an ONNX model (from `detect export`), not a checkpoint: `detect predict` and "
                              "`detect val` take it, training and export need the .pt checkpoint it came from")
    if kind != "checkpoint":
        raise CheckpointError(f"{path} is {kind}, not a checkpoint; {WHAT_TO_PASS}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused by the safe loader (torch.load weights_only=True): it holds pickled Python "
            f"objects, so it is not a {FORMAT_NAME} checkpoint; never load untrusted files unrestricted ({e})"
        ) from None
    except (RuntimeError, OSError, *PICKLE_DATA_ERRORS) as e:  # (its UnpicklingError is the clause above)
        # garbage bytes reach the unpickler's internals in many ways (e.g. IndexError on a text file)
        raise CheckpointError(f"{path}: not a readable PyTorch file (truncated or another format?): "
                              f"{type(e).__name__}: {e}") from None
    return _drop_retired(check_format(ckpt, path))


def _drop_retired(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``ckpt`` without what older files of this FORMAT stored twice (see the module docstring)."""
    ckpt.pop("preprocess", None)
    for state in (ckpt.get("model"), (ckpt.get("ema") or {}).get("model")):
        if isinstance(state, dict):
            for key in RETIRED_WEIGHTS:
                state.pop(key, None)
    return ckpt


def check_format(ckpt: Any, path: str | Path = "<checkpoint>") -> dict[str, Any]:
    """``ckpt`` if it is a dict of this ``FORMAT`` with ``config``, ``classes`` and ``model``."""
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not a {FORMAT_NAME} checkpoint (no 'format' key; found {keys}). Train with "
            f"`detect train`, or for backbone ImageNet weights use --backbone-weights"
        )
    fmt = ckpt["format"]
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith(FORMAT_NAME + "/"):
            raise CheckpointError(
                f"{path}: checkpoint format {fmt!r}, but this version of retail-detect reads {FORMAT!r}; "
                f"use the retail-detect version that wrote it"
            )
        raise CheckpointError(f"{path}: foreign checkpoint format {fmt!r}; expected {FORMAT!r}")
    missing = [k for k in ("config", "classes", "model") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: {FORMAT} checkpoint without {missing}; the file is incomplete")
    return ckpt


def inference_state(ckpt: dict[str, Any], half: bool = False) -> dict[str, Any]:
    """A small weights-only copy of a training checkpoint: config, classes, epoch, best_map,
    metrics and ONE state dict ``model`` (the EMA weights when there are some).
    ``half`` stores floating tensors as fp16 (``load_model`` casts back to fp32)."""
    ema = ckpt.get("ema")
    weights = _weights(ckpt)
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    keep = ("config", "classes", "epoch", "best_map", "best_epoch", "metrics")
    out = {k: ckpt[k] for k in keep if k in ckpt}
    out.update(model=weights, ema=None, weights="ema" if ema else "model")
    return out


def _weights(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The state dict to infer with: the EMA weights when the checkpoint has them."""
    ema = ckpt.get("ema")
    return ema["model"] if ema else ckpt["model"]


def export_weights(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """Strip a training checkpoint to an inference file (e.g. the shipped ``weights/``)."""
    return save_checkpoint(dst, **inference_state(load_checkpoint(src), half=half))


def stored_config(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> ExperimentConfig:
    """The config a checkpoint was trained with, fields it predates set as :data:`ADDED_FIELDS`
    says, settings that moved since read from their old place (``ExperimentConfig.from_dict``).
    Raises :class:`CheckpointError` naming ``path`` when it is not a config dict."""
    d = ckpt.get("config")
    if ckpt.get("kind") == CLASSIFIER_KIND:
        raise CheckpointError(f"{path} is a crop classifier (detect train-classifier), not a detector: pass it as "
                              "--classifier beside the detector's --weights")
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: the checkpoint's config is a {type(d).__name__}, not a dict of config "
                              "sections; the file was not written by retail-detect or was edited")
    d = upgrade(copy.deepcopy(d))  # settings at their current paths first, then the fields they lack
    for (section, *parents, name), old in ADDED_FIELDS.items():
        holder = d.get(section)
        for part in parents:
            holder = holder.setdefault(part, {}) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            holder.setdefault(name, old)
    model = d.get("model")
    if isinstance(model, dict) and model.get("name") == "fast_rcnn" and model.get("context", "auto") == "auto":
        # Fast R-CNN's auto context was the class prior until 2026-12-04 (its MODEL_SPECS row): its learned scale tells
        if "context.scale" in _weights(ckpt):
            model["context"] = "prior"
    try:
        return ExperimentConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: the checkpoint's config does not fit this version: {e}") from None


def load_model(path: str | Path, device: Any = "cpu") -> tuple[torch.nn.Module, ExperimentConfig, list[str]]:
    """Rebuild the model stored in a checkpoint, in eval mode on ``device``.

    The network is built from (a copy of) the stored config with ``pretrained="none"`` (the
    trained weights replace the backbone's anyway, so no backbone weight file is needed); the EMA
    weights are used when the checkpoint has them. Returns ``(model, stored config, classes)``.
    The ``.onnx`` file of ``detect export`` loads too, as an
    :class:`~detect.models.onnx_ssd.OnnxSSD` with the config its metadata describes.
    """
    from detect.models.build import build_model

    if Path(path).is_file() and weights_kind(path) == "onnx":
        from detect.models.onnx_ssd import load_onnx

        return load_onnx(path, device)
    ckpt = load_checkpoint(path, map_location="cpu")
    cfg = stored_config(ckpt, path)
    classes = [str(c) for c in ckpt["classes"]]
    problem = model_size_problem(cfg.preprocess.imgsz, len(classes))
    if problem:  # before anything is built at that size
        raise CheckpointError(f"{path}: {problem}; not loaded")
    cfg.model.num_classes = len(classes)
    build = cfg.for_rebuild()
    model = build_model(build.model, build.preprocess)
    try:
        model.load_state_dict(_weights(ckpt))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {e}") from None
    return model.to(device).eval(), cfg, classes


# ---------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, CUDA, NumPy, Python) as tensors and lists, so that
    ``weights_only=True`` can load them."""
    key, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": str(key), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda: Optional[list] = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
