"""Which weights to infer with, and loading them: the shipped default, found inside an installed
wheel as in a checkout, and every unusable file turned into a :class:`WeightsError` that says
what to do (a usage error: ``detect`` exits 2).

The default weights live in the repository's top-level ``weights/`` folder; ``pyproject.toml``
maps that folder into the wheel as the data-only package ``detect/_weights``, so ``pip install
.`` (not editable) ships them and ``detect demo`` works from any folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from detect.errors import UsageError
from detect.models.build import set_postprocess

DEFAULT_WEIGHTS_NAME = "ssd_lite0_synth.pt"


def shipped_weights_dir() -> Path:
    """``detect/_weights`` of an installed wheel, else the checkout's ``weights/`` (editable
    installs and running from the repository)."""
    package = Path(__file__).resolve().parents[1]  # detect/
    installed = package / "_weights"
    return installed if installed.is_dir() else package.parent / "weights"


DEFAULT_WEIGHTS = shipped_weights_dir() / DEFAULT_WEIGHTS_NAME


class WeightsError(UsageError):
    """The weights file is missing or is not a retail-detect checkpoint (exit code 2)."""


def resolve_weights(weights: Optional[str | Path]) -> Path:
    """``weights`` or the shipped default, checked to exist (else a :class:`WeightsError`
    that says how to get weights)."""
    path = Path(weights) if weights else DEFAULT_WEIGHTS
    if not path.is_file():
        if weights:
            raise WeightsError(f"weights file {path} not found; pass --weights with a checkpoint from `detect train` (RUN/best.pt)")
        raise WeightsError(
            f"the shipped weights {path} are missing from this install; pass --weights with a checkpoint from "
            "`detect train` (RUN/best.pt), or reinstall retail-detect (pip install . ships weights/ inside the package)"
        )
    return path


def load_for_inference(path: Path, device: torch.device, conf: float, iou: float, max_det: int):
    """Load a checkpoint (config, classes, weights) and set the requested postprocess settings
    on its model and config. Returns ``(model, ExperimentConfig, classes)``."""
    from detect.engine.checkpoint import CheckpointError, load_model

    try:
        model, cfg, classes = load_model(str(path), device)
    except FileNotFoundError as e:
        raise WeightsError(f"weights file {path} not found: {e}") from e
    except (CheckpointError, UsageError) as e:  # a foreign, truncated or other-version file, a bad .onnx: the message says which
        raise WeightsError(str(e)) from e
    except (ValueError, KeyError, TypeError) as e:  # a retail-detect file whose config this version cannot build
        raise WeightsError(f"{path}: the checkpoint's config cannot be built by this version ({type(e).__name__}: {e})") from e
    set_postprocess(model, cfg.model, score_thresh=conf, nms_thresh=iou, max_det=max_det)
    return model.eval(), cfg, list(classes)
