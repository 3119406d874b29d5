"""``build_model(cfg, preprocess)``: the one place that builds a ModelConfig's detector (through
its row in :data:`detect.models.specs.MODEL_SPECS`), and
``set_postprocess(model, cfg, ...)``: the one way to change a built detector's postprocessing."""

from __future__ import annotations

from typing import Optional

from torch import nn

from detect.config import ModelConfig, Preprocess
from detect.models.backbones import input_preprocess
from detect.models.specs import model_spec

# Postprocess settings every detector here reads at each forward (the SSD also pre_nms_topk).
POSTPROCESS = ("score_thresh", "nms_thresh", "max_det", "pre_nms_topk")


def build_model(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> nn.Module:
    """Build the detector ``cfg.name`` (its row in :data:`detect.models.specs.MODEL_SPECS`) for
    ``preprocess.imgsz`` inputs, in train mode.

    Args:
        cfg: model settings; ``cfg.num_classes`` (object classes, without background) must be set.
        preprocess: input size and normalisation; with ImageNet backbone weights the detector
            normalises with the values those weights expect
            (:func:`detect.models.backbones.input_preprocess`; a resolved config has them already).
        load_weights: False skips the backbone's ImageNet weights (a checkpoint is loaded next);
            ``cfg.pretrained = "none"`` does the same.
    """
    return build_resolved(cfg, input_preprocess(cfg, preprocess, load_weights), load_weights)


def build_resolved(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> nn.Module:
    """:func:`build_model` for a resolved config (:func:`detect.engine.resolve.resolve`): the
    preprocessing is used as given."""
    if cfg.num_classes < 1:
        raise ValueError(f"model.num_classes must be >= 1 (set it from the dataset's classes), got {cfg.num_classes}")
    spec = model_spec(cfg.name)
    model = spec.build(spec.concrete(cfg), preprocess, load_weights)
    if cfg.bn == "sync":  # every BN, new layers too; falls back to plain BN outside DistributedDataParallel
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def set_postprocess(model: nn.Module, cfg: Optional[ModelConfig] = None, **values: Optional[float]) -> None:
    """Change a built detector's postprocessing, e.g. ``set_postprocess(model, cfg.model,
    score_thresh=0.25, max_det=1000)``: the model's attributes (read at every forward) and, when
    given, its config, so the two agree. ``None`` values are left alone; a setting the model does
    not have (``pre_nms_topk`` on a Fast R-CNN) changes only the config."""
    unknown = sorted(set(values) - set(POSTPROCESS))
    if unknown:
        raise ValueError(f"not postprocess settings: {unknown}; known: {list(POSTPROCESS)}")
    missing = [k for k in POSTPROCESS[:3] if not hasattr(model, k)]
    if missing:
        raise TypeError(f"{type(model).__name__} has no postprocess settings {missing}")
    for name, value in values.items():
        if value is None:
            continue
        value = int(value) if name in ("max_det", "pre_nms_topk") else float(value)
        if hasattr(model, name):
            setattr(model, name, value)
        if cfg is not None:
            setattr(cfg, name, value)
