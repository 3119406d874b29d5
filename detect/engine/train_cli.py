"""``detect train`` on the command line: its options -> an :class:`ExperimentConfig` (defaults
<- ``--config`` YAML <- options given; with ``--resume``, the run's stored config in place of
the YAML), the run folder (``runs/train``, ``runs/train2``, ...), and the exit code. The
training itself is :func:`detect.engine.train.train`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from detect.config import ExperimentConfig, TrainConfig
from detect.engine.checkpoint import load_checkpoint, stored_config
from detect.engine.finetune import detector_config, read_detector
from detect.engine.train import train
from detect.errors import UsageError
from detect.options import apply_config_options


def run_checkpoint(args: argparse.Namespace) -> Path:
    """``RUN/last.pt`` of ``--resume``: the run folder is ``--out``, else the ``--config``
    YAML's ``train.out``, else the default."""
    out = getattr(args, "out", None)
    if not out:
        out = ExperimentConfig.load_yaml(args.config).train.out if getattr(args, "config", None) else TrainConfig().out
    last = Path(out) / "last.pt"
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
    if not resume and getattr(args, "out", None) is None and cfg.train.out == TrainConfig().out:
        cfg.train.out = str(next_run_dir(cfg.train.out))  # runs/train, runs/train2, ... (never into a finished run)
    return cfg


def next_run_dir(path: str | Path) -> Path:
    """``path`` when it is free (missing or an empty folder), else the first free ``path2``,
    ``path3``, ... (the ultralytics convention for runs/train)."""
    path = Path(path)

    def free(p: Path) -> bool:
        return not p.exists() or (p.is_dir() and not any(p.iterdir()))

    n = 2
    candidate = path
    while not free(candidate):
        candidate = path.with_name(f"{path.name}{n}")
        n += 1
    return candidate


def cmd_train(args: argparse.Namespace) -> int:
    """``detect train``. Exit 0 done, 1 done but the data had problems, images could not be read
    or steps were skipped for a non-finite loss; a bad option, missing data or an unusable checkpoint raise
    :class:`~detect.errors.UsageError`. ``--resume`` reads ``last.pt`` once, for the config and
    the training state."""
    ckpt = load_checkpoint(run_checkpoint(args)) if getattr(args, "resume", False) else None
    cfg = config_from_args(args, ckpt)
    result = train(cfg, progress=not getattr(args, "no_progress", False), checkpoint=ckpt)
    return 1 if result["nonfinite_loss"] or result["data_problems"] or result["unreadable"] else 0
