"""``detect predict SOURCE --ray ADDRESS``: batch inference over a Ray cluster, writing the same
``detections.jsonl``, ``detections.csv``, ``counts.csv`` and ``summary.json`` as ``detect predict``.

    ray start --head                                   # or an existing cluster (KubeRay, Anyscale ...)
    detect predict /nfs/photos --ray auto --save-json --save-csv --save-dir runs/shelves
    detect predict photos.txt --ray ray://head:10001 --ray-actors 32 --save-json
    detect predict photos/ --ray local --save-csv      # a Ray instance on this machine only

How: the photo paths become a Ray Data dataset (:func:`ray.data.from_items`, in the order
``detect predict`` reads them); ``map_batches`` sends blocks of :data:`BLOCK` paths to a pool of
actors (:class:`PredictBatch`, fewer per call when the photos are few), each holding one :class:`~detect.infer.predict.Predictor`
loaded once, spread over the nodes; each actor reads its photos itself with
:func:`~detect.infer.sources.read_image` (the reader and pixel limit of ``detect predict``: no
image bytes pass through the driver) and runs ``Predictor.predict`` on ``--batch`` of them at a
time, as ``detect predict`` does. The detections stream back (order preserved) and are written
here by :class:`~detect.infer.results.ResultWriter`, so the files are ``detect predict``'s, line
for line. The weights (and the ``--int8``/``--onnx`` graph, quantized once, here) travel to the
actors through Ray's object store: nodes need the package installed
(``pip install 'retail-detect[ray]'``) and the photos at the same paths (a shared file system),
not the weights. Annotated copies are not written (millions of them are rarely wanted; run
``detect predict`` on the photos you want to look at).

Why Ray Data and not Spark: the work is a Python model over files, not a table over a data
lake. Ray Data's ``map_batches`` with an actor pool loads the model once per actor and streams
blocks through it with backpressure; CPU and GPU actors are one argument (``num_gpus``); the
cluster is ``pip install ray`` (no JVM), and the same code runs on a laptop (``--ray local``), a
test's two-node cluster and a cloud cluster. Spark runs Python through pandas UDFs in worker
processes fed over Arrow from the JVM, with the model reloaded per partition (or hidden in a
global); it is the better choice only when the photos' metadata already lives in Spark tables.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from detect.errors import UsageError
from detect.infer.results import ResultWriter, Summary
from detect.infer.sources import MAX_PIXELS, VIDEO_EXTS, Frame, expand, is_stream, read_image
from detect.structures import Detections

BLOCK = 16  # photos per actor call (one Ray task each: amortises its overhead; decoded --batch at a time)
RAY_EXTRA = "pip install 'retail-detect[ray]'"
COLUMNS = ("index", "path", "width", "height", "error", "boxes", "scores", "labels", "node")


class PredictBatch:
    """The ``map_batches`` actor: one Predictor, loaded once from the weights' bytes, run on
    blocks of ``{"index", "path"}`` rows. Returns per photo its size, its detections as raw
    float32/int64 bytes (exact: the writer rounds them as ``detect predict`` does), an error
    ("" when read) and the Ray node it ran on. Usable without Ray (tests call it directly).

    Args:
        weights: ``(file name, bytes)`` of the checkpoint or ``.onnx`` file.
        graph: ``(file name, bytes)`` of the ONNX graph to run instead (``--int8``, ``--onnx``), or None.
        options: :class:`~detect.infer.predict.Predictor` keywords (device, conf, slicing ...).
        batch: photos per ``Predictor.predict`` call; max_pixels: the pixel limit of the reader.
    """

    def __init__(self, weights: tuple[str, bytes], graph: Optional[tuple[str, bytes]], options: dict,
                 batch: int = 1, max_pixels: int = MAX_PIXELS) -> None:
        from detect.infer.predict import Predictor

        self._dir = tempfile.TemporaryDirectory(prefix="detect-ray-")
        path = _write(Path(self._dir.name), *weights)
        onnx = _write(Path(self._dir.name), *graph) if graph else None
        self.predictor = Predictor(path, onnx=onnx, **options)
        self.batch, self.max_pixels = max(1, int(batch)), int(max_pixels)
        self.node = _node_id()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {k: [] for k in COLUMNS}
        paths = [str(p) for p in rows["path"]]
        for start in range(0, len(paths), self.batch):  # decoded --batch at a time: flat memory
            chunk = paths[start:start + self.batch]
            read = [read_image(p, self.max_pixels) for p in chunk]
            good = [im for im, _ in read if im is not None]
            dets = iter(self.predictor.predict(good) if good else [])
            for k, (path, (image, error)) in enumerate(zip(chunk, read)):
                det = next(dets) if image is not None else None
                h, w = image.shape[:2] if image is not None else (0, 0)
                out["index"].append(int(rows["index"][start + k]))
                out["path"].append(path)
                out["width"].append(w)
                out["height"].append(h)
                out["error"].append(error or "")
                out["boxes"].append(det.boxes.astype(np.float32).tobytes() if det is not None else b"")
                out["scores"].append(det.scores.astype(np.float32).tobytes() if det is not None else b"")
                out["labels"].append(det.labels.astype(np.int64).tobytes() if det is not None else b"")
                out["node"].append(self.node)
        return {"index": np.asarray(out["index"], np.int64), "path": np.asarray(out["path"], object),
                "width": np.asarray(out["width"], np.int64), "height": np.asarray(out["height"], np.int64),
                "error": np.asarray(out["error"], object), "boxes": np.asarray(out["boxes"], object),
                "scores": np.asarray(out["scores"], object), "labels": np.asarray(out["labels"], object),
                "node": np.asarray(out["node"], object)}


def rows_of(batch: dict[str, np.ndarray], classes: list[str]) -> Iterator[tuple[Frame, Optional[Detections], tuple[int, int], str]]:
    """``(frame, detections or None, (h, w), node)`` of every photo in an output batch of
    :class:`PredictBatch` (frames carry no image: the writer is given the size)."""
    for i in range(len(batch["index"])):
        path, error = str(batch["path"][i]), str(batch["error"][i])
        frame = Frame(None, path, int(batch["index"][i]), None, "image", 0.0, None, error or None)
        det = None
        if not error:
            boxes = np.frombuffer(batch["boxes"][i], np.float32).reshape(-1, 4)  # (N*4,) -> (N, 4)
            det = Detections(boxes.copy(), np.frombuffer(batch["scores"][i], np.float32).copy(),
                             np.frombuffer(batch["labels"][i], np.int64).copy(), classes)
        yield frame, det, (int(batch["height"][i]), int(batch["width"][i])), str(batch["node"][i])


def still_photos(source: str) -> list[str]:
    """The photos of ``source`` in ``detect predict``'s order; videos and streams are refused."""
    if is_stream(source):
        raise UsageError(f"--ray reads photos (a folder, glob or .txt list), not a stream: {source}")
    files, _ = expand(source)
    videos = [f for f in files if Path(f).suffix.lower() in VIDEO_EXTS]
    if videos:
        raise UsageError(f"--ray reads still photos; {len(videos)} video file(s) in the source (first: {videos[0]}): "
                         "run detect predict on videos without --ray")
    return files


def run_ray(args: argparse.Namespace, predictor, files: list[str], save_dir: Path, slicing: dict) -> Summary:
    """Run ``predictor``'s settings (``slicing``: its slicing keywords) over ``files`` on the Ray
    cluster at ``args.ray`` and write the tables of ``detect predict`` into ``save_dir`` (see
    the module docstring); ``detect predict --ray`` (:func:`detect.infer.predict_cli.cmd_predict`)."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise UsageError(f"--ray needs Ray Data: {RAY_EXTRA} ({e})") from None
    options = actor_options(args, predictor, slicing)
    weights = (Path(predictor.weights).name, Path(predictor.weights).read_bytes())
    graph = (Path(predictor.graph).name, Path(predictor.graph).read_bytes()) if predictor.graph else None
    save_json, save_csv = args.save_json, args.save_csv
    if not (save_json or save_csv):
        print("--ray writes tables, not annotated copies: writing detections.jsonl (add --save-csv for CSV)", file=sys.stderr)
        save_json = True
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=args.ray, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UsageError(f"--ray {args.ray}: cannot connect to a Ray cluster ({e})") from None
    summary = Summary()
    writer = ResultWriter(save_dir, predictor.classes, save_json, save_csv)
    nodes: dict[str, int] = {}
    gpu = options["device"] != "cpu"
    threads = options["threads"] or 1
    actors = None
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # the files in detect predict's order
        ctx.enable_progress_bars = not args.no_progress
        actors = args.ray_actors or _actors(ray.cluster_resources(), gpu, threads)
        ds = ray.data.from_items([{"index": i, "path": f} for i, f in enumerate(files)])
        ds = ds.map_batches(PredictBatch, fn_constructor_kwargs={"weights": weights, "graph": graph, "options": options,
                                                                  "batch": args.batch or 1, "max_pixels": args.max_pixels},
                            batch_size=block_size(len(files), actors), batch_format="numpy",
                            # actors spread over the nodes (Ray Data's default); one block at a time each, so a
                            # block goes to an idle actor, not to a busy one on the node that holds the paths
                            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                            num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for frame, det, size, node in rows_of(batch, predictor.classes):
                summary.add(frame, det)
                writer.write(frame, det, size=size)
                nodes[node] = nodes.get(node, 0) + 1
                if det is None:
                    print(f"warning: {frame.path}: {frame.error}; skipped", file=sys.stderr)
    finally:
        summary.outputs += [str(p) for p in writer.close()]
        summary.finish()
        summary.extra["ray"] = {"address": args.ray, "actors": actors, "images_per_node": nodes}
        summary.save(save_dir / "summary.json")
        if started_here:
            ray.shutdown()
    return summary


def block_size(photos: int, actors: int) -> int:
    """Photos per actor call: :data:`BLOCK`, fewer when that would leave actors idle (ten
    photos on two actors: five each)."""
    return max(1, min(BLOCK, -(-photos // max(1, actors))))


def actor_options(args: argparse.Namespace, predictor, slicing: dict) -> dict:
    """The Predictor keywords every actor is built with: ``detect predict``'s options, the
    device as a kind (each actor gets its own GPU), one ONNX Runtime thread unless ``--threads``."""
    device = "cpu" if predictor.device.type == "cpu" else "cuda"
    return {"device": device, "half": args.half, "conf": args.conf, "iou": args.iou, "max_det": args.max_det,
            "classes": args.classes, "backend": args.backend, "threads": args.threads or (1 if device == "cpu" else None),
            **slicing}


def _actors(resources: dict[str, Any], gpu: bool, threads: int) -> int:
    """Actors for a cluster: one per GPU, or one per ``threads`` CPUs."""
    if gpu:
        n = int(resources.get("GPU", 0))
        if n < 1:
            raise UsageError("--ray with --device cuda: the cluster has no GPUs (use --device cpu)")
        return n
    return max(1, int(resources.get("CPU", 1)) // threads)


def _write(folder: Path, name: str, data: bytes) -> str:
    path = folder / Path(name).name
    path.write_bytes(data)
    return str(path)


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except ImportError:
        return "local"
