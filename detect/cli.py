"""The one command-line entry point: ``detect <command> ...``.

This is the only module that parses argv. Each sub-command's handler lives beside the code
it drives and takes the parsed ``argparse.Namespace``; it returns the process exit code:
0 everything done, 1 done but some inputs had problems (or ``--strict`` tripped),
2 usage error (missing input, unwritable output, bad option), 130 interrupted.
``tools/*.py`` are thin wrappers that call :func:`main` with their sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Optional, Sequence

# command -> "module:function"; imported lazily so `detect --help` stays fast.
HANDLERS = {
    "xml2pkl": "detect.data.xml2pkl:cmd_xml2pkl",
    "synth": "detect.data.synth:cmd_synth",
    "train": "detect.engine.train:cmd_train",
    "val": "detect.engine.evaluate:cmd_val",
    "predict": "detect.engine.predict_cli:cmd_predict",
    "demo": "detect.engine.predict_cli:cmd_demo",
    "export": "detect.engine.export:cmd_export",
    "proposals": "detect.engine.proposals:cmd_proposals",
    "tune": "detect.engine.tune:cmd_tune",
    "convert": "detect.data.convert:cmd_convert",
}


def _add_xml2pkl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("xml2pkl", help="parse Pascal VOC XML into a versioned pickle cache")
    p.add_argument("ann_dir", help="folder searched recursively for *.xml")
    p.add_argument("--images", help="image folder (VOC JPEGImages/, per-class images/<class>/, or beside the XML); "
                   "given, records whose image is missing are reported and left out; omitted, images are looked up "
                   "beside the XML and in a sibling JPEGImages/ or images/ folder, and records are kept without one")
    p.add_argument("--classes", help="class file, one name a line; unknown names become problems")
    p.add_argument("--split", help="file of image ids (stem or <class>/<stem>) to keep")
    p.add_argument("-o", "--output", required=True, help="cache file to write (.pkl)")
    p.add_argument("--workers", type=int, default=0, help="parallel parser processes (0: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any problem was found")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render synthetic retail shelves as a VOC dataset")
    p.add_argument("out_dir")
    p.add_argument("--images", type=int, default=200, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=320, help="longer image side in pixels")
    p.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (the output does not depend on it)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a detector")
    p.add_argument("--data", help="dataset YAML, VOC folder or cache .pkl")
    p.add_argument("--model", choices=["ssd", "fast_rcnn"])
    p.add_argument("--backbone")
    p.add_argument("--pretrained", choices=["imagenet", "none"])
    p.add_argument("--backbone-weights", help="local weight file for a torchvision backbone")
    p.add_argument("--bn", choices=["frozen", "train", "sync"])
    p.add_argument("--conv-head", action=argparse.BooleanOptionalAction, default=None,
                   help="EfficientNet-Lite: keep the pretrained 1x1 conv to 1280 channels on the stride-32 map")
    p.add_argument("--freeze-stride", type=int, help="backbone stages up to this output stride stay fixed (0: none)")
    p.add_argument("--context", action=argparse.BooleanOptionalAction, default=None,
                   help="image-level context logits added to every box's class logits")
    p.add_argument("--context-loss", type=float, help="weight of the image-level class loss on the context logits")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--time", type=float, help="wall-clock budget in minutes: epochs and schedule are planned to fit it")
    p.add_argument("--batch", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:i")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--config", help="YAML config; options given here override it")
    p.add_argument("--proposals", choices=["rpn", "selective_search", "file"], help="Fast R-CNN proposal source")
    p.add_argument("--proposal-file", help="precomputed proposals (from `detect proposals`, or .npz/.json/.pkl)")
    p.add_argument("--scheduler", choices=["cosine", "step"], help="decay after the linear warmup")
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--clip-grad", type=float, help="max gradient norm (0: no clipping)")
    p.add_argument("--augment", type=float, help="train augmentation strength (0: none)")
    p.add_argument("--balance", type=float, help="class-balanced sampling power (0: off, 0.5: square root)")
    p.add_argument("--eval-every", type=int, help="evaluate on the val split every N epochs (and at the end)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None, help="EMA of the weights")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC on CUDA")
    p.add_argument("--no-progress", action="store_true")


def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="evaluate weights on a dataset split (VOC and COCO metrics)")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--json", help="write metrics JSON here")
    p.add_argument("--plots", help="folder for PR curves and the confusion matrix")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-det", type=int, help="max detections per image (COCO maxDets too), up to 1000")
    p.add_argument("--workers", type=int, default=2)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="detect products in images, folders, videos or streams")
    p.add_argument("source", help="image, folder, glob, .txt list, video, webcam index or stream URL")
    p.add_argument("--weights", help="checkpoint (default: the shipped weights)")
    p.add_argument("--device", default="auto")
    p.add_argument("--half", action="store_true", help="fp16 on GPU")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto: ONNX Runtime for an SSD on the CPU when installed, else PyTorch")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--classes", nargs="+", help="keep only these class names or indices")
    p.add_argument("--save-dir", default="runs/predict")
    p.add_argument("--save-json", action="store_true")
    p.add_argument("--save-csv", action="store_true")
    p.add_argument("--no-save", action="store_true", help="do not write annotated images/videos")
    p.add_argument("--show", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render synthetic shelves, detect with the shipped weights, save drawings")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--device", default="auto")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export weights to ONNX (dynamic batch) or TorchScript")
    p.add_argument("--weights")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--opset", type=int, default=17)


def _add_proposals(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proposals", help="selective-search proposals for a cache, cached beside it")
    p.add_argument("cache", help="annotation cache .pkl (from xml2pkl), or any --data: the cache of its --split")
    p.add_argument("--split", help="split of a --data given instead of a cache (default: every image)")
    p.add_argument("-o", "--output", help="proposal cache (default: <cache>.ss-<mode>.pkl)")
    p.add_argument("--mode", choices=["fast", "quality"], default="fast")
    p.add_argument("--max", type=int, default=2000, help="proposals kept per image")
    p.add_argument("--resize", type=int, default=500, help="longer side used for the search (0: original)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="hyperparameter search (grid, random, TPE) with Optuna")
    p.add_argument("--data", required=True)
    p.add_argument("--space", required=True, help="search space YAML")
    p.add_argument("--trials", type=int, help="trials in the study in all, across restarts (default: the grid size; 20 for random/TPE)")
    p.add_argument("--workers", type=int, default=1, help="parallel trials on this machine (one GPU each, or a share of the CPU cores)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    p.add_argument("--out", required=True)
    p.add_argument("--sampler", choices=["grid", "random", "tpe"])
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in OUT)")
    p.add_argument("--config", help="base train YAML")
    p.add_argument("--device", default="auto")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a dataset, or predict's detections, to VOC, COCO, YOLO or a cache")
    p.add_argument("source", help="dataset YAML, VOC folder or split folders, YOLO data.yaml or its folder, COCO folder or "
                   ".json, cache .pkl, or the detections.jsonl of `detect predict --save-json` (pre-labels)")
    p.add_argument("--to", required=True, choices=["voc", "coco", "yolo", "pkl"],
                   help="voc: labelImg/CVAT Pascal VOC; coco: instances_<split>.json; yolo: ultralytics data.yaml; "
                   "pkl: the cache of one split (like xml2pkl)")
    p.add_argument("-o", "--output", required=True, help="output folder (--to pkl: the cache file); never inside the source")
    p.add_argument("--split", help="only this split (default: every split; --to pkl: every image)")
    p.add_argument("--workers", type=int, default=0, help="parallel VOC parser processes (0: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the source had any problem")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detect", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_xml2pkl, _add_synth, _add_train, _add_val, _add_predict, _add_demo, _add_export, _add_proposals, _add_tune,
                _add_convert):
        add(sub)
    return parser


def _version() -> str:
    from detect import __version__

    return __version__


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    module, func = HANDLERS[command].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "tune"):
        from detect.engine.cpu_alloc import keep_heap_for_training

        keep_heap_for_training()  # before torch allocates anything: about 2x faster CPU training
    try:
        return int(_handler(args.command)(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
