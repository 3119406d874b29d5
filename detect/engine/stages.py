"""The mosaic stage of ``detect train``'s recipe: on data whose photos each hold one product
kind (groceries: all 2,720 photos), the last third of the run is a fine-tune of the first two
thirds' best weights with 2x2 native-scale mosaics (``--mosaic 0.5``), so the model also learns
inputs holding many kinds, as a store shelf or a slice of one does.

Measured on groceries (bench/RESULTS.md, "Store photos"): mosaics from the first step lose 0.12
on single photos (0.711 against 0.828, 60 minutes); the same 20-minute mosaic fine-tune after a
plain run keeps single photos (0.824) and halves the loss on mosaics and 6x8 sheets. Store-shelf
data (many kinds per photo, the shipped synthetic shelves) already shows the mix: no stage.
As the recipe of ``--time 60`` (40 + 20 minutes), single photos / 3x3 mosaics / 6x8 sheets:
SSD 0.826 / 0.797 / 0.784, Fast R-CNN 0.819 / 0.788 / 0.784 (ninth pass; the stage at the full
rate, chosen on single photos: 0.820 / 0.790 / 0.777 and 0.807 / 0.779 / 0.782; one 60-minute
run: 0.828 / 0.759 / 0.726 and 0.827 / 0.771 / 0.769).

The stages are two ordinary runs, one after the other: ``OUT/stage1`` (the first share of
``--time`` or ``--epochs``), then ``OUT`` itself started from ``OUT/stage1/best.pt`` (as
``--weights`` does, :mod:`detect.engine.finetune`) with ``--mosaic`` and a peak rate of
:data:`LR_SCALE` times ``--lr`` (a fine-tune: at the full rate single photos fell from 0.842
to 0.74 after its warmup). The stage is scored once, at its end, on the val photos and 3x3
sheets of them (``--val-sheets 3``, :mod:`detect.data.sheets`), and its ``best.pt`` is its end:
chosen by the val score epoch by epoch, at 0.3 of the rate it was the first epoch on single
photos alone (3x3 / 6x8 0.783 / 0.750 against 0.800 / 0.784 at the stage's end) and again on
photos and sheets together (0.812 at epoch 1 against 0.799 at the end: 160 photos and 17 sheets
do not tell the epochs apart); scoring the sheets every epoch also cost 4 of its 14 epochs. Both save
``mosaic_stage: off``, so a ``--resume`` of either continues that run alone, and a resumed first
stage is followed by the second (:func:`second_after_resume`). Pure decisions here;
:mod:`detect.engine.train_cli` runs them. ``detect tune`` calls the trainer directly: its trials
have no stage.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detect.config import ExperimentConfig

SHARE = 1 / 3  # of the run: 40 + 20 minutes of a --time 60 (1/2, 30 + 30: SSD gaps -0.062 / -0.065, not -0.029 / -0.042)
MOSAIC = 0.5  # --mosaic of the stage (1.0 measured worse: 0.775 single photos against 0.824)
ONE_KIND = 0.9  # auto: on when at least this share of the train photos with boxes hold one class
MIN_EPOCHS = 3  # without --time, a run of fewer epochs is not split
STAGE1 = "stage1"  # the first stage's folder inside --out
LR_SCALE = 0.3  # the stage's peak rate, of --lr: a fine-tune (at 1.0 single photos fell to 0.74 after its warmup)
SHEETS = 3  # the stage's --val-sheets: its end is scored on the val photos and 3x3 sheets of them


def one_kind_share(records: Sequence[Any]) -> float:
    """The share of ``records`` with boxes whose boxes all have one class (0 when none has boxes)."""
    counted = [len(np.unique(np.asarray(r.labels))) == 1 for r in records if len(getattr(r, "labels", ())) > 0]
    return float(np.mean(counted)) if counted else 0.0


def wants_stage(cfg: ExperimentConfig, records: Optional[Sequence[Any]]) -> tuple[bool, str]:
    """Whether ``cfg``'s run ends with a mosaic stage, and why (for the run log). ``records``:
    the train split's (None: not read, e.g. in-memory test data)."""
    d, t = cfg.data, cfg.train
    mode = d.mosaic_stage
    if mode == "off":
        return False, "--mosaic-stage off"
    if t.resume:
        return False, "a resumed run continues as it was"
    if d.proposal_file:
        return False, "precomputed proposals (a mosaic would cut them apart)"
    if d.augment <= 0:
        return False, "--augment 0"
    if not t.time and t.epochs < MIN_EPOCHS:
        return False, f"fewer than {MIN_EPOCHS} epochs"
    if mode == "on":
        return True, "--mosaic-stage on"
    if d.mosaic > 0:
        return False, f"--mosaic {d.mosaic:g} already mixes kinds in every stage"
    share = one_kind_share(records) if records is not None else 0.0
    if share >= ONE_KIND:
        return True, f"{share:.0%} of the train photos hold one product kind"
    return False, f"{share:.0%} of the train photos hold one product kind (the stage needs {ONE_KIND:.0%})"


def split(cfg: ExperimentConfig) -> tuple[ExperimentConfig, ExperimentConfig]:
    """The two runs of ``cfg``: the first ``1 - SHARE`` of its time (or epochs) into
    ``OUT/stage1``, then the rest into ``OUT`` with ``--mosaic`` (0.5 unless given). The
    second's ``--weights`` (:func:`stage_weights`) and model section are set when it starts."""
    t = cfg.train
    first, second = copy.deepcopy(cfg), copy.deepcopy(cfg)
    for c in (first, second):
        c.data.mosaic_stage = "off"
    first.train.out = str(Path(t.out) / STAGE1)
    first.data.mosaic = first.data.mosaic_centre = 0.0
    # the SSD's box classifier joins in the second stage (auto, unless --no-box-classifier):
    # trained on single photos from the first step it over-fitted them (train loss 0.03) and
    # lost every row (fourteenth pass); added in the stage, five seeds of the stage from one
    # first stage read +0.005 / +0.007 / +0.012 on single photos / 3x3 / 6x8 against four
    # without (fifteenth pass; bench/RESULTS.md, store photos). The first stage is built
    # without it either way and stores auto (None) or --no-box-classifier (False), so that
    # a resumed first stage plans the same second (second_after_resume).
    if cfg.model.name == "ssd":
        wanted = cfg.model.ssd.box_classifier is not False
        first.model.ssd.box_classifier = None if wanted else False
        second.model.ssd.box_classifier = wanted
    if t.time:
        first.train.time = round(t.time * (1 - SHARE), 4)
        second.train.time = round(t.time - first.train.time, 4)
    else:
        first.train.epochs = max(1, round(t.epochs * (1 - SHARE)))
        second.train.epochs = max(1, t.epochs - first.train.epochs)
    second.data.mosaic = cfg.data.mosaic or MOSAIC
    second.data.val_sheets = cfg.data.val_sheets or SHEETS
    second.train.lr = cfg.train.lr * LR_SCALE
    second.train.eval_every = max(second.train.epochs, cfg.train.eval_every)  # scored at its end only: best.pt = its end
    second.train.weights = None  # the first stage's best.pt, known once it has run (:func:`stage_weights`)
    return first, second


def stage_weights(folder: str | Path) -> Path:
    """The first stage's weights: its ``best.pt`` (best val score), else ``last.pt`` (no val split)."""
    best = Path(folder) / "best.pt"
    return best if best.is_file() else Path(folder) / "last.pt"


def second_after_resume(first: ExperimentConfig) -> Optional[ExperimentConfig]:
    """The second stage that follows a resumed first stage (its stored config, ``out`` ending in
    ``stage1``), or None for any other resumed run: :func:`split`'s second of the whole run the
    first stage is ``1 - SHARE`` of."""
    out = Path(first.train.out)
    if out.name != STAGE1 or (out.parent / "last.pt").is_file():
        return None
    whole = copy.deepcopy(first)
    whole.train.resume = False
    whole.train.out = str(out.parent)
    whole.train.time = first.train.time / (1 - SHARE)
    whole.train.epochs = round(first.train.epochs / (1 - SHARE))
    return split(whole)[1]
