"""INT8 CPU inference: static quantization of the SSD's network with ONNX Runtime (QDQ format).

    path = int8_model_for("weights/ssd_lite0_synth.pt", calib="datasets/shelves")  # cached
    quantize_ssd(float_onnx, "model.int8.onnx", calibration_images("shelves/", 320), 320)

What is quantized, and what is not. The float graph is the one ``detect export`` writes
(:mod:`detect.infer.export`: network, softmax, box decoding). Its ONNX node names carry the
PyTorch module scope they were traced in: the layers of the network sit in a submodule scope
(``/backbone/...``, ``/extras.0/...``, ``/heads.3/...``), the glue and the decoding at the top
(``/Sub`` of the input normalisation, the head outputs' ``Transpose``/``Reshape``/``Concat``,
the softmax, ``Exp`` of the box decoding, the clip). Only the submodule nodes are quantized
(:func:`network_nodes`): int8 weights per output channel, uint8 activations whose ranges are
calibrated (min/max) on the user's images; every top-level node stays float, so the logits and
box codes are dequantized once at the end of each head and boxes and scores are computed in
float as before (the same two outputs: :func:`detect.infer.export.postprocess` and NMS apply).

Weights are quantized to 7 bits (``reduce_range``): x86 CPUs without VNNI (AVX2 only, like
AMD Zen 3) multiply uint8 by int8 into saturating int16 pairs, and an exported file may run on
such a CPU; the cost is below the calibration noise.

Calibration images come from ``--calib DATA``: a dataset (:func:`detect.data.spec.resolve_data`,
its train split) or anything ``detect predict`` reads as images (folder, glob, .txt list);
at most ``limit`` (200) of them, spread evenly over the sorted list. Without ``--calib`` the
synthetic shelves the shipped weights were trained on are rendered (right only for them: other
weights get a note asking for their training images). They go through the same preprocessing
as :class:`~detect.infer.predict.Predictor` on the CPU (:func:`~detect.infer.preprocess.cpu_input`).

:func:`int8_model_for` caches the quantized file under ``$RETAIL_DETECT_CACHE/int8`` or ``$XDG_CACHE_HOME/retail-detect/int8``
(``~/.cache``), keyed by the checkpoint's bytes, the calibration source and the versions of
this code and onnxruntime, so ``detect predict --int8`` quantizes once per checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from detect.data.images import IMAGE_EXTS
from detect.data.formats.table import detect_layout
from detect.errors import UsageError
from detect.infer.export import ExportableSSD, load_exportable, onnx_export
from detect.infer.preprocess import cpu_input
from detect.infer.sources import expand, read_image
from detect.infer.weights import DEFAULT_WEIGHTS, resolve_weights

QUANT_VERSION = 1  # bump when the quantization recipe changes: cached files are rebuilt
DEFAULT_CALIB_IMAGES = 200
SYNTH_CALIB_SEED = 1  # the seed the shipped weights were trained on (weights/README.md)


def network_nodes(model) -> list[str]:
    """Names of the nodes traced inside a submodule of the SSD (``/backbone/...``,
    ``/heads.0/...``): the network's layers, the part to quantize. Top-level nodes (input
    normalisation, the head outputs' reshapes, softmax, box decoding) are left out."""
    return [n.name for n in model.graph.node if n.name.startswith("/") and n.name.count("/") >= 2]


def simplify(float_model: bytes):
    """The graph after ONNX Runtime's basic (standard-op) rewrites, as a ``ModelProto``: constants
    folded and the backbone's explicit ``Pad`` nodes (TF "same" padding before stride-2 convs)
    merged into their convolutions. Quantized as exported, each Pad would sit between a
    DequantizeLinear and a QuantizeLinear in float. Node names survive the rewrite."""
    import tempfile

    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3  # not the unused-initializer warnings of the folded constants
    with tempfile.TemporaryDirectory(prefix="detect-int8-") as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        ort.InferenceSession(float_model, so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath)


def calibration_images(calib: Optional[str], imgsz: int, limit: int = DEFAULT_CALIB_IMAGES) -> tuple[Iterator[np.ndarray], str]:
    """BGR uint8 calibration images and a description of where they come from (part of the
    cache key). ``calib``: a dataset (its train split) or an image folder/glob/.txt list; None:
    rendered synthetic shelves. Raises :class:`~detect.errors.UsageError` when it names no image."""
    if limit < 1:
        raise UsageError(f"--calib-images must be >= 1, got {limit}")
    if calib is None:
        from detect.data.synth import render_scene

        n = min(limit, 64)  # rendering costs ~50 ms an image; 64 cover every product and camera kind
        return (render_scene(SYNTH_CALIB_SEED, 100_000 + i, size=imgsz).image for i in range(n)), f"synthetic shelves seed {SYNTH_CALIB_SEED} x{n}"
    files = _calibration_files(calib)
    if len(files) > limit:  # spread over the list (sorted, so classes in folders all get a share)
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit)]

    def read() -> Iterator[np.ndarray]:
        for f in files:
            image, error = read_image(f)
            if image is None:
                print(f"warning: calibration image skipped: {error}", file=sys.stderr)
                continue
            yield image

    return read(), f"{Path(calib).resolve()} x{len(files)}"


def _calibration_files(calib: str) -> list[str]:
    if detect_layout(calib) is not None:  # a dataset: the images of its train split
        from detect.data.spec import resolve_data

        try:
            cache = resolve_data(calib, "train")
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:  # DatasetError included
            raise UsageError(f"--calib {calib}: cannot read the dataset's train split: {e}") from None
        files = sorted(r.image for r in cache.records if r.image)
    else:
        files = [f for f in expand(calib)[0] if Path(f).suffix.lower() in IMAGE_EXTS]
    if not files:
        raise UsageError(f"--calib {calib}: no images found (pass a dataset, or a folder, glob or .txt list of images)")
    return files


class ImageCalibration:
    """An ONNX Runtime ``CalibrationDataReader``: one ``{"images": float32[1, 3, S, S]}`` feed
    per image, preprocessed as ``Predictor`` does on the CPU. Counts what it gave (``count``)."""

    def __init__(self, images: Iterable[np.ndarray], imgsz: int, resize: str = "letterbox") -> None:
        self.images = iter(images)
        self.imgsz = int(imgsz)
        self.resize = resize
        self.count = 0

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        image = next(self.images, None)
        if image is None:
            return None
        self.count += 1
        return {"images": np.ascontiguousarray(cpu_input([image], self.imgsz, self.resize).numpy())}


def quantize_ssd(float_model: bytes | str | Path, output: str | Path, images: Iterable[np.ndarray], imgsz: int,
                 meta: Optional[dict] = None) -> Path:
    """Quantize the network nodes of an exported SSD graph (bytes or a file) and write the int8
    ONNX file atomically, with ``meta`` (plus ``quantization``) as metadata. Returns ``output``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = simplify(float_model if isinstance(float_model, bytes) else Path(float_model).read_bytes())
    nodes = network_nodes(model)
    if not nodes:
        raise ValueError("no network nodes found to quantize: the graph was not exported by detect.infer.export")
    reader = ImageCalibration(images, imgsz, "letterbox" if (meta or {}).get("resize") == "letterbox" else "stretch")

    class _Reader(CalibrationDataReader):  # the ABC onnxruntime checks for
        def get_next(self):
            return reader.get_next()

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.part")
    logging.disable(logging.WARNING)  # quantize_static's advice to run its pre-processing: simplify() did
    try:
        quantize_static(
            model, str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        logging.disable(logging.NOTSET)
    if reader.count == 0:
        tmp.unlink(missing_ok=True)
        raise UsageError("no calibration image could be read")
    proto = onnx.load(str(tmp))
    info = {"format": "QDQ", "weights": "int8 per channel, 7-bit range", "activations": "uint8 min/max",
            "calibration_images": reader.count, "quantized_nodes": len(nodes), "version": QUANT_VERSION}
    for k, v in {**(meta or {}), "quantization": json.dumps(info)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(proto, str(tmp))
    tmp.replace(output)
    return output


def export_int8(wrapper: ExportableSSD, meta: dict, output: str | Path, calib: str | None, calib_images: int,
                opset: int = 17) -> Path:
    """Write the INT8 ONNX file of ``detect export --int8``: the graph
    :func:`~detect.infer.export.onnx_export` traces, its network quantized after calibration on
    ``calib``; the same inputs, outputs and metadata (plus ``quantization`` and ``calibration``)."""
    S = int(meta["imgsz"])
    images, where = calibration_images(calib, S, calib_images)
    buf = io.BytesIO()
    onnx_export(wrapper, S, buf, opset)
    return quantize_ssd(buf.getvalue(), output, images, S, {**meta, "calibration": where})


def cache_dir() -> Path:
    """Where quantized files are cached: ``$RETAIL_DETECT_CACHE/int8`` when set (the variable
    that moves the dataset caches moves this one too), else ``$XDG_CACHE_HOME/retail-detect/int8``
    (``~/.cache``)."""
    env = os.environ.get("RETAIL_DETECT_CACHE")
    if env:
        return Path(env).expanduser() / "int8"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "retail-detect" / "int8"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def int8_model_for(weights: str | Path | None, calib: Optional[str] = None, limit: int = DEFAULT_CALIB_IMAGES,
                   log=sys.stderr) -> Path:
    """The int8 ONNX file of a checkpoint: from the cache, else exported, calibrated, quantized
    and cached (a few seconds plus one pass over the calibration images)."""
    import onnxruntime

    path = resolve_weights(weights)
    calib_key = str(Path(calib).resolve()) if calib else "synthetic"
    key = hashlib.sha256(json.dumps([_file_digest(path), calib_key, limit, QUANT_VERSION, onnxruntime.__version__]).encode()).hexdigest()[:20]
    out = cache_dir() / f"{path.stem}-{key}.int8.onnx"
    if out.is_file():
        return out
    if calib is None and path.resolve() != DEFAULT_WEIGHTS.resolve():
        print("note: calibrating on synthetic shelves; pass --calib with this model's training images for better INT8 accuracy",
              file=log)
    wrapper, meta = load_exportable(path)
    print(f"quantizing {path} to INT8 (calibration: {calib or 'synthetic shelves'}) -> {out}", file=log)
    return export_int8(wrapper, meta, out, calib, limit)
