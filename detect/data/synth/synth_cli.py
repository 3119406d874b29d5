"""``detect synth``: its options and handler (the rendering: :mod:`detect.data.synth.dataset`)."""

from __future__ import annotations

import argparse
import time

from detect.checks import COUNT, NONNEG, checked
from detect.errors import UsageError


def add_synth_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect synth``."""
    p.add_argument("out_dir", help="dataset folder to write (an earlier synthetic dataset there is replaced)")
    p.add_argument("--images", type=COUNT, default=200, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="a seed always gives the same bytes")
    p.add_argument("--size", type=checked(int, ">= 32"), default=320, help="longer image side in pixels")
    p.add_argument("--dense", action="store_true", help="whole store shelves: 4:3 photos (use --size 4000 for 12 MP) "
                   "with 100-300 products of every class, laid out from a planogram, and their audit truth in truth/")
    p.add_argument("--shelves", type=NONNEG, default=0, help="add this many dense store shelves after the --images "
                   "scenes (a mixed training set: product photos and whole shelves)")
    p.add_argument("--shelf-size", type=checked(int, ">= 32"), default=1600, help="longer side of those shelves (at least 256)")
    p.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions")
    p.add_argument("--workers", type=COUNT, default=1, help="rendering processes (the output does not depend on it)")


def cmd_synth(args: argparse.Namespace) -> int:
    """``detect synth OUT_DIR --images N --seed S --size PX --splits a,b,c``; exit 0. Raises
    UsageError for bad numbers, an output folder that is not ours, an unwritable place."""
    from detect.data.synth.dataset import CLASSES, render_dataset

    try:
        fractions = [float(v) for v in str(args.splits).split(",")]
    except ValueError:
        raise UsageError(f"--splits must be three comma-separated fractions, got {args.splits!r}") from None
    t0 = time.perf_counter()
    try:
        summary = render_dataset(args.out_dir, args.images, args.seed, args.size, fractions,
                                 workers=max(1, int(getattr(args, "workers", 1) or 1)), dense=bool(getattr(args, "dense", False)),
                                 shelves=int(getattr(args, "shelves", 0) or 0), shelf_size=int(getattr(args, "shelf_size", 1600)))
    except (ValueError, FileExistsError, PermissionError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write {args.out_dir}: {e}") from None
    dt = time.perf_counter() - t0
    sp = summary["splits"]
    print(f"wrote {summary['images']} images ({summary['objects']} products, {len(CLASSES)} classes; "
          f"train {sp['train']}, val {sp['val']}, test {sp['test']}) to {args.out_dir} "
          f"in {dt:.1f} s ({summary['images'] / max(dt, 1e-9):.0f} images/s)")
    return 0
