"""The one command-line entry point: ``detect <command> ...``.

This is the only module that parses argv. Each sub-command's handler lives beside the code
it drives and takes the parsed ``argparse.Namespace``; it returns the process exit code:
0 everything done, 1 done but some inputs had problems (or ``--strict`` tripped). A usage
error (missing input, unwritable output, bad option) is a :class:`detect.errors.UsageError`
raised wherever it is found; :func:`main` alone prints it as ``detect <command>: error: ...``
(argparse's format for its own errors) and returns 2. Interrupted: 130.
``tools/*.py`` are thin wrappers that call :func:`main` with their sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Callable, Optional, Sequence

from detect.errors import UsageError
from detect.checks import checked, default_note  # standard library only: xml2pkl's re-run stays light

# command -> "module:function"; imported lazily so `detect --help` stays fast.
HANDLERS = {
    "xml2pkl": "detect.data.xml2pkl:cmd_xml2pkl",
    "synth": "detect.data.synth.dataset:cmd_synth",
    "train": "detect.engine.train_cli:cmd_train",
    "val": "detect.infer.val_cli:cmd_val",
    "predict": "detect.infer.predict_cli:cmd_predict",
    "demo": "detect.infer.predict_cli:cmd_demo",
    "export": "detect.infer.export_cli:cmd_export",
    "proposals": "detect.engine.proposals:cmd_proposals",
    "tune": "detect.tune.search:cmd_tune",
    "convert": "detect.data.convert:cmd_convert",
    "audit": "detect.audit.audit_cli:cmd_audit",
    "serve": "detect.serve.serve_cli:cmd_serve",
}


class _Help(argparse.HelpFormatter):
    """``--help`` shows each option's default and the rule its value must follow (a
    :func:`~detect.checks.checked` type's ``rule``), except where there is no default to show (an
    option that leaves a config value alone, a flag that is off) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "(default:" in text or not action.option_strings:
            return text
        note = default_note("%(default)s", getattr(action.type, "rule", None))
        return f"{text} {note}"


# types of options that are not settings of detect/config.py: converted and checked by argparse
_COUNT = checked(int, ">= 1")  # a number of images, items, trials...
_NONNEG = checked(int, ">= 0")  # processes (0: in this process, or one per core), sizes where 0 means none
_FRACTION = checked(float, "in [0, 1]")


def _add_xml2pkl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("xml2pkl", help="parse Pascal VOC XML into a versioned pickle cache", formatter_class=_Help)
    p.add_argument("ann_dir", help="folder searched recursively for *.xml")
    p.add_argument("--images", help="image folder (VOC JPEGImages/, per-class images/<class>/, or beside the XML); "
                   "given, records whose image is missing are reported and left out; omitted, images are looked up "
                   "beside the XML and in a sibling JPEGImages/ or images/ folder, and records are kept without one")
    p.add_argument("--classes", help="class file, one name a line; unknown names become problems")
    p.add_argument("--split", help="file of image ids (stem or <class>/<stem>) to keep")
    p.add_argument("-o", "--output", required=True, help="cache file to write (.pkl)")
    p.add_argument("--workers", type=_NONNEG, default=0, help="parallel parsers, this process included (0: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any problem was found")
    p.add_argument("--max-xml-bytes", type=_COUNT, help="larger annotation files are reported, not read (default: 16 MiB)")
    p.add_argument("--verify-images", action="store_true", help="decode every image fully (in parallel), not only its "
                   "header: truncated or corrupt ones are reported and left out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render synthetic retail shelves as a VOC dataset", formatter_class=_Help)
    p.add_argument("out_dir", help="dataset folder to write (an earlier synthetic dataset there is replaced)")
    p.add_argument("--images", type=_COUNT, default=200, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="a seed always gives the same bytes")
    p.add_argument("--size", type=checked(int, ">= 32"), default=320, help="longer image side in pixels")
    p.add_argument("--dense", action="store_true", help="whole store shelves: 4:3 photos (use --size 4000 for 12 MP) "
                   "with 100-300 products of every class, laid out from a planogram, and their audit truth in truth/")
    p.add_argument("--shelves", type=_NONNEG, default=0, help="add this many dense store shelves after the --images "
                   "scenes (a mixed training set: product photos and whole shelves)")
    p.add_argument("--shelf-size", type=checked(int, ">= 32"), default=1600, help="longer side of those shelves (at least 256)")
    p.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions")
    p.add_argument("--workers", type=_COUNT, default=1, help="rendering processes (the output does not depend on it)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a detector", formatter_class=_Help,
                       description="Options override --config, which overrides the defaults shown here.")
    from detect.options import add_config_options  # the config table (and yaml): only for the commands that use it

    p.add_argument("--config", help="YAML config (sections model, data, train, preprocess)")
    add_config_options(p)  # one option per setting declared with a cli spelling in detect/config.py
    p.add_argument("--strict", action="store_true", help="exit 1 when the data had problems (default: warn, exit 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="evaluate weights on a dataset split (VOC and COCO metrics)", formatter_class=_Help)
    p.add_argument("--weights", required=True, help="checkpoint (RUN/best.pt) or the .onnx file of detect export")
    p.add_argument("--data", required=True, help="dataset YAML, VOC folder or cache .pkl")
    p.add_argument("--split", default="val", help="split to evaluate")
    p.add_argument("--json", help="write metrics JSON here")
    p.add_argument("--plots", help="folder for PR curves and the confusion matrix (default: beside --json, else runs/val)")
    p.add_argument("--batch", type=_COUNT, default=16, help="images per batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    p.add_argument("--max-det", type=_COUNT, help="max detections per image (COCO maxDets too), up to 1000 "
                   "(default: the checkpoint's model.max_det; must be >= 1)")
    p.add_argument("--workers", type=_NONNEG, default=2, help="data loader processes (0: in this process)")
    _add_slicing(p)


def _add_int8(p: argparse.ArgumentParser, what: str) -> None:
    """The INT8 options ``detect predict`` and ``detect export`` share (detect/infer/quantize.py)."""
    p.add_argument("--int8", action="store_true", help=f"{what} the SSD's network quantized to INT8 (ONNX Runtime QDQ, "
                   "per-channel weights; box decoding and NMS stay float)")
    p.add_argument("--calib", metavar="DATA", help="INT8 calibration images: a dataset (its train split) or an image "
                   "folder, glob or .txt list (default: synthetic shelves, right for the shipped weights only)")
    p.add_argument("--calib-images", type=_COUNT, default=200, help="INT8 calibration: at most this many images")


def _slice_mode(text: str):
    """``--slice``: auto | off | a window side in pixels (detect/infer/slicing.py)."""
    from detect.infer.slicing import parse_slice

    try:
        return parse_slice(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_slicing(p: argparse.ArgumentParser) -> None:
    """Sliced inference for large photos, shared by predict, val and audit (detect/infer/slicing.py)."""
    p.add_argument("--slice", type=_slice_mode, default="auto", help="cut photos larger than the model needs into "
                   "overlapping slices at the scale of the products it learned: auto, off, or a slice side in pixels")
    p.add_argument("--overlap", type=checked(float, "in [0, 1)"), default=0.25, help="share of a slice side that "
                   "neighbouring slices share (products up to that size are seen whole by one; at most 0.9)")
    p.add_argument("--full-frame", action="store_true", help="also detect on the whole photo, for products larger than a slice")
    p.add_argument("--object-size", type=checked(float, "> 0"), help="the products' side in the photo's pixels, when "
                   "known (--slice auto then uses it instead of measuring)")
    p.add_argument("--merge", choices=["cut", "nms", "nmm"], default="cut", help="how slices' detections merge: join "
                   "pieces cut by slice borders, then NMS (cut); plain NMS; SAHI's greedy merge on intersection over smaller (nmm)")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from detect.data.images import MAX_PIXELS

    p = sub.add_parser("predict", help="detect products in images, folders, videos or streams", formatter_class=_Help)
    p.add_argument("source", help="image, folder, glob, .txt list, video, webcam index or stream URL")
    p.add_argument("--weights", help="checkpoint (RUN/best.pt) or the .onnx file of detect export (default: the shipped weights)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    p.add_argument("--half", action="store_true", help="fp16 on GPU")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto: ONNX Runtime for an SSD on the CPU when installed, else PyTorch")
    _add_int8(p, "run")
    p.add_argument("--onnx", help="run this `detect export` file (FP32 or --int8) of --weights on ONNX Runtime")
    p.add_argument("--threads", type=_NONNEG, default=0, help="CPU threads of ONNX Runtime's network (0: as many as torch "
                   "uses, every core unless set)")
    p.add_argument("--batch", type=_NONNEG, default=0, help="images or frames per batch (0: 8 frames when "
                   "the source is video files, else 1; a live stream never waits for a batch)")
    p.add_argument("--conf", type=_FRACTION, default=0.25, help="score threshold")
    p.add_argument("--iou", type=_FRACTION, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=_COUNT, default=1000, help="detections kept per image (a store shelf holds hundreds)")
    p.add_argument("--classes", nargs="+", help="keep only these class names or indices")
    _add_slicing(p)
    p.add_argument("--max-pixels", type=_NONNEG, default=MAX_PIXELS, help="larger images (width x height, read from the "
                   "header) are reported and skipped, not decoded (Pillow's limit; 0: none)")
    p.add_argument("--save-dir", default=None, help="folder for annotated images/videos and tables (default: runs/predict, "
                   "then runs/predict2, ... as each is used)")
    p.add_argument("--save-json", action="store_true", help="write detections.jsonl")
    p.add_argument("--save-csv", action="store_true", help="write detections.csv and counts.csv")
    p.add_argument("--no-save", action="store_true", help="do not write annotated images/videos")
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster (auto: the one `ray start` began here; "
                   "ray://HOST:10001; local: a Ray on this machine only): photos only, tables only (--save-json, "
                   "--save-csv); needs the ray extra (detect/infer/ray_predict.py)")
    p.add_argument("--ray-actors", type=_COUNT, help="--ray: model copies at once (default: one per GPU, or one per "
                   "--threads CPUs of the cluster)")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render synthetic shelves, detect with the shipped weights, save drawings",
                       formatter_class=_Help)
    p.add_argument("--out", default="runs/demo", help="folder for the annotated shelves")
    p.add_argument("--images", type=_COUNT, default=4, help="shelves to render")
    p.add_argument("--seed", type=int, default=2026, help="seed of the rendered shelves")
    p.add_argument("--no-store", dest="store", action="store_false", help="skip the 12-megapixel store shelf")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export weights to ONNX (dynamic batch) or TorchScript", formatter_class=_Help)
    p.add_argument("--weights", help="SSD checkpoint (default: the shipped weights)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="file format")
    p.add_argument("-o", "--output", help="file to write, never the weights (default: beside the weights, w.pt -> w.onnx "
                   "or w.torchscript, w.int8.onnx with --int8; the shipped weights' export goes to the current folder)")
    p.add_argument("--opset", type=checked(int, ">= 7"), default=17, help="ONNX opset")
    _add_int8(p, "write")


def _add_proposals(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proposals", help="selective-search proposals for a cache, cached beside it", formatter_class=_Help)
    p.add_argument("cache", help="annotation cache .pkl (from xml2pkl), or any --data: the cache of its --split")
    p.add_argument("--split", help="split of a --data given instead of a cache (default: every image)")
    p.add_argument("-o", "--output", help="proposal cache (default: <cache>.ss-<mode>.pkl)")
    p.add_argument("--mode", choices=["fast", "quality"], default="fast", help="selective search strategy")
    p.add_argument("--max", type=_COUNT, default=2000, help="proposals kept per image")
    p.add_argument("--resize", type=_NONNEG, default=500, help="longer side used for the search (0: original)")
    p.add_argument("--workers", type=_NONNEG, default=0, help="parallel processes (0: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_tune(sub: argparse._SubParsersAction) -> None:
    from detect.tune import TRAIN_OPTIONS
    from detect.options import add_config_options
    from detect.tune.space import SAMPLERS

    p = sub.add_parser("tune", help="hyperparameter search (grid, random, TPE) with Optuna", formatter_class=_Help,
                       description="--imgsz, --batch and --workers are train's; they override --config for every trial.")
    p.add_argument("--data", required=True, help="dataset YAML, VOC folder or cache .pkl")
    p.add_argument("--space", required=True, help="search space YAML (parameters: detect/tune/space.py)")
    p.add_argument("--trials", type=_COUNT, help="trials in the study in all, across restarts (default: the grid size; 20 for random/TPE)")
    p.add_argument("--jobs", type=_COUNT, default=1, help="parallel trials on this machine (one GPU each, or a share of the CPU cores)")
    p.add_argument("--epochs", type=_COUNT, default=5, help="epochs per trial")
    p.add_argument("--out", required=True, help="study folder (study.db, trials/, report)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the space file's, else grid when every parameter has grid points, else tpe")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in OUT)")
    p.add_argument("--config", help="base train YAML")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I | cuda:I,J")
    add_config_options(p, paths=TRAIN_OPTIONS)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a dataset, or predict's detections, to VOC, COCO, YOLO or a cache",
                       formatter_class=_Help)
    p.add_argument("source", help="dataset YAML, VOC folder or split folders, YOLO data.yaml or its folder, COCO folder or "
                   ".json, cache .pkl, or the detections.jsonl of `detect predict --save-json` (pre-labels)")
    p.add_argument("--to", required=True, choices=["voc", "coco", "yolo", "pkl"],
                   help="voc: labelImg/CVAT Pascal VOC; coco: instances_<split>.json; yolo: ultralytics data.yaml; "
                   "pkl: the cache of one split (like xml2pkl)")
    p.add_argument("-o", "--output", required=True, help="output folder (--to pkl: the cache file); never inside the source")
    p.add_argument("--split", help="only this split (default: every split; --to pkl: every image)")
    p.add_argument("--workers", type=_NONNEG, default=0, help="parallel VOC parsers, this process included (0: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the source had any problem")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_audit(sub: argparse._SubParsersAction) -> None:
    from detect.audit.audit import DEFAULT_CONF, DEFAULT_OCCUPANCY_CONF
    from detect.audit.gaps import RATIO
    from detect.data.images import MAX_PIXELS

    p = sub.add_parser("audit", help="shelf audit: rows, facings, gaps, planogram compliance, share of shelf, "
                       "unique products in a video", formatter_class=_Help)
    p.add_argument("source", help="photo, folder, glob, .txt list or video file (an aisle walk)")
    p.add_argument("--weights", help="checkpoint or .onnx file of detect export (default: the shipped weights)")
    p.add_argument("--planogram", help="planogram CSV or JSON (shelf, position, product, facings; see datasets/planogram_example.csv)")
    p.add_argument("--product-map", help="CSV (product,class) or JSON mapping the planogram's product ids to class names")
    p.add_argument("--save-dir", default=None, help="folder for the report, tables and annotated photos/videos "
                   "(default: runs/audit, then runs/audit2, ... as each is used)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    p.add_argument("--int8", action="store_true", help="run the SSD's network quantized to INT8 (as detect predict --int8)")
    p.add_argument("--conf", type=_FRACTION, default=DEFAULT_CONF, help="score of a product")
    p.add_argument("--occupancy-conf", type=_FRACTION, default=DEFAULT_OCCUPANCY_CONF, help="detections between this score and --conf are "
                   "something standing there (a product turned or lying down): they close gaps but count as no facing")
    p.add_argument("--iou", type=_FRACTION, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=_COUNT, default=1000, help="detections kept per photo (a dense shelf holds hundreds)")
    p.add_argument("--gap-ratio", type=checked(float, "> 0"), default=RATIO, help="an empty stretch is a gap when the products around it "
                   "stand this many usual pitches apart (detect/audit/gaps.py)")
    p.add_argument("--shelf-edges", choices=["products", "image"], default="products", help="where the gaps at the row "
                   "ends stop: at the outermost products of any row, or at the photo's edges (the shelf fills the photo)")
    _add_slicing(p)
    p.add_argument("--min-track-frames", type=_COUNT, default=5, help="videos: frames a track needs to count as a product")
    p.add_argument("--max-pixels", type=_NONNEG, default=MAX_PIXELS, help="larger images (width x height) are reported and skipped (0: none)")
    p.add_argument("--no-save", action="store_true", help="no annotated photos/videos (the report still embeds the photos)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from detect.serve.serve_cli import add_parser  # argparse only: fastapi loads when the command runs

    add_parser(sub, _Help)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``detect`` parser; with ``command`` (a key of :data:`HANDLERS`) only that command's
    sub-parser is built: ``detect xml2pkl`` on an up-to-date cache takes about as long as its
    stat calls, and building ``train``'s options from the config table would cost more."""
    parser = argparse.ArgumentParser(prog="detect", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders = {"xml2pkl": _add_xml2pkl, "synth": _add_synth, "train": _add_train, "val": _add_val, "predict": _add_predict,
              "demo": _add_demo, "export": _add_export, "proposals": _add_proposals, "tune": _add_tune, "convert": _add_convert,
              "serve": _add_serve, "audit": _add_audit}
    for name, add in adders.items():
        if command is None or name == command:
            add(sub)
    return parser


def _version() -> str:
    from detect import __version__

    return __version__


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    module, func = HANDLERS[command].split(":")
    return getattr(importlib.import_module(module), func)


def _key_value_hint(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """After argparse refused the arguments: when some are ultralytics' ``key=value`` spelling
    (``detect train data=x epochs=1``), say how they are spelled here (``--data x --epochs 1``)."""
    pairs = [a.split("=", 1) for a in argv[1:] if re.fullmatch(r"[A-Za-z][\w-]*=.*", a)]
    if not pairs or argv[0] not in HANDLERS:
        return
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[argv[0]]
    known = sub._option_string_actions
    good = [f"--{k.replace('_', '-')} {v}" for k, v in pairs if f"--{k.replace('_', '-')}" in known]
    bad = [k for k, _ in pairs if f"--{k.replace('_', '-')}" not in known]
    hint = f"detect {argv[0]}: hint: options are spelled --key value, not key=value (the ultralytics spelling)"
    if good:
        hint += f": {' '.join(good)}"
    if bad:
        hint += f"; no option for {', '.join(bad)} (see detect {argv[0]} --help)"
    print(hint, file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in HANDLERS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 2:
            _key_value_hint(parser, argv)
        raise
    if args.command in ("train", "tune"):
        from detect.engine.cpu_alloc import keep_heap_for_training, passive_thread_wait

        keep_heap_for_training()  # before torch allocates anything: about 2x faster CPU training
        passive_thread_wait()  # before torch starts OpenMP: two trainings on one machine share its cores
    try:
        return int(_handler(args.command)(args) or 0)
    except UsageError as e:  # the one mapping of a usage error, raised anywhere below, to output
        print(f"detect {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
