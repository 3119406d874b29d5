"""``detect tune``: its options and handler (the search: :func:`detect.tune.search.run_tune`)."""

from __future__ import annotations

import argparse

from detect.checks import COUNT
from detect.errors import UsageError


def add_tune_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect tune``: its own, and train's ``--imgsz``, ``--batch`` and ``--workers``."""
    from detect.tune import TRAIN_OPTIONS
    from detect.options import add_config_options
    from detect.tune.space import SAMPLERS

    p.description = "--imgsz, --batch and --workers are train's; they override --config for every trial."
    p.add_argument("--data", required=True, help="dataset YAML, VOC folder or cache .pkl")
    p.add_argument("--space", required=True, help="search space YAML (parameters: detect/tune/space.py)")
    p.add_argument("--trials", type=COUNT, help="trials in the study in all, across restarts (default: the grid size; 20 for random/TPE)")
    p.add_argument("--jobs", type=COUNT, default=1, help="parallel trials on this machine (one GPU each, or a share of the CPU cores)")
    p.add_argument("--epochs", type=COUNT, default=5, help="epochs per trial")
    p.add_argument("--out", required=True, help="study folder (study.db, trials/, report)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the space file's, else grid when every parameter has grid points, else tpe")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in OUT)")
    p.add_argument("--config", help="base train YAML")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I | cuda:I,J")
    add_config_options(p, paths=TRAIN_OPTIONS)


def cmd_tune(args: argparse.Namespace) -> int:
    """Handler of ``detect tune`` (see ``detect.cli``); returns the exit code."""
    from detect.options import apply_config_options
    from detect.tune import TRAIN_OPTIONS
    from detect.tune.search import base_config, run_tune
    from detect.utils import check_output_folder

    base = base_config(args.config)
    apply_config_options(base, args, paths=TRAIN_OPTIONS)  # --imgsz, --batch, --workers as in train
    inputs = [p for p in (args.data, args.space, args.config) if p]  # `--out` holding any of them would replace it
    check_output_folder(args.out, ("study.db", "trials.md", "trials.csv", "best.yaml"), inputs, what="--out folder")
    try:
        return run_tune(
            data=args.data, space=args.space, out=args.out, trials=args.trials, workers=args.jobs,
            epochs=args.epochs, sampler=args.sampler, storage=args.storage, config=base, device=args.device,
        )
    except OSError as e:  # an unwritable --out, a storage that cannot be opened
        raise UsageError(str(e)) from None
