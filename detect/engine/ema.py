"""Exponential moving average of a model's weights (timm ``ModelEmaV2`` / ultralytics
``ModelEMA``).

``ema = d * ema + (1 - d) * model`` after every optimizer step, over the whole state dict:
parameters and floating-point buffers (BN running statistics) are averaged, integer buffers
(``num_batches_tracked``) copied. The decay ramps up as ``d = decay * (1 - exp(-updates / tau))``
so the average is not dominated by the random initial weights early in training.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """Keeps ``self.module``, an eval-mode copy of the model holding the averaged weights.

    Args:
        model: the bare model (not DDP-wrapped) to track.
        decay: the asymptotic decay (0.9998 = averaging over ~5000 steps).
        tau: ramp constant in updates; the decay reaches 63% of ``decay`` after ``tau`` updates.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0, updates: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates
        self._cache: tuple[int, Any] | None = None  # (id(model), tensor lists) for update()

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    def _tensor_pairs(
        self, model: nn.Module
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """(ema floats, model floats, (ema, model) integer pairs) in state-dict order."""
        ema_sd = self.module.state_dict(keep_vars=True)
        src_sd = model.state_dict(keep_vars=True)
        if ema_sd.keys() != src_sd.keys():
            raise RuntimeError("EMA and model state dicts differ; build ModelEMA from the bare model (not DDP)")
        ema_f, src_f, ints = [], [], []
        for k, e in ema_sd.items():
            s = src_sd[k]
            if e.dtype.is_floating_point:
                ema_f.append(e.data)
                src_f.append(s.data)
            else:
                ints.append((e.data, s.data))
        return ema_f, src_f, ints

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model`` (the bare model; unwrap DDP first)."""
        self.updates += 1
        d = self.current_decay()
        if self._cache is None or self._cache[0] != id(model):
            self._cache = (id(model), self._tensor_pairs(model))
        ema_f, src_f, ints = self._cache[1]
        if ema_f:
            # ema += (1 - d) * (model - ema): one fused kernel per device/dtype group
            torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
        for e, s in ints:
            e.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
