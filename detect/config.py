"""Typed configuration: dataclasses with a YAML/dict round trip.

Every checkpoint stores ``ExperimentConfig.to_dict()`` together with the class names and the
preprocessing, so loading weights needs nothing else. CLI options override a YAML file, which
overrides these defaults (see ``detect.cli``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from detect.errors import UsageError


@dataclass
class Preprocess:
    """What the model expects of an image: resized (stretched) to ``imgsz`` x ``imgsz``, RGB,
    scaled to [0, 1], then normalised with ``mean``/``std`` (inside the model)."""

    imgsz: int = 320
    # The default backbone's (EfficientNet-Lite, TF preprocessing: (pixel - 127) / 128); other
    # backbones: detect.models.backbones.preprocess_for(name, imgsz) (ImageNet mean/std).
    mean: tuple[float, float, float] = (127 / 255, 127 / 255, 127 / 255)
    std: tuple[float, float, float] = (128 / 255, 128 / 255, 128 / 255)


@dataclass
class ModelConfig:
    name: str = "ssd"  # "ssd" or "fast_rcnn"
    backbone: str = "efficientnet_lite0"
    pretrained: str = "imagenet"  # "imagenet" or "none" (train from scratch on purpose)
    backbone_weights: Optional[str] = None  # local weight file for torchvision backbones
    bn: str = "frozen"  # "frozen" | "train" | "sync"
    # EfficientNet-Lite: keep the pretrained 1x1 conv to 1280 channels on the stride-32 map (the
    # features its ImageNet classifier reads; +0.07 voc_ap50 on groceries, bench/RESULTS.md).
    # Other backbones ignore it. Checkpoints from before this field rebuild with False.
    conv_head: bool = True
    num_classes: int = 0  # object classes, background excluded; filled from the data
    # SSD
    anchor_sizes: Optional[list[float]] = None  # per feature map, relative to imgsz; None = defaults
    aspect_ratios: Optional[list[list[float]]] = None  # per feature map, explicit w/h list; None = defaults
    fit_anchors: bool = False  # fit aspect ratios to the training boxes (k-means on log w/h)
    neg_pos_ratio: int = 3
    box_loss: str = "smooth_l1"  # "smooth_l1" (encoded offsets) | "giou" (decoded boxes)
    # Fast R-CNN
    proposals: str = "rpn"  # "rpn" | "selective_search" | "file"
    roi_op: str = "roi_pool"  # "roi_pool" | "roi_align"
    roi_size: int = 7
    # postprocess
    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    max_det: int = 300  # up to 1000 for dense shelves
    pre_nms_topk: int = 1000  # best (box, class) candidates per image entering NMS (at least max_det)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    data: str = ""  # dataset YAML, VOC folder or cache .pkl
    train_split: str = "train"
    val_split: str = "val"
    workers: int = 2
    augment: float = 1.0  # strength of the train augmentation, 0 disables it
    min_visibility: float = 0.3  # a box keeps at least this fraction of its area after a crop


@dataclass
class TrainConfig:
    epochs: int = 30
    batch: int = 32
    optimizer: str = "sgd"  # "sgd" | "adamw"
    lr: float = 0.01
    momentum: float = 0.9  # SGD momentum, or AdamW beta1
    beta2: float = 0.999
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    scheduler: str = "cosine"  # "cosine" | "step"
    milestones: list[float] = field(default_factory=lambda: [0.67, 0.89])  # fractions of epochs (step)
    gamma: float = 0.1
    clip_grad: float = 10.0
    ema: bool = True
    ema_decay: float = 0.9998
    amp: bool = True  # only on CUDA
    seed: int = 0
    device: str = "auto"
    out: str = "runs/train"
    eval_every: int = 1
    resume: bool = False
    channels_last: bool = False  # NHWC activations on CUDA (faster convs with AMP)
    log_every: int = 20  # iterations between progress-bar/TensorBoard updates (each one syncs the GPU)


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: Preprocess = field(default_factory=Preprocess)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        return _from_dict(cls, d or {}, "")

    def for_rebuild(self) -> "ExperimentConfig":
        """A copy that builds the same network without any weight file (no ImageNet weights, no
        ``backbone_weights``) and without a process group (SyncBN's state dict is a plain BN's):
        for rebuilding a model whose trained state dict is loaded next."""
        c = ExperimentConfig.from_dict(self.to_dict())
        c.model.pretrained, c.model.backbone_weights = "none", None
        if c.model.bn == "sync":
            c.model.bn = "train"
        return c

    def save_yaml(self, path: str | Path) -> None:
        from detect.utils import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> "ExperimentConfig":
        try:
            with open(path, encoding="utf-8") as f:
                d = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise UsageError(f"config file {path} not found") from None
        except OSError as e:
            raise UsageError(f"config file {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise UsageError(f"config {path}: not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise UsageError(f"{path}: expected a mapping with sections model/data/train/preprocess")
        return cls.from_dict(d)

    def override(self, section: str, **values: Any) -> None:
        """Set fields of one section, ignoring ``None`` (an option the user did not give)."""
        target = getattr(self, section)
        for k, v in values.items():
            if v is None:
                continue
            if not hasattr(target, k):
                raise UsageError(f"unknown {section} setting {k!r}")
            setattr(target, k, v)


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise UsageError(f"config section {where or 'root'!r}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in d.items():
        if k not in fields:
            raise UsageError(f"unknown config key {where + k!r}; known: {sorted(fields)}")
        f = fields[k]
        sub = _dataclass_type(f.type)
        if sub is not None:
            kwargs[k] = _from_dict(sub, v, f"{where}{k}.")
        elif isinstance(f.default, tuple) and isinstance(v, list):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def _dataclass_type(t: Any) -> Optional[type]:
    names = {"ModelConfig": ModelConfig, "DataConfig": DataConfig, "TrainConfig": TrainConfig, "Preprocess": Preprocess}
    if isinstance(t, str):
        return names.get(t)
    return t if dataclasses.is_dataclass(t) else None
