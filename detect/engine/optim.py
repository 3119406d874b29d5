"""Optimizer and per-iteration learning-rate schedule.

- Parameter groups: weight decay on conv/linear weights only; none on biases and on the
  affine parameters of normalisation layers (BN, GN, LN), as in timm and torchvision.
- SGD with momentum or AdamW (betas = (momentum, beta2)); fused kernels where PyTorch has
  them, so a skipped step needs no host sync (see :func:`step_unless`).
- Schedule: linear warmup, then cosine or step decay, as one ``LambdaLR`` stepped every
  iteration; the factor is the pure function :func:`lr_factor`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from detect.config import TrainConfig

WARMUP_START = 0.001  # warmup starts at lr * 0.001 (torchvision detection references)
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None, backbone_lr: float = 1.0) -> list[dict]:
    """Two groups of the trainable parameters: ``decay`` (conv/linear weights, ``ndim > 1``)
    and ``no_decay`` (biases, 1-d tensors, and all parameters of normalisation layers).

    With ``backbone_lr != 1`` and a model that has a ``backbone`` submodule, each group splits in
    two, the backbone's (``*_backbone``, learning rate ``lr * backbone_lr``: pretrained weights
    move slower than the new layers) and the rest (``lr``)."""
    backbone = getattr(model, "backbone", None) if backbone_lr != 1.0 else None
    in_backbone = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "decay_backbone": [], "no_decay_backbone": []}
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            key = "no_decay" if isinstance(module, NORM_TYPES) or name == "bias" or p.ndim <= 1 else "decay"
            groups[key + ("_backbone" if id(p) in in_backbone else "")].append(p)
    if not any(groups.values()):
        raise ValueError("the model has no trainable parameters (everything frozen?)")
    out = []
    for key, params in groups.items():
        if params or key in ("decay", "no_decay"):
            g = {"params": params, "weight_decay": weight_decay if key.startswith("decay") else 0.0, "name": key}
            if lr is not None:
                g["lr"] = lr * (backbone_lr if key.endswith("_backbone") else 1.0)
            out.append(g)
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, no Nesterov) or AdamW over :func:`param_groups`, fused where possible."""
    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.backbone_lr)
    name = cfg.optimizer.lower()
    if name == "sgd":
        make: Callable[..., torch.optim.Optimizer] = lambda **kw: torch.optim.SGD(  # noqa: E731
            groups, lr=cfg.lr, momentum=cfg.momentum, **kw
        )
    elif name == "adamw":
        make = lambda **kw: torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, cfg.beta2), **kw)  # noqa: E731
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'sgd' or 'adamw'")
    try:
        opt = make(fused=True)
    except (RuntimeError, TypeError):  # a device or dtype without fused kernels
        opt = make()
    _init_momentum_buffers(opt)
    return opt


def _init_momentum_buffers(opt: torch.optim.Optimizer) -> None:
    """Give fused SGD zero momentum buffers up front. Its first step otherwise allocates
    uninitialised buffers and fills them in the kernel, which a skipped first step (found_inf)
    leaves as garbage. With zeros, ``buf = momentum * 0 + grad`` equals the first-step rule."""
    if not isinstance(opt, torch.optim.SGD):
        return
    for group in opt.param_groups:
        if group["momentum"] == 0:
            continue
        for p in group["params"]:
            opt.state[p].setdefault("momentum_buffer", torch.zeros_like(p, memory_format=torch.preserve_format))


def is_fused(opt: torch.optim.Optimizer) -> bool:
    return bool(opt.defaults.get("fused")) and getattr(opt, "_step_supports_amp_scaling", False)


def step_unless(opt: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``opt.step()`` unless ``bad`` (a 0-d float tensor on the parameters' device, 1.0 =
    skip). Fused optimizers skip on the device through their ``found_inf`` input (as
    ``GradScaler`` drives them), so no host sync; others read ``bad`` on the host."""
    if is_fused(opt):
        opt.grad_scale = None  # type: ignore[attr-defined]
        opt.found_inf = bad  # type: ignore[attr-defined]
        try:
            opt.step()
        finally:
            opt.found_inf = None  # type: ignore[attr-defined]
    elif not bool(bad.item()):
        opt.step()


def lr_factor(
    it: int,
    total: int,
    warmup: int,
    scheduler: str = "cosine",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    final: float = 0.01,
) -> float:
    """Learning-rate multiplier at iteration ``it`` (0-based) of ``total``.

    Linear warmup from ``WARMUP_START`` to 1 over the first ``warmup`` iterations, multiplied by
    the decay: ``cosine`` from 1 to ``final`` over the iterations after warmup, or ``step``:
    ``gamma ** (number of milestones <= it)`` (milestones in iterations).
    """
    if scheduler == "cosine":
        span = max(1, total - warmup)
        t = min(1.0, max(0.0, (it - warmup) / span))
        decay = final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif scheduler == "step":
        decay = gamma ** sum(1 for m in milestones if it >= m)
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}; use 'cosine' or 'step'")
    if it < warmup:
        decay *= WARMUP_START + (1.0 - WARMUP_START) * it / warmup
    return decay


class LRSchedule:
    """The per-iteration factor of :func:`lr_factor` for a run of ``epochs`` epochs, as a callable
    object so that ``LambdaLR.state_dict()`` saves its plan (a resumed run continues the same
    curve) and :meth:`replan` can stretch or shrink the run while it trains (``--time``: the
    number of epochs is estimated from the measured speed). Warmup is fixed in iterations, so
    a re-plan after the first steps leaves the steps already taken on the same curve.
    """

    def __init__(self, cfg: TrainConfig, iters_per_epoch: int, final: float = 0.01, epochs: int | None = None):
        self.scheduler, self.gamma, self.final = cfg.scheduler, cfg.gamma, final
        self.milestone_spec = [float(m) for m in cfg.milestones]
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.warmup_epochs = float(cfg.warmup_epochs)
        self.replan(cfg.epochs if epochs is None else epochs)
        lr_factor(0, self.total, self.warmup, self.scheduler)  # validate the scheduler name now

    def replan(self, epochs: int) -> None:
        """Make the run ``epochs`` epochs long (milestones given as fractions move with it)."""
        self.epochs = max(1, int(epochs))
        self.total = self.epochs * self.iters_per_epoch
        self.warmup = min(self.total - 1, max(0, round(self.warmup_epochs * self.iters_per_epoch)))
        self.milestones = [round((m * self.epochs if m <= 1 else m) * self.iters_per_epoch) for m in self.milestone_spec]

    def __call__(self, it: int) -> float:
        return lr_factor(it, self.total, self.warmup, self.scheduler, self.milestones, self.gamma, self.final)


def build_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int, final: float = 0.01, epochs: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration ``LambdaLR`` over ``epochs`` (default ``cfg.epochs``) x ``iters_per_epoch``
    iterations; its ``lr_lambdas[0]`` is the :class:`LRSchedule` (``replan`` changes the length).

    ``cfg.milestones`` are fractions of the run when <= 1 (0.67 = two thirds), else epochs.
    """
    return torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(cfg, iters_per_epoch, final, epochs))
