"""Small building blocks shared by the detectors, and BatchNorm utilities.

- :func:`conv_bn_act`: Conv2d + BatchNorm2d (+ ReLU6) as a plain ``nn.Sequential`` (torchvision's
  ``Conv2dNormActivation``), so fusers and quantisation tools recognise the pattern.
- :func:`set_bn_mode`: "train" (leave BatchNorm alone), "frozen" (``FrozenBatchNorm2d``, keeping
  the statistics), "sync" (``nn.SyncBatchNorm``, for DistributedDataParallel on GPUs).

Folding BatchNorm into convolutions for inference is ``detect.infer.fuse`` (it finds every
conv -> BN pair of these layers, the backbones and the heads).
"""

from __future__ import annotations

from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, FrozenBatchNorm2d

BN_MODES = ("train", "frozen", "sync")


def conv_bn_act(
    in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv2d(bias=False) + BatchNorm2d + ReLU6 (or no activation), "same" padding for odd kernels."""
    return Conv2dNormActivation(
        in_ch,
        out_ch,
        kernel_size=kernel,
        stride=stride,
        groups=groups,
        norm_layer=nn.BatchNorm2d,
        activation_layer=nn.ReLU6 if act else None,
        inplace=True if act else None,
    )


def freeze_bn(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` with a ``FrozenBatchNorm2d`` holding the
    same affine parameters, running statistics and eps (in place; returns ``module``)."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        if module.running_mean is None:
            raise ValueError("cannot freeze a BatchNorm without running statistics (track_running_stats=False)")
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps).to(module.running_mean.device)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_bn(child)
        if new is not child:
            setattr(module, name, new)
    return module


def set_bn_mode(module: nn.Module, mode: str) -> nn.Module:
    """Apply a BatchNorm mode to ``module`` (see the module docstring); returns the module to use."""
    if mode == "train":
        return module
    if mode == "frozen":
        return freeze_bn(module)
    if mode == "sync":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    raise ValueError(f"unknown BatchNorm mode {mode!r}; use one of {BN_MODES}")
