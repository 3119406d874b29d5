"""Resolve once: a config and the data it trains on -> the final, read-only config of a run.

Every setting a run fills in from its data or its model is decided here, in this order, before
the model is built; the trainer, the datasets and the builders only read the result:

1. ``model.num_classes``: the data's classes.
2. ``preprocess.imgsz`` 0: from the training images (:func:`~detect.engine.datasets.auto_imgsz`).
3. ``preprocess.object_size`` 0: the median product side training shows the model
   (:func:`~detect.engine.datasets.learned_object_size`; sliced inference reads it).
4. The detector's default boxes fitted to the training boxes, through its row's ``fit`` hook
   (:data:`detect.models.specs.MODEL_SPECS`; the SSD's ``ssd.fit_anchors``).
5. ``preprocess.mean``/``std``: what the backbone's ImageNet weights expect
   (:func:`~detect.models.backbones.input_preprocess`).

``--imgsz`` thus goes command line -> config -> :func:`resolve` -> the transforms
(:func:`~detect.engine.datasets.make_datasets`) and the model (anchors included), each reading
the one resolved value. The result is saved as the run's ``config.yaml`` and in its checkpoints,
so a resumed run or a loaded checkpoint finds everything decided (nothing is fitted twice).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from detect.config import ExperimentConfig
from detect.errors import UsageError


def resolve(cfg: ExperimentConfig, classes: Sequence[str], records: Optional[Sequence[Any]],
            log: Callable[[str], None] = print) -> ExperimentConfig:
    """The read-only config of a run of ``cfg`` on data with ``classes`` whose training split
    holds ``records`` (:class:`~detect.structures.ImageRecord`-like: ``width``, ``height``,
    ``boxes``; None when the data has no records, e.g. in-memory test data: then imgsz and
    object_size stay as given). ``cfg`` itself is not changed."""
    from detect.engine.datasets import AUTO_IMGSZ, auto_imgsz, crop_object_px, learned_object_size
    from detect.models.backbones import input_preprocess
    from detect.models.specs import model_spec

    c = ExperimentConfig.from_dict(cfg.to_dict())  # a settable copy
    spec = model_spec(c.model.name)
    c.model.num_classes = len(classes)
    p = c.preprocess
    if records is not None and not p.imgsz:  # 0: chosen from the data, and saved with the run
        p.imgsz = auto_imgsz(records)
        log(f"imgsz {p.imgsz} (chosen from the training images: the median longer side, "
            f"a multiple of 32 in [{AUTO_IMGSZ[0]}, {AUTO_IMGSZ[1]}]; --imgsz sets it)")
    if records is not None and not p.object_size:  # 0: measured, and saved with the run for sliced inference
        p.object_size = learned_object_size(records, p.imgsz, crop_object_px(c))
        log(f"object size {p.object_size:.0f} px (the median product side the model sees in training; "
            "sliced inference cuts large photos to show products this big)")
    if spec.fit is not None:
        c.model = spec.fit(c.model, p.imgsz, records or [], log)
    elif c.model.ssd.fit_anchors:
        raise UsageError(f"fit_anchors is an SSD option; model {c.model.name!r} has no default boxes")
    c.preprocess = input_preprocess(c.model, p)  # the mean/std the model will use, saved with the run
    return c.read_only()


def resolved_data(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> tuple[ExperimentConfig, Any]:
    """``(read-only config, TrainData)`` of ``cfg``'s data as a run starts: the splits read
    (:func:`~detect.engine.datasets.load_data`), the config resolved, the datasets built for it
    (benchmarks and notebooks that need a run's data without its training)."""
    from detect.engine.datasets import load_data

    splits = load_data(cfg, log)
    cfg = resolve(cfg, splits.classes, splits.train_records, log)
    return cfg, splits.datasets(cfg, log)
