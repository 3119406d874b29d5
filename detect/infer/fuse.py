"""Inference-time graph tweaks: fold BatchNorm into the convolution before it; channels_last.

A BatchNorm in eval mode is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * w + b``,
so ``bn(conv(x))`` equals one convolution with rescaled weights and a bias. Folding removes a
full pass over every feature map (10-30 % of a MobileNet/EfficientNet's CPU time).

Which BatchNorm follows which convolution is found by *running* the model once on a small
input and watching the data flow (forward hooks), not by guessing from module names or
registration order, so it works for any architecture (torchvision's ``Conv2dNormActivation``,
timm, efficientnet_lite, hand-written blocks). A pair is folded only when the BatchNorm's
input is exactly the convolution's output and each module ran exactly once; then every feature
map of the model is compared before and after, and the original is kept if any differs.
"""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

try:  # torchvision's frozen BN (used by backbones trained with bn="frozen")
    from torchvision.ops.misc import FrozenBatchNorm2d
except ImportError:  # pragma: no cover
    FrozenBatchNorm2d = ()  # type: ignore[assignment,misc]

_BN = (nn.BatchNorm2d, FrozenBatchNorm2d)


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Names of ``(conv, bn)`` pairs where the BatchNorm consumes the convolution's output
    directly, found by running ``model(example)`` once with forward hooks."""
    names = {m: n for n, m in model.named_modules()}
    calls: dict[nn.Module, int] = {}
    produced: dict[int, tuple[torch.Tensor, nn.Module]] = {}  # id(output) -> (output kept alive, conv)
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def conv_hook(m: nn.Module, inp, out) -> None:
        calls[m] = calls.get(m, 0) + 1
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (out, m)

    def bn_pre_hook(m: nn.Module, inp) -> None:
        calls[m] = calls.get(m, 0) + 1
        x = inp[0] if inp else None
        hit = produced.get(id(x)) if isinstance(x, torch.Tensor) else None
        if hit is not None and hit[0] is x:
            pairs.append((hit[1], m))

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, _BN):
            handles.append(m.register_forward_pre_hook(bn_pre_hook))
    _run_hooked(model, example, handles)
    ok = [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1 and c.out_channels == _bn_features(b)]
    return [(names[c], names[b]) for c, b in ok]


def fuse_conv_bn(model: nn.Module, example: torch.Tensor, rtol: float = 1e-3, verify: bool = True) -> tuple[nn.Module, int]:
    """Fold every BatchNorm that directly follows a convolution into it.

    Args:
        model: in eval mode (BatchNorm uses its running statistics).
        example (Tensor[B, 3, S, S]): an input the model accepts; used to trace the data flow
            and to check the folded model gives the same outputs.
        rtol: largest allowed relative difference of any feature map before and after.
    Returns:
        ``(model, n)``: the folded model (a copy; the input model is untouched) and the number
        of folded pairs, or the original model and 0 when folding would change its outputs.
    """
    if model.training:
        raise ValueError("fuse_conv_bn needs a model in eval mode (call model.eval() first)")
    pairs = find_conv_bn_pairs(model, example)
    if not pairs:
        return model, 0
    fused = copy.deepcopy(model)
    modules = dict(fused.named_modules())
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, _bn_eps(bn), bn.weight, bn.bias)
        conv.weight, conv.bias = w, b
        _set_module(fused, bn_name, nn.Identity())
    if verify and not _same_features(model, fused, example, {c for c, _ in pairs}, rtol):
        print("warning: folding BatchNorm changed the model's outputs; running it unfolded", file=sys.stderr)
        return model, 0
    return fused, len(pairs)


def optimize_for_inference(model: nn.Module, example: torch.Tensor, channels_last: bool = True) -> tuple[nn.Module, int]:
    """Eval mode, BatchNorm folded, parameters frozen, and (on request) channels_last memory
    format, which CPU and cuDNN convolutions run faster in. Returns ``(model, folded pairs)``."""
    model = model.eval()
    model, n = fuse_conv_bn(model, example)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, n


def _bn_features(bn: nn.Module) -> int:
    return int(bn.num_features) if hasattr(bn, "num_features") else int(bn.weight.shape[0])


def _bn_eps(bn: nn.Module) -> float:
    return float(getattr(bn, "eps", 1e-5))


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every 4-D tensor any module returned while running ``model(x)``, by module name, in
    call order (a shared head called once per level yields several)."""
    out: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, m in model.named_modules():
        def hook(mod, inp, y, name=name):
            if isinstance(y, torch.Tensor) and y.ndim == 4:
                out.setdefault(name, []).append(y.detach())
        handles.append(m.register_forward_hook(hook))
    _run_hooked(model, x, handles)
    return out


def _run_hooked(model: nn.Module, x: torch.Tensor, handles: list) -> None:
    """Run ``model(x)`` without gradients, then remove the hooks ``handles`` (also on error)."""
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _exact_float32() -> Iterator[None]:
    """float32 convolutions and matrix products in full precision while the check runs. cuDNN
    runs float32 convolutions in TF32 by default (10-bit mantissa): over ~50 layers its rounding
    alone exceeds the check's tolerance, and on a GPU every fold was rejected as wrong."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _same_features(a: nn.Module, b: nn.Module, x: torch.Tensor, skip: set[str], rtol: float) -> bool:
    """Whether every feature map of ``b`` matches ``a``'s, except those of the modules in
    ``skip`` (the folded convolutions, whose outputs change by design). Feature maps, not the
    final detections, are compared: a score that sits on the threshold may flip between two
    numerically equal models, but a wrongly folded pair changes a feature map for sure."""
    with _exact_float32():
        fa, fb = _feature_maps(a, x), _feature_maps(b, x)
    for name, ys in fa.items():
        if name in skip or name not in fb or len(fb[name]) != len(ys):
            continue
        for u, v in zip(ys, fb[name]):
            if u.shape != v.shape:
                return False
            scale = float(u.abs().max()) if u.numel() else 0.0
            if not torch.allclose(u.float(), v.float(), rtol=rtol, atol=rtol * max(scale, 1e-6)):
                return False
    return True
