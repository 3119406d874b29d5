"""``build_model(cfg, preprocess)``: the one place that maps a ModelConfig to a detector."""

from __future__ import annotations

from torch import nn

from detect.config import ModelConfig, Preprocess

MODELS = ("ssd", "fast_rcnn")


def build_model(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> nn.Module:
    """Build the detector ``cfg.name`` for ``preprocess.imgsz`` inputs, in train mode.

    Args:
        cfg: model settings; ``cfg.num_classes`` (object classes, without background) must be set.
        preprocess: input size and normalisation (with ImageNet backbone weights the detector sets
            ``mean``/``std`` to the values those weights expect).
        load_weights: False skips the backbone's ImageNet weights (a checkpoint is loaded next);
            ``cfg.pretrained = "none"`` does the same.
    """
    if cfg.num_classes < 1:
        raise ValueError(f"model.num_classes must be >= 1 (set it from the dataset's classes), got {cfg.num_classes}")
    if cfg.name == "ssd":
        from detect.models.ssd import build_ssd

        model = build_ssd(cfg, preprocess, load_weights=load_weights)
    elif cfg.name == "fast_rcnn":
        from detect.models.fast_rcnn import build_fast_rcnn

        model = build_fast_rcnn(cfg, preprocess, load_weights=load_weights)
    else:
        raise ValueError(f"unknown model {cfg.name!r}; choose one of {MODELS}")
    if cfg.bn == "sync":  # every BN, new layers too; falls back to plain BN outside DistributedDataParallel
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
