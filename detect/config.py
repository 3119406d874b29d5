"""Typed configuration: dataclasses with a YAML/dict round trip, and the one table of options.

Every setting is declared once, here, as a field made by :func:`setting`: its type (a
``Literal[...]`` for a closed set of values), its default, a one-line help, and where it applies
the command-line spelling (``cli``), the rule a value must follow (``check``, one of
:data:`CHECKS`) and other names ``detect tune`` accepts for it (``aliases``). The rest is derived
from these declarations: :mod:`detect.options` adds the ``detect train`` options (choices, ``--x``
/ ``--no-x`` for booleans, defaults in ``--help``) and applies the given ones to a config, and
``detect tune`` takes its parameter names, choices and checks from
:func:`detect.settings.settings` (the option table read from these declarations). Adding a
field is one declaration plus the code that uses it.

Every checkpoint stores ``ExperimentConfig.to_dict()`` together with the class names, so loading
weights needs nothing else. CLI options override a YAML file, which overrides these defaults.
"""

from __future__ import annotations

import os
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import yaml

from detect.checks import CHECKS  # the rules the settings below name (re-exported)
from detect.errors import UsageError


def setting(default: Any = dataclasses.MISSING, help: str = "", *, cli: Optional[str] = None,
            check: Optional[str] = None, aliases: tuple[str, ...] = (), factory: Optional[Callable[[], Any]] = None) -> Any:
    """A config field declared once: ``default`` (or ``factory`` for a list), a one-line ``help``,
    the ``detect train`` option ``cli`` (e.g. ``"--weight-decay"``; None: YAML only), the rule
    ``check`` that values given on the command line or searched by ``detect tune`` must follow,
    and search-name ``aliases``. Choices come from the field's ``Literal[...]`` type."""
    if check is not None and check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; known: {list(CHECKS)}")
    meta = {"help": help, "cli": cli, "check": check, "aliases": tuple(aliases)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class ReadOnlyError(AttributeError):
    """A setting of a read-only config was set (:meth:`ExperimentConfig.read_only`)."""


class _Section:
    """Base of every config section: settable until :meth:`ExperimentConfig.read_only` marks it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_read_only"):
            raise ReadOnlyError(f"{type(self).__name__}.{name}: the config is read-only once resolved "
                                "(detect.engine.resolve); make a new one to change a setting")
        object.__setattr__(self, name, value)


@dataclass
class Preprocess(_Section):
    """What the model expects of an image: letterboxed (or, in older checkpoints, stretched) to
    ``imgsz`` x ``imgsz``, RGB, scaled to [0, 1], then normalised with ``mean``/``std`` (inside the
    model); and the size of the products it learned (``object_size``), which sliced inference
    uses to cut a large photo at the scale the model knows (detect/infer/slicing.py)."""

    imgsz: int = setting(0, "input side in pixels (images are letterboxed to imgsz x imgsz); 0: chosen from the training "
                            "images (median longer side, in [224, 640])", cli="--imgsz", check="0 or >= 32")
    resize: Literal["letterbox", "stretch"] = setting(
        "letterbox", "how an image becomes the imgsz x imgsz input: longer side scaled, aspect kept, padded (letterbox) "
        "or both sides scaled (stretch; checkpoints from before letterboxing)")
    object_size: float = setting(0.0, "median product side in input pixels the model learned (0: measured from the "
                                      "training data and saved with the run)", check=">= 0")
    # The default backbone's (EfficientNet-Lite, TF preprocessing: (pixel - 127) / 128); other
    # backbones: detect.models.backbones.preprocess_for(name, imgsz) (ImageNet mean/std).
    mean: tuple[float, float, float] = setting((127 / 255,) * 3, "per-channel mean of [0, 1] RGB input (set from the backbone's weights)")
    std: tuple[float, float, float] = setting((128 / 255,) * 3, "per-channel std of [0, 1] RGB input (set from the backbone's weights)")


@dataclass
class FastRCNNConfig(_Section):
    """Fast R-CNN (``model.name: fast_rcnn``); the defaults follow the paper where it says."""

    proposals: Literal["rpn", "selective_search", "file"] = setting(
        "rpn", "Fast R-CNN proposal source: a learned RPN, or precomputed (data.proposal_file)", cli="--proposals")
    roi_op: Literal["roi_pool", "roi_align"] = setting("roi_pool", "RoI max pooling (the paper's) or RoIAlign")
    roi_size: int = setting(7, "RoI output bins per side", check=">= 1")
    feature_stride: int = setting(16, "stride of the backbone map the RoIs are pooled from (16 or 32)", check=">= 1")
    head: Literal["fc", "conv"] = setting("fc", "box head: two fully connected layers, or two 3x3 convs and average pooling")
    fc_dim: int = setting(1024, "width of the box head", check=">= 1")
    roi_channels: int = setting(256, "a 1x1 conv projects a wider feature map to this many channels (0: never)", check=">= 0")
    rois_per_image: int = setting(64, "RoIs sampled per training image", check=">= 1")
    fg_fraction: float = setting(0.25, "share of foreground RoIs in that sample", check="in [0, 1)")
    fg_iou: float = setting(0.5, "a RoI with at least this IoU to a ground-truth box is foreground", check=">= 0")
    bg_iou: tuple[float, float] = setting((0.1, 0.5), "a RoI with IoU in [low, high) is background")
    ss_mode: Literal["fast", "quality"] = setting("fast", "selective search the model runs on new images without proposals")
    ss_max: int = setting(2000, "proposals kept per image by that search", check=">= 1")
    ss_resize: int = setting(500, "longer side that search runs at (0: the original)", check=">= 0")
    rpn_anchor_fractions: Optional[list[float]] = setting(None, "RPN anchor sides as fractions of imgsz (None: defaults)")
    rpn_aspect_ratios: Optional[list[float]] = setting(None, "RPN anchor aspect ratios (None: defaults)")
    semantic: bool = setting(True, "the classifier also reads the deepest backbone map averaged over each RoI "
                              "(+0.04 voc_ap50 on groceries, bench/RESULTS.md)")


@dataclass
class SSDConfig(_Section):
    """SSD (``model.name: ssd``): its default boxes and loss."""

    anchor_sizes: Optional[list[float]] = setting(None, "SSD: default-box scale per feature map, relative to imgsz (None: defaults)")
    aspect_ratios: Optional[list[list[float]]] = setting(None, "SSD: default-box w/h ratios per feature map (None: defaults)")
    fit_anchors: bool = setting(False, "SSD: fit the aspect ratios to the training boxes (k-means on log w/h)")
    neg_pos_ratio: int = setting(3, "SSD: hard negatives per positive default box")
    box_loss: Literal["smooth_l1", "giou"] = setting("smooth_l1", "SSD: smooth L1 on encoded offsets or GIoU on decoded boxes")
    box_classifier: Optional[bool] = setting(
        None, "SSD: its most object-like boxes take their class partly from a second head reading each box's own "
        "features (detect/models/box_classifier.py); none (auto): added fresh in the recipe's mosaic stage only, "
        "--box-classifier: also in a run without that stage and added by a --weights fine-tune, --no-box-classifier: "
        "not added (a checkpoint's own head stays)",
        cli="--box-classifier")
    box_classifier_topk: int = setting(100, "SSD: boxes per input the box classifier reads", check=">= 1")
    box_classifier_weight: float = setting(0.5, "SSD: the box classifier's share of those boxes' class (the anchor "
                                           "head's the rest; a weighted geometric mean)", check="in [0, 1]")


@dataclass
class ModelConfig(_Section):
    # a row of detect.models.specs.MODEL_SPECS (its names are the --model choices: detect.options)
    name: str = setting("ssd", "detector", cli="--model")
    backbone: str = setting("efficientnet_lite0", "feature extractor: efficientnet_lite0/1/2 or a torchvision name (README: Models)",
                            cli="--backbone")
    pretrained: Literal["imagenet", "none"] = setting("imagenet", "backbone initialisation; none trains from scratch on purpose",
                                                      cli="--pretrained")
    backbone_weights: Optional[str] = setting(None, "local weight file for a torchvision backbone", cli="--backbone-weights")
    bn: Literal["frozen", "train", "sync"] = setting("frozen", "BatchNorm: frozen statistics, trained, or synchronised under DDP",
                                                     cli="--bn")
    # +0.07 voc_ap50 on groceries (bench/RESULTS.md); checkpoints from before this field rebuild with False
    conv_head: bool = setting(True, "EfficientNet-Lite: keep the pretrained 1x1 conv to 1280 channels on the stride-32 map",
                              cli="--conv-head")
    num_classes: int = setting(0, "object classes, background excluded (filled from the data)")
    freeze_stride: int = setting(8, "backbone stages with output stride up to this stay fixed: no backward through them (0: none)",
                                 cli="--freeze-stride", check=">= 0")
    context: Literal["auto", "none", "add", "prior"] = setting(
        "auto", "image-level context from the pooled deepest map, added to every box's class logits: its logits (add) "
        "or a class prior (prior; detect/models/context.py); auto: what won on groceries for the detector "
        "(add for both)", cli="--context")
    context_loss: Optional[float] = setting(
        None, "weight of the image-level class loss that trains the context; none: what won on groceries "
        "(SSD 1.0, Fast R-CNN 0: trained through the boxes only)", cli="--context-loss", check=">= 0")
    context_pool: Literal["image", "box"] = setting(
        "image", "where the context is pooled: the whole input (image), or each box's own area (box: the same "
        "layer, right where one input holds many product kinds: shelves, mosaics, slices)", cli="--context-pool")
    # postprocess
    score_thresh: float = setting(0.01, "detections scoring at most this are dropped", check=">= 0")
    nms_thresh: float = setting(0.45, "per-class NMS IoU threshold", check=">= 0")
    max_det: int = setting(300, "detections kept per image (up to 1000 for dense shelves)", check=">= 1")
    pre_nms_topk: int = setting(1000, "best (box, class) candidates per image entering NMS (at least max_det)", check=">= 1")
    ssd: SSDConfig = field(default_factory=SSDConfig)  # read when name is ssd
    fast_rcnn: FastRCNNConfig = field(default_factory=FastRCNNConfig)  # read when name is fast_rcnn


@dataclass
class DataConfig(_Section):
    data: str = setting("", "dataset YAML, VOC folder or cache .pkl", cli="--data")
    train_split: str = setting("train", "split to train on")
    val_split: str = setting("val", "split to validate on (empty: none)")
    workers: int = setting(2, "data loader processes (0: in the training process)", cli="--workers", check=">= 0")
    augment: float = setting(1.0, "train augmentation strength (0: none)", cli="--augment", check=">= 0")
    min_visibility: float = setting(0.3, "a box keeps at least this fraction of its area after a crop", check="in [0, 1)")
    crop_object: float = setting(0.2, "photos whose products would come out smaller than this fraction of imgsz when the "
                                      "whole photo is the input (store shelves) are trained on native-scale crops that show "
                                      "them this big (0: never)", cli="--crop-object", check=">= 0")
    mosaic: float = setting(0.0, "share of training inputs that are 2x2 native-scale mosaics of four photos (many "
                                 "product kinds in one input, as on a store shelf; detect/data/mosaic.py)", cli="--mosaic",
                            check="in [0, 1]")
    mosaic_centre: float = setting(
        0.0, "share of the mosaics whose window is centred on one product of a photo, neighbours of the other photos "
        "around it: the view sliced inference reads each product in (detect/infer/recentre.py); the rest are cut at a "
        "random point", cli="--mosaic-centre", check="in [0, 1]")
    mosaic_stage: Literal["auto", "on", "off"] = setting(
        "auto", "end the run with a mosaic stage: its last third fine-tunes the first two thirds' best weights with "
        "--mosaic 0.5 (detect/engine/stages.py); auto: on when the train photos each hold one product kind",
        cli="--mosaic-stage")
    val_sheets: int = setting(
        0, "also validate on the val photos tiled N x N into sheets, neighbours of different kinds (RUN/val_sheets/; "
        "detect/data/sheets.py), so the val score covers a shelf's mix too (0: off; the mosaic stage: 3)",
        cli="--val-sheets", check="0 or >= 2")
    proposal_file: Optional[str] = setting(
        None, "precomputed proposals of a Fast R-CNN without RPN (`detect proposals`, or .npz/.json/.pkl)", cli="--proposal-file")
    max_proposals: int = setting(0, "keep each image's best this many precomputed proposals (0: all)", check=">= 0")
    balance: float = setting(0.0, "class-balanced sampling: images of rare classes repeat (f_max / f_class) ** balance times "
                             "an epoch (0: off, 0.5: square root)", cli="--balance", check=">= 0")


@dataclass
class TrainConfig(_Section):
    epochs: int = setting(30, "training epochs", cli="--epochs", check=">= 1")
    time: float = setting(0.0, "wall-clock budget in minutes for the whole run; epochs and schedule are planned to fit it "
                               "(0: train --epochs)", cli="--time", check=">= 0")
    batch: int = setting(32, "global batch size (split over the processes under torchrun)", cli="--batch", check=">= 1")
    optimizer: Literal["sgd", "adamw"] = setting("adamw", "optimizer", cli="--optimizer")
    lr: float = setting(1e-3, "peak learning rate, reached after the warmup", cli="--lr", check="> 0")
    momentum: float = setting(0.9, "SGD momentum, or AdamW beta1", cli="--momentum", check="in [0, 1)", aliases=("beta1",))
    beta2: float = setting(0.999, "AdamW beta2", check="in [0, 1)")
    weight_decay: float = setting(0.05, "weight decay (not on BatchNorm and biases)", cli="--weight-decay", check=">= 0")
    backbone_lr: float = setting(1.0, "the pretrained backbone's learning rate, as a multiple of lr", cli="--backbone-lr",
                                 check="> 0")
    warmup_epochs: float = setting(1.0, "linear warmup length in epochs", cli="--warmup-epochs", check=">= 0")
    scheduler: Literal["cosine", "step"] = setting("cosine", "decay after the linear warmup", cli="--scheduler")
    milestones: list[float] = setting(help="step decay points, as fractions of the epochs", factory=lambda: [0.67, 0.89])
    gamma: float = setting(0.1, "step decay factor", check="> 0")
    clip_grad: float = setting(10.0, "max gradient norm (0: no clipping)", cli="--clip-grad", check=">= 0")
    ema: bool = setting(True, "keep an EMA of the weights (evaluated and saved)", cli="--ema")
    ema_decay: float = setting(0.9998, "EMA decay per step", check="in [0, 1)")
    amp: bool = setting(True, "mixed precision (CUDA only)", cli="--amp")
    seed: int = setting(0, "random seed (data order, augmentation, initialisation)", cli="--seed")
    device: str = setting("auto", "auto | cpu | cuda | cuda:I", cli="--device")
    out: str = setting("runs/train", "run folder", cli="--out")
    eval_every: int = setting(1, "evaluate on the val split every N epochs (and at the end)", cli="--eval-every", check=">= 1")
    resume: bool = setting(False, "continue the run in --out from its last.pt", cli="--resume")
    weights: Optional[str] = setting(None, "start from this detector (RUN/best.pt, the shipped weights): its network "
                                     "and weights, classes matched by name, new classes added (add products to a model)",
                                     cli="--weights")
    channels_last: bool = setting(True, "NHWC activations (CPU: about 1.4x faster steps; CUDA: faster convolutions with AMP)",
                                  cli="--channels-last")
    log_every: int = setting(20, "iterations between progress updates (each one syncs the GPU)", check=">= 1")


@dataclass
class ExperimentConfig(_Section):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: Preprocess = field(default_factory=Preprocess)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """The config of a dict (YAML, checkpoint); settings stored where they used to be
        (:data:`MOVED`) are read from there."""
        return _from_dict(cls, upgrade(d or {}), "")

    def read_only(self) -> "ExperimentConfig":
        """A copy whose settings cannot be set (:class:`ReadOnlyError`): what
        :func:`detect.engine.resolve.resolve` hands the trainer. ``from_dict(to_dict())`` or
        :meth:`for_rebuild` give a settable copy again."""
        c = ExperimentConfig.from_dict(self.to_dict())
        for section in _sections(c):
            object.__setattr__(section, "_read_only", True)
        return c

    @property
    def is_read_only(self) -> bool:
        return bool(self.__dict__.get("_read_only"))

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
        """Write the config as YAML; input paths (:data:`INPUT_PATHS`) relative to the current
        folder are written absolute, so the file works from any folder."""
        from detect.utils import atomic_write_text

        d = self.to_dict()
        for p in INPUT_PATHS:
            section, name = p.split(".")
            v = d[section][name]
            if isinstance(v, str) and v and not Path(v).is_absolute() and Path(v).exists():
                d[section][name] = str(Path(v).resolve())
        atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> "ExperimentConfig":
        from detect.readers import load_yaml  # bounded, regular files only, alias and depth limits

        if not os.path.lexists(path):
            raise UsageError(f"config file {path} not found")
        d = load_yaml(path, "config file") or {}
        if not isinstance(d, dict):
            raise UsageError(f"{path}: expected a mapping with sections model/data/train/preprocess")
        return cls.from_dict(d)


def _sections(cfg: Any) -> list[Any]:
    """``cfg`` and every config section inside it."""
    out = [cfg]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += _sections(v)
    return out


# Settings naming files that must exist (read, not written): saved configs hold them absolute.
INPUT_PATHS = ("data.data", "data.proposal_file", "model.backbone_weights", "train.weights")

# Settings that moved, old path -> new path. Every dict read (YAML, checkpoints, tune studies)
# passes through upgrade(), so configs written before a move keep loading; ``detect tune``
# accepts the old paths as parameter names too.
MOVED: dict[str, str] = {
    **{f"model.{k}": f"model.fast_rcnn.{k}" for k in ("proposals", "roi_op", "roi_size")},
    # SSD options sat flat in model until issue 23
    **{f"model.{f.name}": f"model.ssd.{f.name}" for f in dataclasses.fields(SSDConfig)},
    # Fast R-CNN options used to live in an untyped model.extra dict
    **{f"model.extra.{f.name}": f"model.fast_rcnn.{f.name}" for f in dataclasses.fields(FastRCNNConfig)},
    "model.extra.proposal_file": "data.proposal_file",
    "model.extra.max_proposals": "data.max_proposals",
}
_RETIRED = ("model.extra",)  # containers that moved away; dropped once empty


def upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A copy of config dict ``d`` with every setting found at an old path (:data:`MOVED`) put
    at its new one (a value already at the new path wins)."""
    d = _to_plain(d)
    for old, new in MOVED.items():
        *parents, name = old.split(".")
        holder = d
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or name not in holder:
            continue
        value = holder.pop(name)
        *parents, name = new.split(".")
        holder = d
        for part in parents:
            holder = holder.setdefault(part, {})
        holder.setdefault(name, value)
    for old in _RETIRED:
        section, name = old.split(".")
        if isinstance(d.get(section), dict) and d[section].get(name) in ({}, None):
            d[section].pop(name, None)
    return d


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
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in d.items():
        if k not in fields:
            raise UsageError(f"unknown config key {where + k!r}; known: {sorted(fields)}")
        if dataclasses.is_dataclass(hints[k]):
            kwargs[k] = _from_dict(hints[k], v, f"{where}{k}.")
        elif isinstance(fields[k].default, tuple) and isinstance(v, list):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)
