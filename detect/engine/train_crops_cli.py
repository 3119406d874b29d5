"""``detect train-classifier``: train the second look's crop classifier on a dataset's boxes
(:mod:`detect.engine.train_crops`); ``detect predict/val --classifier RUN/best.pt`` use it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detect.checks import COUNT, NONNEG, checked
from detect.errors import UsageError


def add_train_classifier_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset (a data YAML, a VOC folder, a cache) whose boxes are cropped")
    p.add_argument("--split", default="train", help="split to train on")
    p.add_argument("--val-split", default="val", help="split whose boxes choose best.pt ('' for none: the last epoch)")
    p.add_argument("--out", default="runs/classifier", help="run folder: best.pt, last.pt, summary.json")
    p.add_argument("--time", type=checked(float, ">= 0"), default=0.0, help="minutes to train (the step count is planned from the first steps)")
    p.add_argument("--epochs", type=NONNEG, default=0, help="epochs to train (instead of --time)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="ImageNet-pretrained backbone")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels")
    p.add_argument("--expand", type=float, default=1.0, help="crop window side / the box's longer side")
    p.add_argument("--batch", type=COUNT, default=64, help="crops per step")
    p.add_argument("--lr", type=checked(float, "> 0"), default=1e-3, help="AdamW learning rate (weight decay 0.05, cosine)")
    p.add_argument("--workers", type=NONNEG, default=0, help="DataLoader processes (0: in this process)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights' initialisation and the augmentation")
    p.add_argument("--pretrained", choices=("imagenet", "none"), default="imagenet",
                   help="the backbone's ImageNet weights (none: random, for tests)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:i")


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Exit 0 when trained; raises UsageError for unusable data or options."""
    from detect.data.spec import resolve_data
    from detect.engine.train_crops import CropTrainSettings, train_crop_classifier
    from detect.models.backbones import MissingWeightsError
    from detect.models.crop_classifier import CropClassifierConfig
    from detect.utils import atomic_write_text, select_device

    if (args.time > 0) == (args.epochs > 0):
        raise UsageError("give one budget: --time MINUTES or --epochs N (> 0)")
    if args.size < 32 or args.expand <= 0:
        raise UsageError(f"--size must be >= 32 and --expand > 0, got {args.size} and {args.expand}")
    caches = {}
    for split in [args.split] + ([args.val_split] if args.val_split else []):
        try:
            caches[split] = resolve_data(args.data, split, progress=sys.stderr.isatty())
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:  # DatasetError included
            raise UsageError(f"cannot read data {args.data!r} split {split!r}: {e}") from None
        for problem in caches[split].problems:
            print(f"warning: {problem}", file=sys.stderr)
    train = caches[args.split]
    classes = list(train.classes)
    val_records = caches[args.val_split].records if args.val_split else []
    if args.val_split and list(caches[args.val_split].classes) != classes:
        raise UsageError(f"splits {args.split!r} and {args.val_split!r} of {args.data!r} list different classes")
    cfg = CropClassifierConfig(backbone=args.backbone, size=args.size, expand=args.expand)
    settings = CropTrainSettings(epochs=args.epochs, minutes=args.time, batch=args.batch, lr=args.lr,
                                 workers=args.workers, seed=args.seed, pretrained=args.pretrained)
    out = Path(args.out)
    try:
        summary = train_crop_classifier(train.records, val_records, classes, out, cfg, settings, select_device(args.device))
    except MissingWeightsError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(f"train-classifier on {args.data}: {e}") from None
    summary.update(data=str(args.data), split=args.split, val_split=args.val_split, config=cfg.to_dict())
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    acc = summary["best_val_accuracy"]
    score = f"best val top-1 {acc:.4f} at epoch {summary['best_epoch']}" if acc is not None else "no val boxes: the last epoch"
    print(f"{score}; weights: {out / 'best.pt'}")
    return 0
