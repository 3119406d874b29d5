"""The table of detectors: everything the rest of the code asks about a model, by its config name.

A new detector is one module (its ``nn.Module`` honouring the contract in docs/ARCHITECTURE.md
and a ``build(cfg, preprocess, load_weights)``) plus one row in :data:`MODEL_SPECS`. Nothing
else branches on the model's name: :func:`detect.models.build.build_model` builds through the
row, :mod:`detect.engine.resolve` fits the default boxes through its ``fit`` hook, the image
context's ``auto`` values come from it, and export and the ONNX Runtime backend run only rows
with ``decoded`` set. ``detect train --model`` takes the table's names (:func:`setting_choices`).

This module stays light (no torch import at load): ``detect``'s parser reads the names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from detect.config import ModelConfig, Preprocess
from detect.errors import UsageError

# (model settings, preprocessing, load the backbone's ImageNet weights) -> nn.Module in train mode
Builder = Callable[[ModelConfig, Preprocess, bool], Any]
# (model settings, imgsz, training records, log) -> the model settings with fitted default boxes
Fitter = Callable[[ModelConfig, int, Sequence[Any], Callable[[str], None]], ModelConfig]


@dataclass(frozen=True)
class ModelSpec:
    """One detector.

    Attributes:
        name: ``model.name`` in a config.
        build: the builder; it gets the config :meth:`concrete` makes and uses ``preprocess`` as
            given (the config was resolved: :func:`detect.engine.resolve.resolve`).
        fit: fits the detector's default boxes (anchors, scales) to the training boxes before it is
            built, into its settings (saved with the run); None: nothing to fit.
        decoded: how eval outputs come about. True: ``model.decoded(images, anchors=None) ->
            (boxes Tensor[B, N, 4], scores Tensor[B, N, K])`` then ``model.postprocess(boxes,
            scores) -> list[dict]``; that head is what ``detect export`` writes and ONNX Runtime
            runs. False: ``model(images)`` gives the detections itself (PyTorch only, no export).
        context, context_loss: the image-level context mode and loss weight ``auto`` stands for
            (:mod:`detect.models.context`; what won on groceries, bench/RESULTS.md).
        takes_proposals: whether a model of these settings trains and evaluates on precomputed
            proposals (``data.proposal_file``; the datasets then carry them).
    """

    name: str
    build: Builder
    fit: Optional[Fitter] = None
    decoded: bool = False
    context: str = "none"
    context_loss: float = 0.0
    takes_proposals: Callable[[ModelConfig], bool] = lambda cfg: False

    def concrete(self, cfg: ModelConfig) -> ModelConfig:
        """``cfg`` as the builder gets it: ``context: auto`` and ``context_loss: None`` replaced by
        this detector's values (the config itself keeps ``auto``: checkpoints rebuild through the row)."""
        context = self.context if cfg.context == "auto" else cfg.context
        loss = self.context_loss if cfg.context_loss is None else float(cfg.context_loss)
        return dataclasses.replace(cfg, context=context, context_loss=loss)


def _build_ssd(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> Any:
    from detect.models.ssd import build_ssd

    return build_ssd(cfg, preprocess, load_weights)


def _fit_ssd(cfg: ModelConfig, imgsz: int, records: Sequence[Any], log: Callable[[str], None]) -> ModelConfig:
    from detect.models.ssd import fit_anchor_config

    return fit_anchor_config(cfg, imgsz, records, log)


def _build_fast_rcnn(cfg: ModelConfig, preprocess: Preprocess, load_weights: bool = True) -> Any:
    from detect.models.fast_rcnn import build_fast_rcnn

    return build_fast_rcnn(cfg, preprocess, load_weights)


# Checkpoints saved with context ``auto`` rebuild through ``context``: when a row's value changes,
# detect.engine.checkpoint.stored_config must resolve the older files' ``auto`` (Fast R-CNN's was
# ``prior`` until 2026-12-04: those have ``context.scale``).
MODEL_SPECS: dict[str, ModelSpec] = {
    "ssd": ModelSpec("ssd", _build_ssd, fit=_fit_ssd, decoded=True, context="add", context_loss=1.0),
    "fast_rcnn": ModelSpec("fast_rcnn", _build_fast_rcnn, context="add", context_loss=0.0,
                           takes_proposals=lambda cfg: cfg.fast_rcnn.proposals != "rpn"),
}


class UnknownModelError(UsageError):
    """``model.name`` names no row of :data:`MODEL_SPECS`."""


def model_spec(name: str) -> ModelSpec:
    """The row of detector ``name``; an :class:`UnknownModelError` naming the known ones."""
    spec = MODEL_SPECS.get(name)
    if spec is None:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {list(MODEL_SPECS)}")
    return spec


def spec_of_model(model: Any) -> Optional[ModelSpec]:
    """The row of a built detector: its class names it (``spec_name``, e.g. ``SSD.spec_name =
    "ssd"``); None for a module that names none."""
    return MODEL_SPECS.get(getattr(type(model), "spec_name", None))


def setting_choices() -> dict[str, tuple[str, ...]]:
    """Choices of config settings that the table decides (``model.name``), for the option parser."""
    return {"model.name": tuple(MODEL_SPECS)}
