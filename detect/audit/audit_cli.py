"""``detect audit SOURCE``: shelf audit of photos, folders and videos.

Photos: rows, facings, share of shelf, gaps and (with ``--planogram``) compliance per photo.
Videos (a walk along an aisle): unique products, each tracked across frames and counted once;
the annotated video shows each product's track id. Writes into ``--save-dir`` the annotated
photos/videos, ``audit.json``, the CSV tables and one self-contained ``report.html``
(:mod:`detect.audit.report`).

Exit codes: 0 every input was audited; 1 some inputs could not be read (each reported, the
rest audited); 2 usage error (missing source, bad planogram: the file and line, bad weights).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from detect.audit.audit import audit_detections
from detect.audit.draw import draw_audit, draw_tracks
from detect.audit.planogram import Planogram, read_planogram
from detect.audit.report import TABLES, embed_jpeg, image_section, video_section, write_html, write_json, write_tables
from detect.audit.track import UniqueCounter, VideoAudit
from detect.checks import COUNT, FRACTION, NONNEG, checked
from detect.errors import UsageError
from detect.infer.common_cli import add_slicing_options
from detect.infer.predict import Predictor
from detect.infer.predict_cli import Outputs, check_save_dir, count_frames, slice_options
from detect.infer.sources import MAX_PIXELS, VIDEO_EXTS, expand, is_stream
from detect.utils import check_output_folder, next_run_dir

VIDEO_BATCH = 8
DEFAULT_SAVE_DIR = "runs/audit"  # numbered like runs/predict: a second run never mixes into the first
OUTPUT_FILES = ("report.html", "audit.json", *TABLES)  # what a run writes besides the annotated copies
EMBED_PHOTOS = 200  # photos embedded in report.html (later ones: their tables, and the annotated file beside it)


def add_audit_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect audit``."""
    from detect.audit.audit import DEFAULT_CONF, DEFAULT_OCCUPANCY_CONF
    from detect.audit.gaps import RATIO
    p.add_argument("source", help="photo, folder, glob, .txt list or video file (an aisle walk)")
    p.add_argument("--weights", help="checkpoint or .onnx file of detect export (default: the shipped weights)")
    p.add_argument("--planogram", help="planogram CSV or JSON (shelf, position, product, facings; see datasets/planogram_example.csv): "
                   "per-position verdicts, and gaps where a row lacks facings it plans")
    p.add_argument("--product-map", help="CSV (product,class) or JSON mapping the planogram's product ids to class names")
    p.add_argument("--save-dir", default=None, help="folder for the report, tables and annotated photos/videos "
                   "(default: runs/audit, then runs/audit2, ... as each is used)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    p.add_argument("--int8", action="store_true", help="run the SSD's network quantized to INT8 (as detect predict --int8)")
    p.add_argument("--conf", type=FRACTION, default=DEFAULT_CONF, help="score of a product")
    p.add_argument("--occupancy-conf", type=FRACTION, default=DEFAULT_OCCUPANCY_CONF, help="detections between this score and --conf are "
                   "something standing there (a product turned or lying down): they close gaps but count as no facing")
    p.add_argument("--iou", type=FRACTION, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=COUNT, default=1000, help="detections kept per photo (a dense shelf holds hundreds)")
    p.add_argument("--gap-ratio", type=checked(float, "> 0"), default=RATIO, help="an empty stretch between two facings of one product is a "
                   "gap when they stand this many usual pitches apart (between two different products: when it holds a narrow "
                   "product of the row; detect/audit/gaps.py)")
    p.add_argument("--shelf-edges", choices=["products", "image"], default="products", help="where the gaps at the row "
                   "ends stop: at the outermost products of any row, or at the photo's edges (the shelf fills the photo)")
    add_slicing_options(p)
    p.add_argument("--min-track-frames", type=COUNT, default=5, help="videos: frames a track needs to count as a product")
    p.add_argument("--max-pixels", type=NONNEG, default=MAX_PIXELS, help="larger images (width x height) are reported and skipped (0: none)")
    p.add_argument("--no-save", action="store_true", help="no annotated photos/videos (the report still embeds the photos)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_audit(args: argparse.Namespace) -> int:
    if is_stream(args.source):
        raise UsageError(f"{args.source}: detect audit reads photos, folders and video files; for a live stream use detect predict")
    if not 0 <= args.occupancy_conf <= args.conf:
        raise UsageError(f"--occupancy-conf ({args.occupancy_conf}) must be at most --conf ({args.conf})")
    if args.gap_ratio <= 1:
        raise UsageError(f"--gap-ratio must be more than 1 (a normal pitch is 1), got {args.gap_ratio}")
    files, root = expand(args.source)
    save_dir = Path(args.save_dir) if args.save_dir else next_run_dir(DEFAULT_SAVE_DIR)  # runs/audit, runs/audit2, ...
    check_output_folder(save_dir, OUTPUT_FILES, files, what="--save-dir")
    if not args.no_save:
        check_save_dir(files, root, save_dir)
    predictor = Predictor(args.weights, device=args.device, conf=args.occupancy_conf, iou=args.iou, max_det=args.max_det,
                          int8=args.int8, **slice_options(args))
    planogram = read_planogram(args.planogram, predictor.classes, args.product_map) if args.planogram else None
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --save-dir {save_dir}: {e}") from None
    run = audit_source(predictor, args.source, save_dir, planogram, args, files=files)
    print(run.text())
    print(f"report: {run.paths[0]}")
    return 1 if run.failed else 0


def audit_source(predictor: Predictor, source: str, save_dir: Path, planogram: Optional[Planogram],
                 args: argparse.Namespace, files: Optional[list[str]] = None) -> "AuditRun":
    """Audit every photo and video of ``source`` into ``save_dir`` (``args``: the options of
    ``detect audit``); returns the finished run (``.paths``: report, JSON, tables)."""
    files = files if files is not None else expand(source)[0]
    videos_only = all(Path(f).suffix.lower() in VIDEO_EXTS for f in files)
    run = AuditRun(predictor, save_dir, planogram, args)
    started = time.perf_counter()
    bar = tqdm(total=count_frames(files), unit="img", disable=args.no_progress, dynamic_ncols=True, file=sys.stderr)
    try:
        for frame, det in predictor.stream(source, batch=VIDEO_BATCH if videos_only else 1, max_pixels=args.max_pixels):
            bar.update(1)
            if det is None:
                where = frame.path if frame.frame is None else f"{frame.path}#{frame.frame}"
                bar.write(f"warning: {where}: {frame.error}; skipped")
                run.fail(frame, f"{where}: {frame.error}")
                continue
            run.add(frame, det)
    finally:
        bar.close()
        run.close(time.perf_counter() - started)
    return run


@dataclass
class _Video:
    """The video being read: its tracker, frames read and failed, the frame the report shows."""

    path: str
    counter: UniqueCounter
    frames: int = 0
    failed: int = 0
    picture: Optional[str] = None


class AuditRun:
    """The state of one ``detect audit`` run: results so far, the open video's tracker."""

    def __init__(self, predictor: Predictor, save_dir: Path, planogram: Optional[Planogram], args: argparse.Namespace) -> None:
        self.predictor, self.save_dir, self.planogram, self.args = predictor, save_dir, planogram, args
        self.outputs = Outputs(save_dir)
        self.images: list[dict] = []
        self.videos: list[dict] = []
        self.sections: list[str] = []
        self.failed: list[str] = []
        self.video: Optional[_Video] = None  # the video being read
        self.paths: list[Path] = []

    def add(self, frame, det) -> None:
        if frame.kind == "image":
            self._end_video()
            h, w = frame.image.shape[:2]
            result = audit_detections(det, w, h, self.planogram, conf=self.args.conf, shelf_edges=self.args.shelf_edges,
                                      ratio=self.args.gap_ratio, source=frame.path)
            annotated = draw_audit(frame.image, result, copy=False)  # the frame is not used after this
            if not self.args.no_save:
                self.outputs.write(frame, annotated)
            d = result.to_dict()
            self.images.append(d)
            embed = len(self.images) <= EMBED_PHOTOS  # a report of a thousand photos stays a file a browser opens
            self.sections.append(image_section(d, embed_jpeg(annotated) if embed else None))
            return
        v = self.video
        if v is None or v.path != frame.path:
            self._end_video()
            v = self.video = _Video(frame.path, UniqueCounter(frame.fps or 30.0, min_frames=self.args.min_track_frames,
                                                              track_conf=self.args.conf))
        ids = v.counter.update(det)  # the unsure detections too: ByteTrack continues tracks with them, starts none
        v.frames += 1
        shown = (ids >= 0) | (det.scores >= self.args.conf)
        annotated = draw_tracks(frame.image, det.boxes[shown], det.labels[shown], ids[shown], det.classes,
                                unique=sum(v.counter.counts(det.classes).values()), copy=False)
        if v.picture is None and v.frames >= 2 * self.args.min_track_frames:
            v.picture = embed_jpeg(annotated, side=960)
        if not self.args.no_save:
            self.outputs.write(frame, annotated)

    def fail(self, frame, message: str) -> None:
        self.failed.append(message)
        if self.video is not None and self.video.path == frame.path:
            self.video.failed += 1

    def _end_video(self) -> None:
        v = self.video
        if v is None:
            return
        before = len(self.outputs.written)
        self.outputs.close_video()
        written = self.outputs.written[before] if len(self.outputs.written) > before else None
        v = VideoAudit(v.path, v.frames, v.counter.counts(self.predictor.classes), v.counter.name, written, v.failed, picture=v.picture)
        d = v.to_dict()
        self.videos.append(d)
        self.sections.append(video_section(d, v.picture))
        self.video = None

    def close(self, seconds: float) -> list[Path]:
        """Write the report, JSON and tables; returns their paths, the report first."""
        self._end_video()
        self.outputs.close_video()
        extra = {"weights": str(self.predictor.weights), "planogram": self.planogram.source if self.planogram else None,
                 "seconds": round(seconds, 3)}
        report = write_html(self.save_dir / "report.html", self.sections, "Shelf audit",
                            f"{len(self.images)} photos, {len(self.videos)} videos; weights {self.predictor.weights}"
                            + (f"; planogram {self.planogram.source}" if self.planogram else ""))
        paths = [report, write_json(self.save_dir / "audit.json", self.images, self.videos, self.failed, extra)]
        self.paths = paths + write_tables(self.save_dir, self.images, self.videos)
        return self.paths

    def text(self) -> str:
        lines = []
        for d in self.images:
            line = f"{d['source']}: {d['products']} products in {len(d['rows'])} rows, {len(d['gaps'])} gaps ({d['empty_facings']} empty facings)"
            if "compliance" in d:
                line += f", planogram compliance {d['compliance']['score'] * 100:.1f}%"
            lines.append(line)
        for d in self.videos:
            lines.append(f"{d['source']}: {d['total']} unique products in {d['frames']} frames ("
                         + ", ".join(f"{k} {v}" for k, v in d["unique"].items()) + ")")
        if self.failed:
            lines.append(f"{len(self.failed)} inputs failed:")
            lines += [f"  {f}" for f in self.failed[:20]]
        return "\n".join(lines)
