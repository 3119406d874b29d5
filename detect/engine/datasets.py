"""What the engine needs from the data layer: the train and val splits of a config
(:func:`load_data`, read once, before :func:`detect.engine.resolve.resolve` measures them), the
val split's sheets (:func:`with_val_sheets`, ``--val-sheets``), their datasets for the resolved
config (:func:`make_datasets`), and the dataset to evaluate a model on (:func:`eval_dataset`).

A detector that takes precomputed proposals (its :data:`~detect.models.specs.MODEL_SPECS` row's
``takes_proposals``: a Fast R-CNN without RPN) gets them here,
explicitly: the proposal file named by the data config (``data.proposal_file``) is read once
and handed to :class:`~detect.data.proposal_dataset.ProposalDataset`; the data layer never
reads the model config.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from detect.config import ExperimentConfig
from detect.engine import distributed as D
from detect.errors import UsageError

SHEETS = "val_sheets"  # the folder of --val-sheets' sheets inside the run folder


def _warn_rank0(msg: str) -> None:
    if D.env_dist_info().is_main:
        print(msg, file=sys.stderr, flush=True)


@dataclass
class TrainData:
    """What the trainer needs from the data layer: the datasets of a resolved config."""

    classes: list[str]
    train: Any  # map-style dataset: item = (Tensor[3, S, S], target dict)
    val: Optional[Any]
    collate: Callable
    problems: int = 0  # defects found while reading the annotations

    @property
    def train_records(self) -> Optional[Sequence[Any]]:
        """The training split's records, when the dataset has them (in-memory test data has not)."""
        return getattr(self.train, "records", None)

    def datasets(self, cfg: ExperimentConfig, log: Callable[[str], None] = print) -> "TrainData":
        """Already built: itself (a ``data_fn`` may return ready datasets)."""
        return self


@dataclass
class DataSplits:
    """A run's splits as read (:func:`load_data`), before any transform: what
    :func:`detect.engine.resolve.resolve` measures, then :meth:`datasets` builds on."""

    classes: list[str]
    train_records: list[Any]
    val_records: Optional[list[Any]]
    problems: int = 0

    def datasets(self, cfg: ExperimentConfig, log: Callable[[str], None] = _warn_rank0) -> TrainData:
        """The train and val datasets for resolved ``cfg`` (its imgsz, resize, augmentation)."""
        return make_datasets(cfg, self, log)


def load_data(cfg: ExperimentConfig, log: Callable[[str], None] = _warn_rank0) -> DataSplits:
    """The train and val splits of ``cfg.data.data`` (dataset YAML, VOC folder or cache), read
    and checked; ``cfg`` is only read."""
    from detect.data.spec import is_single_split, resolve_data

    d = cfg.data
    if not d.data:
        raise UsageError("no training data: pass --data (dataset YAML, VOC folder or cache .pkl)")
    try:
        tr = resolve_data(d.data, d.train_split)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UsageError(f"{d.data}: cannot read split {d.train_split!r}: {e}") from None
    if not tr.records:
        raise UsageError(f"{d.data}: split {d.train_split!r} has no images")
    problems = len(getattr(tr, "problems", []) or [])
    if problems:
        log(f"warning: {problems} problem(s) in the {d.train_split} annotations; first: {tr.problems[0]}")
    val = None
    if d.val_split and is_single_split(d.data):
        log(f"warning: {d.data} is one split (a cache or a single annotation file): no validation and no best.pt "
            "(use a dataset folder or YAML to name a val split)")
    elif d.val_split:
        try:
            va = resolve_data(d.data, d.val_split)
        except (FileNotFoundError, ValueError, KeyError) as e:
            log(f"warning: no validation ({e}); best.pt will not be written")
            va = None
        if va is not None and list(va.classes) != list(tr.classes):
            raise UsageError(f"{d.data}: split {d.val_split!r} has classes {list(va.classes)}, "
                             f"split {d.train_split!r} has {list(tr.classes)}; they must be the same")
        if va is not None and va.records:
            val = list(va.records)
    return DataSplits(list(tr.classes), list(tr.records), val, problems)


def make_datasets(cfg: ExperimentConfig, splits: DataSplits, log: Callable[[str], None] = _warn_rank0) -> TrainData:
    """The train and val datasets of ``splits`` for resolved ``cfg`` (imgsz set)."""
    from detect.data.dataset import collate
    from detect.data.transforms import eval_transform, train_transform

    d, imgsz, resize = cfg.data, cfg.preprocess.imgsz, cfg.preprocess.resize
    tf = (train_transform(imgsz, d.augment, d.min_visibility, resize, crop_object_px(cfg)) if d.augment > 0
          else eval_transform(imgsz, resize))
    proposals = proposals_for(cfg)  # read once, for both splits
    val = None
    if splits.val_records:
        val = _dataset(splits.val_records, eval_transform(imgsz, resize), proposals, d.max_proposals, skip_unreadable=True)
    train = _dataset(splits.train_records, tf, proposals, d.max_proposals, skip_unreadable=True)
    if d.mosaic > 0 and d.augment > 0:
        if proposals is not None:
            log("warning: --mosaic is not used with precomputed proposals (a mosaic would cut them apart)")
        else:
            from detect.data.mosaic import MosaicDataset

            train = MosaicDataset(train, d.mosaic, d.min_visibility, d.mosaic_centre)
    elif d.mosaic_centre > 0:
        log("warning: --mosaic-centre has no mosaics to centre (it needs --mosaic and --augment above 0, or the mosaic stage)")
    return TrainData(splits.classes, train, val, collate, splits.problems)


def crop_object_px(cfg: ExperimentConfig) -> float:
    """``data.crop_object`` in input pixels (letterboxed inputs only; 0: no native-scale crops)."""
    return cfg.data.crop_object * cfg.preprocess.imgsz if cfg.preprocess.resize == "letterbox" else 0.0


AUTO_IMGSZ = (224, 640)  # the range imgsz 0 chooses in


def auto_imgsz(records: Sequence[Any], bounds: tuple[int, int] = AUTO_IMGSZ) -> int:
    """The input size for images like ``records``' (``width``/``height`` of each): their median
    longer side rounded up to a multiple of 32, within ``bounds``. Small photos are not blown up
    beyond what ImageNet backbones were trained at (224) and big ones not shrunk below what
    small products need, nor past 640, where a CPU step costs ~8x one at 224 (bench/RESULTS.md)."""
    sides = sorted(max(int(r.width or 0), int(r.height or 0)) for r in records if (r.width or 0) > 0)
    if not sides:
        return bounds[1] if bounds[1] < 320 else 320
    median = sides[len(sides) // 2]
    return int(min(max(-(-median // 32) * 32, bounds[0]), bounds[1]))


def learned_object_size(records: Sequence[Any], imgsz: int, crop_object: float) -> float:
    """The median product side, in input pixels, over ``records`` as training shows them: a
    photo's median box side scaled by ``imgsz / longer side``, or ``crop_object`` for photos
    whose products come out smaller than ``crop_object / 1.5`` and are therefore cropped at
    native scale (:class:`detect.data.transforms.ScaleCrop`). 0 when no record has boxes."""
    from detect.data.transforms import median_side

    sizes = []
    for r in records:
        m, L = median_side(r.boxes), max(int(r.width or 0), int(r.height or 0))
        if m <= 0 or L <= 0:
            continue
        s = m * imgsz / L
        sizes.append(crop_object if crop_object and s < crop_object / 1.5 else s)
    return round(float(sorted(sizes)[len(sizes) // 2]), 1) if sizes else 0.0


def with_val_sheets(splits: Any, cfg: ExperimentConfig, log: Callable[[str], None] = _warn_rank0) -> Any:
    """``splits`` with ``cfg.data.val_sheets`` x ``val_sheets`` sheets of its val photos added to
    its val split (:func:`detect.data.sheets.write_sheets`, into ``RUN/val_sheets/``), so the
    run's val score, and the ``best.pt`` it chooses, cover both; ``splits`` itself when off, when
    there is no val split or when a ``data_fn`` handed in ready datasets."""
    from detect.data.sheets import write_sheets

    n = cfg.data.val_sheets
    if not n or not isinstance(splits, DataSplits) or not splits.val_records:
        return splits
    folder, photos = Path(cfg.train.out) / SHEETS, list(splits.val_records)
    sheets = write_sheets(photos, n, folder, log)
    log(f"val: {len(photos)} photos and {len(sheets)} {n}x{n} sheets of them ({folder})" if sheets
        else f"val: {len(photos)} photos, too few for a {n}x{n} sheet")
    return DataSplits(splits.classes, splits.train_records, photos + sheets, splits.problems)


def eval_dataset(records: Sequence[Any], cfg: ExperimentConfig) -> Any:
    """The dataset to evaluate ``cfg``'s model on ``records`` (eval transform; with the
    precomputed proposals of a Fast R-CNN that takes them)."""
    from detect.data.transforms import eval_transform

    return _dataset(records, eval_transform(cfg.preprocess.imgsz, cfg.preprocess.resize), proposals_for(cfg),
                    cfg.data.max_proposals)


def proposals_for(cfg: ExperimentConfig) -> Optional[Any]:
    """The :class:`~detect.data.proposal_files.ProposalSet` of ``cfg.data.proposal_file`` when the
    model takes precomputed proposals, else None. Raises UsageError when the file is missing
    or unusable."""
    from detect.models.specs import model_spec

    if not model_spec(cfg.model.name).takes_proposals(cfg.model):
        return None
    from detect.data.proposal_files import load_proposals

    if not cfg.data.proposal_file:
        raise UsageError(
            f"model.fast_rcnn.proposals={cfg.model.fast_rcnn.proposals!r} needs a proposal file: run "
            "`detect proposals CACHE -o FILE.pkl` (or bring your own, see detect/data/proposal_files.py) and pass "
            "--proposal-file FILE.pkl (data.proposal_file in a config)"
        )
    try:
        return load_proposals(cfg.data.proposal_file)
    except (FileNotFoundError, ValueError) as e:  # ProposalFileError included
        raise UsageError(str(e)) from None


def _dataset(records: Sequence[Any], transform: Any, proposals: Optional[Any], max_proposals: int,
             skip_unreadable: bool = False) -> Any:
    """A dataset over ``records``; in training (``skip_unreadable``) an image gone since the cache
    was built is skipped and counted (:class:`detect.structures.Unreadable`), not fatal. Its
    images are uint8 (a quarter of the bytes between processes and to the device); the training
    loop and the evaluation make them floats on the device."""
    if proposals is None:
        from detect.data.dataset import DetectionDataset

        return DetectionDataset(records, transform, skip_unreadable=skip_unreadable, uint8=True)
    from detect.data.proposal_dataset import ProposalDataset

    return ProposalDataset(records, transform, proposals, max_proposals, skip_unreadable=skip_unreadable, uint8=True)
