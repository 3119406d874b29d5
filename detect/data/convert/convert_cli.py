"""``detect convert``: its options and handler (the conversion: :mod:`detect.data.convert.converter`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detect.checks import NONNEG
from detect.data.cache.build import summarize
from detect.data.convert.converter import PROBLEMS_FILE, ConvertError, convert
from detect.data.formats.table import writers
from detect.data.spec import DatasetError, is_cache_path, open_data


def add_convert_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect convert``."""
    p.add_argument("source", help="dataset YAML, VOC folder or split folders, YOLO data.yaml or its folder, COCO folder or "
                   ".json, cache .pkl, or the detections.jsonl of `detect predict --save-json` (pre-labels)")
    p.add_argument("--to", required=True, choices=[*writers(), "pkl"],
                   help="voc: labelImg/CVAT Pascal VOC; coco: instances_<split>.json; yolo: ultralytics data.yaml; "
                   "pkl: the cache of one split (like xml2pkl)")
    p.add_argument("-o", "--output", required=True, help="output folder (--to pkl: the cache file); never inside the source")
    p.add_argument("--split", help="only this split (default: every split; --to pkl: every image)")
    p.add_argument("--workers", type=NONNEG, default=0, help="parallel VOC parsers, this process included (0: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the source had any problem")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _to_cache(args: argparse.Namespace) -> int:
    """``--to pkl``: the cache of one split of any layout, at ``-o``."""
    if not is_cache_path(args.output):
        raise ConvertError(f"--to pkl writes a cache: give -o a .pkl file name, not {args.output}")
    if is_cache_path(args.source) or Path(args.source).suffix.lower() == ".jsonl":
        raise ConvertError(f"{args.source} is not a dataset; --to pkl caches a dataset (convert detections to voc, coco or yolo)")
    try:
        ds = open_data(args.source)
        res = ds.build(args.split, args.output, workers=args.workers, progress=not args.no_progress)
    except DatasetError as e:
        raise ConvertError(str(e)) from None
    summarize(res, prog="convert", what="XML files" if ds.kind.startswith("voc") else "images")
    return 1 if args.strict and res.summary["problems"] else 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Handler of ``detect convert`` (see ``detect.cli``); returns the exit code."""
    try:
        if args.to == "pkl":
            return _to_cache(args)
        res = convert(args.source, args.to, args.output, args.split, workers=args.workers, progress=not args.no_progress)
    except OSError as e:
        raise ConvertError(f"cannot write in {args.output}: {e.strerror or e}") from None
    parts = ", ".join(f"{s} {n} images ({b} boxes)" for s, (n, b) in res["splits"].items())
    print(f"convert: {len(res['classes'])} classes; {parts} -> {args.to.upper()} in {args.output}", file=sys.stderr)
    for kind, what in (("problems", "problems in the source"), ("left_out", "records left out")):
        if res[kind]:
            print(f"convert: {len(res[kind])} {what}; full list: {Path(args.output) / PROBLEMS_FILE}", file=sys.stderr)
            for p in res[kind][:5]:
                print(f"  {p}", file=sys.stderr)
    if res["left_out"] or res["missing"]:  # images the source names that are not in the output
        print(f"convert: {len(res['left_out']) + len(res['missing'])} images left out (missing or unreadable image "
              "files): exit code 1", file=sys.stderr)
        return 1
    return 1 if args.strict and res["problems"] else 0
