"""``detect predict`` and ``detect demo``: run a :class:`~detect.infer.predict.Predictor` over a
source and write annotated images/videos, JSON lines/CSV and a summary.

Exit codes: 0 every input was processed; 1 some inputs failed (unreadable images, videos that
would not open, corrupt frames: each is reported and skipped). A source that does not exist,
missing or foreign weights and wrong options raise :class:`~detect.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

import cv2
from tqdm import tqdm

from detect.checks import COUNT, FRACTION, NONNEG
from detect.errors import UsageError
from detect.infer.common_cli import add_classifier_option, add_int8_options, add_slicing_options
from detect.infer.predict import Predictor
from detect.infer.results import ResultWriter, Summary
from detect.infer.sources import MAX_PIXELS, VIDEO_EXTS, Frame, expand, is_stream
from detect.utils import OutputPathError, atomic_write_bytes, check_output_folder, check_output_path, next_run_dir
from detect.viz.video import VideoSink


DEMO_SIZE = 480  # longer side of the demo shelves (the model resizes to its own input size)
VIDEO_BATCH = 8  # frames per batch of a video file when --batch is not given


class Window:
    """``--show``: a window when a display exists; otherwise one note and nothing else."""

    NAME = "detect"

    def __init__(self, enabled: bool) -> None:
        self.ok = False
        if not enabled:
            return
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("--show: no display here ($DISPLAY is not set); continuing without a window", file=sys.stderr)
            return
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
            self.ok = True
        except cv2.error:
            print("--show: this OpenCV build has no GUI (opencv-*-headless); continuing without a window. "
                  "pip install opencv-python to get one", file=sys.stderr)

    def show(self, image) -> bool:
        """Show ``image``; False when the user pressed q or Esc."""
        if not self.ok:
            return True
        cv2.imshow(self.NAME, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        if self.ok:
            cv2.destroyAllWindows()


class Outputs:
    """Where annotated images and videos go: the input's path relative to a listed folder (or
    its name), inside ``save_dir``; videos and streams become MP4 files at their own fps."""

    def __init__(self, save_dir: Path) -> None:
        self.save_dir = save_dir
        self.used: set[Path] = set()
        self.sink: Optional[VideoSink] = None
        self.codecs: set[str] = set()  # the encoders of the videos written (detect.viz.video: H.264 or mp4v)
        self.sink_source: Optional[str] = None
        self.written: list[str] = []

    def _path(self, frame: Frame) -> Path:
        rel = output_rel(frame.path, frame.kind, frame.root)
        out, n = self.save_dir / rel, 1
        while out in self.used:  # two inputs with one name (a glob over several folders)
            out = self.save_dir / rel.with_name(f"{rel.stem}_{n}{rel.suffix}")
            n += 1
        self.used.add(out)
        return out

    def write(self, frame: Frame, annotated) -> None:
        if frame.kind == "image":
            self.close_video()
            path = self._path(frame)
            path.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(path.suffix, annotated)
            if not ok:
                raise OSError(f"{path}: OpenCV cannot encode this image format")
            atomic_write_bytes(path, buf.tobytes())
            self.written.append(str(path))
            return
        if self.sink_source != frame.path:
            self.close_video()
            self.sink = VideoSink(self._path(frame), frame.fps)
            self.sink_source = frame.path
        self.sink.write(annotated)

    def close_video(self) -> None:
        if self.sink is not None:
            path = self.sink.close()
            if path is not None:
                self.written.append(str(path))
                self.codecs.add(self.sink.codec)
        self.sink, self.sink_source = None, None


WRITTEN_AS_IS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}  # other images are saved as .jpg


def output_rel(path: str, kind: str, root: Optional[str]) -> Path:
    """Where the annotated copy of an input goes, relative to ``--save-dir``: its path relative
    to the listed folder ``root`` (or its name); videos and streams as .mp4, images in a format
    OpenCV writes as they are, others as .jpg."""
    if kind == "stream":
        rel = Path(f"webcam{path}" if path.isdigit() else re.sub(r"[^\w.-]+", "_", path.split("://", 1)[-1])[:80])
    else:
        rel = Path(os.path.relpath(path, root)) if root else Path(Path(path).name)
    if kind != "image":
        return rel.with_suffix(".mp4")
    return rel if rel.suffix.lower() in WRITTEN_AS_IS else rel.with_suffix(".jpg")


def check_save_dir(files: list[str], root: Optional[str], save_dir: Path) -> None:
    """Refuse (:class:`~detect.errors.UsageError`) a ``--save-dir`` where an annotated copy of
    one of ``files`` (a source's :func:`~detect.infer.sources.expand`) would replace one of them
    (``detect predict DIR --save-dir DIR`` replaced the photos), before anything is read or written."""
    by_name: dict[str, list[str]] = {}  # check_output_path stats only inputs of the output's name
    for f in files:
        by_name.setdefault(os.path.basename(f).lower(), []).append(f)
    for f in files:
        out = save_dir / output_rel(f, "video" if Path(f).suffix.lower() in VIDEO_EXTS else "image", root)
        try:
            check_output_path(out, by_name.get(out.name.lower(), ()), what="--save-dir output")
        except OutputPathError as e:
            if e.input is None:  # a folder or a FIFO where the copy would go
                raise UsageError(str(e)) from None
            raise UsageError(f"--save-dir {save_dir} holds the input images: the annotated copy of {f} would replace "
                             f"{e.input}; choose another --save-dir") from None


def count_frames(files: list[str]) -> int:
    """How many images/frames ``files`` hold (videos: from their headers)."""
    total = 0
    for f in files:
        if Path(f).suffix.lower() in VIDEO_EXTS:
            cap = cv2.VideoCapture(f)
            total += max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            cap.release()
        else:
            total += 1
    return total


def predict_batch(listed: Optional[tuple[list[str], Optional[str]]]) -> int:
    """``--batch 0``: :data:`VIDEO_BATCH` frames when the source is video files only, else 1
    (``listed``: its files, None for a stream). On 2 cores a 720p video ran at 54 fps one frame
    at a time and 65 fps eight at a time (INT8; bench/RESULTS.md); still images (also in a
    folder that mixes them with videos) stay one at a time, since eight large photos in memory
    at once could be gigabytes."""
    return VIDEO_BATCH if listed and all(Path(f).suffix.lower() in VIDEO_EXTS for f in listed[0]) else 1


def slice_options(args: argparse.Namespace) -> dict:
    """Predictor's slicing keywords from the ``--slice`` options (absent ones: the defaults)."""
    return {"slice": getattr(args, "slice", "auto"), "overlap": getattr(args, "overlap", 0.25),
            "full_frame": getattr(args, "full_frame", False), "object_size": getattr(args, "object_size", None),
            "merge": getattr(args, "merge", "cut"), "recentre": getattr(args, "recentre", "auto")}


DEFAULT_SAVE_DIR = "runs/predict"  # numbered like runs/train: a second run never mixes into the first


def add_predict_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect predict``."""
    p.add_argument("source", help="image, folder, glob, .txt list, video, webcam index or stream URL")
    p.add_argument("--weights", help="checkpoint (RUN/best.pt) or the .onnx file of detect export (default: the shipped weights)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")
    p.add_argument("--half", action="store_true", help="fp16 on GPU")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto: ONNX Runtime for an SSD on the CPU when installed, else PyTorch")
    add_int8_options(p, "run")
    p.add_argument("--onnx", help="run this `detect export` file (FP32 or --int8) of --weights on ONNX Runtime")
    p.add_argument("--threads", type=NONNEG, default=0, help="CPU threads of ONNX Runtime's network (0: as many as torch "
                   "uses, every core unless set)")
    p.add_argument("--batch", type=NONNEG, default=0, help="images or frames per batch (0: 8 frames when "
                   "the source is video files, else 1; a live stream never waits for a batch)")
    p.add_argument("--conf", type=FRACTION, default=0.25, help="score threshold")
    p.add_argument("--iou", type=FRACTION, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=COUNT, default=1000, help="detections kept per image (a store shelf holds hundreds)")
    p.add_argument("--classes", nargs="+", help="keep only these class names or indices")
    add_slicing_options(p)
    add_classifier_option(p)
    p.add_argument("--max-pixels", type=NONNEG, default=MAX_PIXELS, help="larger images (width x height, read from the "
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
    p.add_argument("--ray-actors", type=COUNT, help="--ray: model copies at once (default: one per GPU, or one per "
                   "--threads CPUs of the cluster)")


def add_demo_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect demo``."""
    p.add_argument("--out", default="runs/demo", help="folder for the annotated shelves")
    p.add_argument("--images", type=COUNT, default=4, help="shelves to render")
    p.add_argument("--seed", type=int, default=2026, help="seed of the rendered shelves")
    p.add_argument("--no-store", dest="store", action="store_false", help="skip the 12-megapixel store shelf")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:I")


def cmd_predict(args: argparse.Namespace) -> int:
    ray = getattr(args, "ray", None)  # the photos on a Ray cluster: detect/infer/ray_predict.py
    if ray:
        from detect.infer.ray_predict import still_photos

        if args.show:
            raise UsageError("--show needs the frames here; --ray runs them on the cluster")
        if getattr(args, "classifier", None):
            raise UsageError("--classifier does not run on --ray yet (the actors get the detector's weights only)")
        listed = (still_photos(args.source), None)
    else:
        listed = None if is_stream(args.source) else expand(args.source)  # (files, root); SourceError: a UsageError
    total = count_frames(listed[0]) if listed else None
    save_dir = Path(args.save_dir) if args.save_dir else next_run_dir(DEFAULT_SAVE_DIR)  # runs/predict, runs/predict2, ...
    check_output_folder(save_dir, what="--save-dir")
    if listed and not args.no_save and not ray:
        check_save_dir(*listed, save_dir)
    # with --ray built here once too: bad weights or options are a usage error before the cluster
    # is asked, and --int8 quantizes here, not on every actor
    predictor = Predictor(args.weights, device=args.device, half=args.half, conf=args.conf, iou=args.iou,
                          max_det=args.max_det, classes=args.classes, backend=getattr(args, "backend", "auto"),
                          int8=getattr(args, "int8", False), calib=getattr(args, "calib", None),
                          calib_images=getattr(args, "calib_images", None), onnx=getattr(args, "onnx", None),
                          threads=getattr(args, "threads", 0) or None, classifier=getattr(args, "classifier", None),
                          **slice_options(args))
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --save-dir {save_dir}: {e}") from None
    if ray:
        from detect.infer.ray_predict import run_ray

        summary = run_ray(args, predictor, listed[0], save_dir, slice_options(args))
    else:
        summary = run(predictor, args.source, save_dir, batch=args.batch or predict_batch(listed), save=not args.no_save,
                      save_json=args.save_json, save_csv=args.save_csv, show=args.show, progress=not args.no_progress,
                      total=total, max_pixels=getattr(args, "max_pixels", MAX_PIXELS))
    print(summary.text())
    if summary.outputs:
        print(f"results saved to {save_dir}")
    return 1 if summary.failed else 0


def run(predictor: Predictor, source: str, save_dir: Path, *, batch: int = 1, save: bool = True, save_json: bool = False,
        save_csv: bool = False, show: bool = False, progress: bool = True, total: Optional[int] = None,
        max_pixels: int = MAX_PIXELS) -> Summary:
    """Stream ``source`` through ``predictor``, writing what was asked for; returns the summary
    (also saved as ``save_dir/summary.json``). Interrupted runs keep what was written."""
    summary = Summary()
    writer = ResultWriter(save_dir, predictor.classes, save_json, save_csv) if (save_json or save_csv) else None
    outputs = Outputs(save_dir)
    window = Window(show)
    bar = tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    try:
        for frame, det in predictor.stream(source, batch=batch, max_pixels=max_pixels):
            summary.add(frame, det)
            if writer is not None:
                writer.write(frame, det)
            bar.update(1)
            if det is None:
                bar.write(f"warning: {frame.path}{'' if frame.frame is None else f' frame {frame.frame}'}: {frame.error}; skipped")
                continue
            if save or window.ok:
                annotated = predictor.draw(frame.image, det, copy=False)  # the frame is not used after this
                if save:
                    outputs.write(frame, annotated)
                if not window.show(annotated):
                    break
    finally:
        bar.close()
        outputs.close_video()
        window.close()
        if writer is not None:
            summary.outputs += [str(p) for p in writer.close()]
        summary.outputs = outputs.written + summary.outputs
        if outputs.codecs:
            print(f"videos encoded as {', '.join(sorted(outputs.codecs))}", file=sys.stderr)
        summary.finish()
        summary.save(save_dir / "summary.json")
    return summary


DEMO_STORE_SIZE = 4000  # the demo's store shelf: 4000 x 3000, a 12-megapixel photo


def cmd_demo(args: argparse.Namespace) -> int:
    """Render a few synthetic shelves and one 12-megapixel store shelf, detect products with the
    shipped weights and save the drawings: the first thing to run after installing."""
    from detect.data.synth import render_scene

    if args.images < 1:
        raise UsageError("--images must be at least 1")
    predictor = Predictor(None, device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = []
    for i in range(args.images):
        scene = render_scene(args.seed, i, size=DEMO_SIZE, kind="shelf")
        image, truth = scene.image, scene.boxes
        det = predictor.predict([image])[0]
        path = out / f"shelf_{i:02d}.jpg"
        atomic_write_bytes(path, cv2.imencode(".jpg", predictor.draw(image, det))[1].tobytes())
        found.append((path, len(det), len(truth)))
    if getattr(args, "store", True):  # one whole store shelf: 12 MP, sliced at the scale of its products
        from detect.data.synth.dense import render_dense

        scene = render_dense(args.seed, 0, size=DEMO_STORE_SIZE)
        t0 = time.perf_counter()
        (side,) = predictor.slice_sides([scene.image])  # planned once: shown below, and used
        det = predictor.predict([scene.image], slice_side=[side])[0]
        dt = time.perf_counter() - t0
        path = out / "store_shelf.jpg"
        atomic_write_bytes(path, cv2.imencode(".jpg", predictor.draw(scene.image, det), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        found.append((path, len(det), len(scene.boxes)))
        H, W = scene.image.shape[:2]
        note = f"{W}x{H}, sliced at {side} px in {dt:.1f} s" if side else f"{W}x{H} in {dt:.1f} s"
    for path, n, m in found:
        print(f"{path}: {n} products found ({m} on the shelf)")
    if getattr(args, "store", True):
        print(f"  (the store shelf: {note})")
    print(f"annotated shelves saved in {out}/ (weights: {predictor.weights})")
    return 0
