"""Fine-tuning from a detector (``detect train --weights RUN/best.pt``): add products to a model.

The new run keeps the network of the checkpoint (its model and preprocessing config, see
:func:`detector_config`) and starts from all of its weights (:func:`load_detector_weights`).
Classes are matched by name: a class the checkpoint knows keeps its output rows (logits, and
Fast R-CNN's class-specific box codes) wherever it now sits in the class list; a new class
gets the freshly initialised rows of the newly built model; a class the new data lacks is
dropped. Background (row 0 of every class block) is kept.

Which parameters have a row per class, and how the rows are laid out, is the table
:data:`CLASS_ROWS` (C = K + 1 logits, 0 = background):

- SSD heads ``heads.<i>.1``: per default box, 4 box codes then C logits;
- image-level context ``context.fc``: C logits;
- Fast R-CNN ``predictor.cls_score``: C logits; ``predictor.bbox_pred``: 4 box codes per class;
- the SSD's box classifier ``box_classifier.fc2``: K logits (object classes only, no background).

Any other parameter must have the same shape in both (else the architectures differ: a
:class:`~detect.errors.UsageError`). Checkpoints are read by :func:`load_checkpoint`
(``torch.load(weights_only=True)``), never unpickled unrestricted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from detect.config import ExperimentConfig
from detect.engine.checkpoint import CheckpointError, load_checkpoint, stored_config, weights_kind
from detect.errors import UsageError

# a head a fine-tune may add to a checkpoint that lacks it (detector_config): it starts as built
ADDABLE = ("box_classifier.",)
# parameter name -> (rows before the classes in each block, rows per class, whether background is a class)
CLASS_ROWS: tuple[tuple[str, int, int, bool], ...] = (
    (r"^heads\.\d+\.1\.(weight|bias)$", 4, 1, True),
    (r"^context\.fc\.(weight|bias)$", 0, 1, True),
    (r"^predictor\.cls_score\.(weight|bias)$", 0, 1, True),
    (r"^predictor\.bbox_pred\.(weight|bias)$", 0, 4, True),
    (r"^box_classifier\.fc2\.(weight|bias)$", 0, 1, False),
)


@dataclass
class Start:
    """What :func:`load_detector_weights` did: classes kept (old name order), added, dropped;
    heads the checkpoint lacked that start as built (``ADDABLE``, e.g. ``box_classifier``)."""

    path: str
    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    new_heads: list[str] = field(default_factory=list)

    def text(self) -> str:
        parts = [f"{len(self.kept)} classes kept"]
        if self.added:
            parts.append(f"{len(self.added)} added ({', '.join(self.added[:8])}{' ...' if len(self.added) > 8 else ''})")
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped ({', '.join(self.dropped[:8])}{' ...' if len(self.dropped) > 8 else ''})")
        if self.new_heads:
            parts.append(f"{', '.join(self.new_heads)} added fresh (not in the checkpoint)")
        return f"starting from {self.path}: " + ", ".join(parts)


def read_detector(path: str | Path) -> dict:
    """The checkpoint at ``path`` (restricted loading), or a :class:`UsageError` saying why not."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--weights {p}: file not found")
    kind = weights_kind(p)
    if kind != "checkpoint":
        raise UsageError(f"--weights {p} is {'an ONNX file' if kind == 'onnx' else kind}; fine-tuning starts from a "
                         "retail-detect checkpoint (.pt: RUN/best.pt, RUN/last.pt or the shipped weights)")
    try:
        return load_checkpoint(p)
    except CheckpointError as e:
        raise UsageError(str(e)) from None


def detector_config(cfg: ExperimentConfig, ckpt: dict, path: str | Path) -> ExperimentConfig:
    """``cfg`` with the checkpoint's model and preprocessing sections (the network to rebuild);
    the backbone's ImageNet weights are not loaded (every weight comes from the checkpoint).
    One head may be added: the SSD's box classifier, when ``cfg`` asks for it and the checkpoint
    has none (:func:`load_detector_weights` leaves it freshly initialised)."""
    stored = stored_config(ckpt, path)
    add_box_classifier = cfg.model.ssd.box_classifier and not stored.model.ssd.box_classifier
    cfg.model, cfg.preprocess = stored.model, stored.preprocess
    if add_box_classifier:
        cfg.model.ssd.box_classifier = True
    cfg.model.pretrained = "none"
    cfg.model.backbone_weights = None
    return cfg


def load_detector_weights(model: nn.Module, ckpt: dict, classes: Sequence[str], path: str | Path) -> Start:
    """Copy the checkpoint's weights into ``model`` (built for ``classes``), class rows matched
    by name (see the module docstring). Returns what was kept, added and dropped."""
    old = [str(c) for c in ckpt.get("classes", [])]
    new = list(classes)
    source = {name: i for i, name in enumerate(old)}
    # new logit index -> old logit index (0 = background in both), None: a new class
    rows = [0] + [source[c] + 1 if c in source else None for c in new]
    start = Start(str(path), kept=[c for c in new if c in source], added=[c for c in new if c not in source],
                  dropped=[c for c in old if c not in set(new)])
    if not start.kept:
        raise UsageError(f"--weights {path}: none of its classes ({', '.join(old[:10])}) is in the data "
                         f"({', '.join(new[:10])}); fine-tuning keeps classes by name")
    weights = ckpt["model"]
    target = model.state_dict()
    absent = [k for k in target if k not in weights]
    missing = [k for k in absent if not k.startswith(ADDABLE)]
    extra = [k for k in weights if k not in target]
    if missing or extra:
        what = f"lacks {len(missing)} of this model's weights, e.g. {missing[0]}" if missing else \
            f"has {len(extra)} weights this model lacks, e.g. {extra[0]}"
        raise UsageError(f"--weights {path}: another architecture (it {what}); fine-tune with the checkpoint's own "
                         "model settings")
    start.new_heads = sorted({p.rstrip(".") for p in ADDABLE for k in absent if k.startswith(p)})
    out = {}
    for name, fresh in target.items():
        if name not in weights:  # an added head (ADDABLE): as built
            out[name] = fresh
            continue
        w = weights[name].to(fresh.dtype)
        layout = _layout(name)
        if layout is None or old == new:
            if w.shape != fresh.shape:
                raise UsageError(f"--weights {path}: {name} is {tuple(w.shape)} there and {tuple(fresh.shape)} here: "
                                 "another architecture; fine-tune with the checkpoint's own model settings")
            out[name] = w
            continue
        if w.shape[1:] != fresh.shape[1:]:
            raise UsageError(f"--weights {path}: {name} is {tuple(w.shape)} there and {tuple(fresh.shape)} here: "
                             "another architecture; fine-tune with the checkpoint's own model settings")
        prefix, per, background = layout
        if background:
            out[name] = remap_rows(w, fresh, prefix, per, rows, len(old) + 1, name)
        else:  # object classes only: the same map without the background row
            out[name] = remap_rows(w, fresh, prefix, per, [None if i is None else i - 1 for i in rows[1:]], len(old), name)
    model.load_state_dict(out)
    return start


def remap_rows(old: torch.Tensor, fresh: torch.Tensor, prefix: int, per: int, rows: list[Optional[int]],
               c_old: int, name: str = "") -> torch.Tensor:
    """``fresh`` with the rows of ``old`` copied in class by class: blocks of ``prefix``
    class-free rows then ``per`` rows per class (``c_old`` classes in ``old``, ``len(rows)`` in
    ``fresh``, background included); new class ``j`` takes old class ``rows[j]``'s rows, or keeps
    ``fresh``'s when that is None. ``old`` (Tensor[B*(prefix+C_old*per), ...]),
    ``fresh`` (Tensor[B*(prefix+C_new*per), ...]) -> Tensor like ``fresh``."""
    step_new, step_old = prefix + len(rows) * per, prefix + c_old * per
    blocks = fresh.shape[0] // step_new
    if blocks * step_new != fresh.shape[0] or blocks * step_old != old.shape[0]:
        raise UsageError(f"{name}: {old.shape[0]} and {fresh.shape[0]} rows do not split into the same number of "
                         f"blocks of {prefix} + classes x {per}: another architecture")
    o = old.reshape(blocks, step_old, *old.shape[1:])  # (B*step_old, ...) -> (B, step_old, ...)
    out = fresh.clone().reshape(blocks, step_new, *fresh.shape[1:])  # (B*step_new, ...) -> (B, step_new, ...)
    out[:, :prefix] = o[:, :prefix]
    for j, i in enumerate(rows):
        if i is not None:
            out[:, prefix + j * per: prefix + (j + 1) * per] = o[:, prefix + i * per: prefix + (i + 1) * per]
    return out.reshape(fresh.shape)


def _layout(name: str) -> Optional[tuple[int, int, bool]]:
    for pattern, prefix, per, background in CLASS_ROWS:
        if re.match(pattern, name):
            return prefix, per, background
    return None
