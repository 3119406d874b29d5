"""Options that several commands share: sliced inference for large photos (``detect predict``,
``val``, ``audit``; :mod:`detect.infer.slicing`) and INT8 (``detect predict``, ``export``;
:mod:`detect.infer.quantize`). Argparse only: the commands' parsers are built before anything heavy loads."""

from __future__ import annotations

import argparse

from detect.checks import COUNT, checked


def add_int8_options(p: argparse.ArgumentParser, what: str) -> None:
    """The INT8 options ``detect predict`` and ``detect export`` share (detect/infer/quantize.py)."""
    p.add_argument("--int8", action="store_true", help=f"{what} the SSD's network quantized to INT8 (ONNX Runtime QDQ, "
                   "per-channel weights; box decoding and NMS stay float)")
    p.add_argument("--calib", metavar="DATA", help="INT8 calibration images: a dataset (its train split) or an image "
                   "folder, glob or .txt list (default: synthetic shelves, right for the shipped weights only)")
    p.add_argument("--calib-images", type=COUNT, default=200, help="INT8 calibration: at most this many images")


def slice_mode(text: str):
    """``--slice``: auto | off | a window side in pixels (detect/infer/slicing.py)."""
    from detect.infer.slicing import parse_slice

    try:
        return parse_slice(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_slicing_options(p: argparse.ArgumentParser) -> None:
    """Sliced inference for large photos, shared by predict, val and audit (detect/infer/slicing.py)."""
    p.add_argument("--slice", type=slice_mode, default="auto", help="cut photos larger than the model needs into "
                   "overlapping slices at the scale of the products it learned: auto, off, or a slice side in pixels")
    p.add_argument("--overlap", type=checked(float, "in [0, 1)"), default=0.25, help="share of a slice side that "
                   "neighbouring slices share (products up to that size are seen whole by one; at most 0.9)")
    p.add_argument("--full-frame", action="store_true", help="also detect on the whole photo, for products larger than a slice")
    p.add_argument("--object-size", type=checked(float, "> 0"), help="the products' side in the photo's pixels, when "
                   "known (--slice auto then uses it instead of measuring)")
    p.add_argument("--merge", choices=["cut", "nms", "nmm"], default="cut", help="how slices' detections merge: join "
                   "pieces cut by slice borders, then NMS (cut); plain NMS; SAHI's greedy merge on intersection over smaller (nmm)")
    p.add_argument("--recentre", choices=["auto", "on", "off"], default="auto", help="read each confident detection of "
                   "a sliced photo again in a slice centred on it (auto: for models whose products fill a large part "
                   "of their input, such as product photos; off for store-shelf models, where it costs a slice per product)")


def add_classifier_option(p: argparse.ArgumentParser) -> None:
    """The second look (detect/infer/second_look.py), shared by predict and val."""
    p.add_argument("--classifier", help="a crop classifier (detect train-classifier's RUN/best.pt) that takes a second "
                   "look at every detection: its class probability is fused into the score (photos of many product "
                   "kinds: shelves, mosaics)")
