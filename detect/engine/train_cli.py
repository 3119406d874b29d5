"""``detect train`` on the command line: its options -> an :class:`ExperimentConfig` (defaults
<- ``--config`` YAML <- options given; with ``--resume``, the run's stored config in place of
the YAML), the run folder (``runs/train``, ``runs/train2``, ...), and the exit code. The
training itself is :func:`detect.engine.train.train`; the command, with the validation of large
photos sliced as ``detect val`` does, is :mod:`detect.infer.train_cli`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

from detect.config import ExperimentConfig, TrainConfig
from detect.engine.checkpoint import load_checkpoint, stored_config
from detect.engine.datasets import DataSplits, load_data
from detect.engine.distributed import env_dist_info
from detect.engine.finetune import detector_config, read_detector
from detect.engine.stages import STAGE1, second_after_resume, split, stage_weights, wants_stage
from detect.engine.train import train
from detect.errors import UsageError
from detect.options import apply_config_options
from detect.utils import next_run_dir


def run_checkpoint(args: argparse.Namespace) -> Path:
    """``RUN/last.pt`` of ``--resume``: the run folder is ``--out``, else the ``--config``
    YAML's ``train.out``, else the default; ``RUN/stage1/last.pt`` when a run stopped in its
    first stage (:mod:`detect.engine.stages`)."""
    out = getattr(args, "out", None)
    if not out:
        out = ExperimentConfig.load_yaml(args.config).train.out if getattr(args, "config", None) else TrainConfig().out
    last = Path(out) / "last.pt"
    if not last.is_file() and (Path(out) / STAGE1 / "last.pt").is_file():
        last = Path(out) / STAGE1 / "last.pt"
    if not last.is_file():
        raise UsageError(f"nothing to resume: {last} not found (pass the run folder with --out)")
    return last


def config_from_args(args: argparse.Namespace, checkpoint: Optional[dict] = None) -> ExperimentConfig:
    """Defaults <- ``--config`` YAML <- the options given on the command line. With ``--resume``
    the run's stored config (from ``checkpoint``, its ``last.pt``; read here when not given)
    takes the place of the YAML and the defaults; options given still override it (e.g.
    ``--epochs`` to extend a finished run). With ``--weights`` (fine-tuning) the model and
    preprocessing sections are the checkpoint's, with the options given applied on top."""
    resume = bool(getattr(args, "resume", False))
    if resume:
        last = run_checkpoint(args)
        cfg = stored_config(checkpoint if checkpoint is not None else load_checkpoint(last), last)
    else:
        cfg = ExperimentConfig.load_yaml(args.config) if getattr(args, "config", None) else ExperimentConfig()
    apply_config_options(cfg, args)
    if not resume and cfg.train.weights:  # fine-tuning: the checkpoint's network, the options given still win
        detector_config(cfg, read_detector(cfg.train.weights), cfg.train.weights)
        apply_config_options(cfg, args)
    cfg.train.resume = resume
    if resume:  # the run folder is where its last.pt is (a first stage's: RUN/stage1)
        cfg.train.out = str(last.parent)
    if not resume and getattr(args, "out", None) is None and cfg.train.out == TrainConfig().out:
        cfg.train.out = str(next_run_dir(cfg.train.out))  # runs/train, runs/train2, ... (never into a finished run)
    return cfg


def run_inputs(cfg: ExperimentConfig, config: Optional[str] = None) -> list[str]:
    """The files a training reads that an output could replace: ``--config``, the proposal
    file, the backbone weights, and the dataset's own (``--data`` and the files defining it)."""
    from detect.data.spec import input_files

    found = [p for p in (config, cfg.data.proposal_file, getattr(cfg.model, "backbone_weights", None)) if p]
    if cfg.data.data:
        found += input_files(cfg.data.data)
    return found


def check_run_folder(cfg: ExperimentConfig, config: Optional[str] = None) -> None:
    """``--out`` is a folder (or new) and none of the files a run writes there is an input:
    ``--data RUN/config.yaml --out RUN`` replaced the dataset YAML with the run's config
    (:func:`detect.utils.check_output_folder`; raises a usage error)."""
    from detect.engine.report import VAL_OUTPUTS
    from detect.utils import check_output_folder

    names = ("config.yaml", "last.pt", "best.pt", "results.csv", "results.png", "train_batch.png", *VAL_OUTPUTS)
    check_output_folder(cfg.train.out, names, run_inputs(cfg, config), what="--out folder")


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect train``: one per setting of detect/config.py with a command-line spelling."""
    from detect.models.specs import setting_choices  # the table of detectors: --model's choices
    from detect.options import add_config_options  # the config table (and yaml): only for the commands that use it

    p.description = "Options override --config, which overrides the defaults shown here."
    p.add_argument("--config", help="YAML config (sections model, data, train, preprocess)")
    add_config_options(p, choices=setting_choices())  # one option per setting declared with a cli spelling in detect/config.py
    p.add_argument("--strict", action="store_true", help="exit 1 when the data had problems (default: warn, exit 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace, collect_fn: Optional[Callable[..., Optional[dict]]] = None) -> int:
    """``detect train``. Exit 0 done (problems in the data are warned about: annotations dropped
    from thousands must not stop ``detect train ... && detect val ...``), 1 done but images could
    not be read, steps were skipped for a non-finite loss, or ``--strict`` and the data had
    problems; a bad option, missing data or an unusable checkpoint raise
    :class:`~detect.errors.UsageError`. ``--resume`` reads ``last.pt`` once, for the config and
    the training state. ``collect_fn``: how the val split's detections are gathered
    (:func:`detect.engine.train.train`; ``detect train`` itself is :mod:`detect.infer.train_cli`,
    which hands in ``detect val``'s sliced collector: engine never imports infer)."""
    ckpt = load_checkpoint(run_checkpoint(args)) if getattr(args, "resume", False) else None
    cfg = config_from_args(args, ckpt)
    # the data, read once: the mosaic stage's decision and every run's (a resumed run reads its own)
    splits = load_data(cfg) if cfg.data.mosaic_stage == "auto" and not cfg.train.resume else None
    runs = stage_runs(cfg, ckpt, splits)
    for c, _ in runs:
        check_run_folder(c, getattr(args, "config", None))
    results = []
    for i, (c, k) in enumerate(runs):
        if i > 0:  # the mosaic stage starts from the first stage's weights, as --weights does
            c.train.weights = str(stage_weights(runs[0][0].train.out))
            detector_config(c, read_detector(c.train.weights), c.train.weights)
        results.append(train(c, progress=not getattr(args, "no_progress", False), checkpoint=k, collect_fn=collect_fn,
                             data_fn=(lambda _: splits) if splits is not None else None))
    problems, strict = max(int(r["data_problems"]) for r in results), bool(getattr(args, "strict", False))  # a count
    if problems:  # dropped annotations of a large dataset are normal: a warning, unless --strict
        print(f"warning: {problems} problem(s) in the data were reported and the annotations concerned left out "
              "(see the warnings above and the problems file beside the cache); "
              + ("exit code 1 (--strict)" if strict else "exit code 0 (--strict: 1)"), file=sys.stderr)
    failed = any(r["nonfinite_loss"] or r["unreadable"] for r in results)
    return 1 if failed or (problems and strict) else 0


def stage_runs(cfg: ExperimentConfig, ckpt: Optional[dict] = None,
               splits: Optional[DataSplits] = None) -> list[tuple[ExperimentConfig, Optional[dict]]]:
    """The runs ``detect train`` makes of ``cfg``, each with the checkpoint it resumes: ``cfg``
    alone, or its two stages when it ends with a mosaic stage (:mod:`detect.engine.stages`;
    ``splits``: the data read, None when ``--mosaic-stage`` is not auto), or a resumed first
    stage followed by its second."""
    if cfg.train.resume:
        then = second_after_resume(cfg)
        return [(cfg, ckpt)] + ([(then, None)] if then is not None else [])
    staged, why = wants_stage(cfg, splits.train_records if splits is not None else None)
    if not staged:
        return [(cfg, None)]
    first, second = split(cfg)
    budget = (lambda c: f"{c.train.time:g} min") if cfg.train.time else (lambda c: f"{c.train.epochs} epochs")
    head = " and the SSD box classifier added (--no-box-classifier: without)" \
        if cfg.model.name == "ssd" and second.model.ssd.box_classifier else ""
    if env_dist_info().is_main:  # under torchrun every rank plans the same runs; one says so
        print(f"mosaic stage ({why}): {first.train.out} for {budget(first)}, then {second.train.out} for "
              f"{budget(second)} from its weights with --mosaic {second.data.mosaic:g}, --lr {second.train.lr:g}, "
              f"--val-sheets {second.data.val_sheets}{head}, scored at its end (--mosaic-stage off: one run)",
              flush=True)
    return [(first, None), (second, None)]
