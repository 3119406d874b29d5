"""The one ONNX Runtime wrapper: an SSD's export head run by ONNX Runtime as a detector.

Two sources, one class (:class:`OnnxSSD`): an ``.onnx`` file ``detect export`` wrote (below), or
:meth:`OnnxSSD.of_model`, the graph of a live detector whose row in
:data:`detect.models.specs.MODEL_SPECS` has an export head (``decoded``): exported in memory by
:func:`detect.infer.export.export_head`, or its INT8 file (:mod:`detect.infer.quantize`), with
that detector's own selection (``model.postprocess``, its current settings). ONNX Runtime runs
the SSD's network 2-3x faster than eager PyTorch on a CPU (it fuses every convolution with its
activation and plans memory once); :class:`~detect.infer.predict.Predictor` picks it on a CPU
(``backend`` "auto" or "onnxruntime"). Fast R-CNN stays on PyTorch (its proposal stage has
per-image shapes).

The exported file:
The file holds the SSD's export head (network, softmax, box decoding; ``SSD.decoded``) and, as
metadata, what a checkpoint keeps in its config: ``classes`` (JSON), ``imgsz``, ``mean``/``std``.
:class:`OnnxSSD` follows the eval contract of the models (``model(Tensor[B, 3, S, S]) ->
list[dict(boxes, scores, labels)]``) with the SSD's own selection
(:func:`~detect.models.postprocess.select_detections`) and its postprocess attributes, so
``detect predict`` and ``detect val`` take the file like a checkpoint. The selection settings
are not in the file: they start at :class:`~detect.config.ModelConfig`'s defaults and are set with
:func:`~detect.models.build.set_postprocess` like a checkpoint's.

:func:`ort_session` is the one place ONNX Runtime sessions are configured, and
:func:`run_decoded` the one place they are run.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from detect.config import ExperimentConfig, ModelConfig, Preprocess
from detect.checks import model_size_problem
from detect.errors import UsageError
from detect.readers import parse_json
from detect.models.postprocess import select_detections

REQUIRED_METADATA = ("classes", "imgsz", "mean", "std")


def looks_like_onnx(head: bytes) -> bool:
    """Whether a file's first bytes are an ONNX ``ModelProto``: field 1 (``ir_version``, a
    varint) first, as every exporter writes it; no text, image or pickle starts with 0x08."""
    return len(head) >= 2 and head[0] == 0x08 and head[1] < 0x80


def default_threads() -> int:
    """Operator threads for ONNX Runtime: torch's setting (every core unless set). A video's
    decode and encode threads need no core of their own: ONNX Runtime's threads sleep between
    operators (no spinning), and on 2 cores a 720p video ran at 54 fps on 2 threads against 45
    on 1 (bench/RESULTS.md; an earlier 1-thread default came from a loaded machine)."""
    return max(1, torch.get_num_threads())


def ort_session(model: bytes | str, threads: Optional[int] = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for a serialized model or a file path."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between operators: the decode and encode threads need those cores
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


@contextmanager
def torch_on_one_thread() -> Iterator[None]:
    """Run torch's own ops on the calling thread only, inside: for the small ops around an ONNX
    Runtime run (input conversion, score threshold, NMS). With torch's OpenMP pool, the threads
    woken for a 96k-element compare keep spinning after it and took the cores from ONNX
    Runtime's threads: batch-1 INT8 inference measured 15.5 ms with torch on 2 threads against
    12.2 ms on one (2 cores). The setting is restored on exit."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def run_decoded(session: Any, images: torch.Tensor, input_name: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
    """The export head's outputs for a batch Tensor[B, 3, S, S]: boxes Tensor[B, N, 4] and
    scores Tensor[B, N, K], on the CPU (what the SSD's selection takes)."""
    x = np.ascontiguousarray(images.detach().float().cpu().numpy())  # channels_last -> NCHW for ONNX
    boxes, scores = session.run(["boxes", "scores"], {input_name: x})  # (B, N, 4), (B, N, K)
    return torch.from_numpy(boxes), torch.from_numpy(scores)


class OnnxSSD(nn.Module):
    """An SSD's export head on ONNX Runtime as a detector in eval mode (no parameters; runs on the
    CPU and returns its detections on the device of the images): an exported file (``path``), or
    a live model's graph (:meth:`of_model`)."""

    spec_name = "ssd"  # its row in detect.models.specs.MODEL_SPECS: the outputs are the SSD's export head
    select: Optional[Callable[..., list]] = None  # of_model: the live detector's postprocess (not a submodule)

    def __init__(self, path: str | Path, threads: Optional[int] = None) -> None:
        super().__init__()
        self.path = str(path)
        try:
            self.session = ort_session(self.path, threads)
        except ImportError:
            raise UsageError(f"{path} is an ONNX model; running it needs onnxruntime (pip install onnxruntime)") from None
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise UsageError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        outputs = [o.name for o in self.session.get_outputs()]
        missing = [k for k in REQUIRED_METADATA if k not in meta]
        if missing or outputs[:2] != ["boxes", "scores"]:
            raise UsageError(f"{path} is an ONNX model, but not one `detect export` wrote (no {missing or 'boxes/scores outputs'}); "
                             "export the checkpoint with `detect export`")
        self.classes, self.preprocess = read_metadata(meta, path)
        self.input = self.session.get_inputs()[0].name
        check_shapes(self.session, path, self.preprocess.imgsz, len(self.classes))
        d = ModelConfig()
        self.score_thresh, self.nms_thresh = d.score_thresh, d.nms_thresh
        self.pre_nms_topk, self.max_det = d.pre_nms_topk, d.max_det

    @classmethod
    def of_model(cls, model: nn.Module, graph: bytes | str | Path, threads: Optional[int] = None) -> "OnnxSSD":
        """The export head ``graph`` (bytes, or a file) of the live detector ``model``, selected by
        ``model.postprocess`` with its current settings (``set_postprocess`` on ``model`` applies),
        so both backends return the same boxes (to float rounding, tested)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.graph = graph if isinstance(graph, bytes) else str(graph)
        self.path = "the in-memory export" if isinstance(graph, bytes) else str(graph)
        self.session = ort_session(self.graph, threads)
        self.input = self.session.get_inputs()[0].name
        self.select = model.eval().postprocess
        self.classes = [str(k) for k in range(int(model.num_classes))]
        return self

    def set_threads(self, threads: int) -> None:
        """Run on ``threads`` operator threads from now on (a new session, unless the current one
        has them: ONNX Runtime fixes its thread pool when a session is made)."""
        if self.session.get_session_options().intra_op_num_threads != threads:
            self.session = ort_session(getattr(self, "graph", self.path), threads)

    def config(self) -> ExperimentConfig:
        """The config a checkpoint of this model would hold, as far as the file says."""
        cfg = ExperimentConfig(preprocess=self.preprocess)
        cfg.model.name, cfg.model.pretrained, cfg.model.num_classes = "ssd", "none", len(self.classes)
        return cfg

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        with torch_on_one_thread():  # ONNX Runtime's threads have the cores
            try:
                boxes, scores = run_decoded(self.session, images, self.input)
            except MemoryError:
                raise UsageError(f"{self.path}: running the model ran out of memory; is it the file `detect export` "
                                 "wrote?") from None
            except Exception as e:  # onnxruntime's own types: a graph that fails at run time (a huge ConstantOfShape)
                raise UsageError(f"{self.path}: ONNX Runtime cannot run the model ({type(e).__name__}: "
                                 f"{str(e)[:300]})") from None
            if scores.ndim != 3 or boxes.shape[:2] != scores.shape[:2] or scores.shape[-1] != len(self.classes):
                raise UsageError(f"{self.path}: outputs boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)} do not "
                                 f"fit its {len(self.classes)} classes; export the checkpoint again")
            dets = self.postprocess(boxes, scores)
        return [{k: v.to(images.device) for k, v in d.items()} for d in dets]

    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The SSD's selection with this model's current settings (:meth:`of_model`: the live model's)."""
        if self.select is not None:
            return self.select(boxes, scores)
        return select_detections(boxes, scores, self.score_thresh, self.nms_thresh, self.pre_nms_topk, self.max_det)


def read_metadata(meta: dict[str, str], path: str | Path) -> tuple[list[str], Preprocess]:
    """Class names and preprocessing from an exported file's metadata, each within limits
    (:func:`detect.checks.model_size_problem`): nested or empty ``classes`` gave a
    RecursionError or an IndexError, ``imgsz`` 100000 a 27.9 GiB allocation. Raises a
    :class:`UsageError` naming the file and the field."""
    def bad(what: str) -> UsageError:
        return UsageError(f"{path}: its metadata cannot be used ({what}); export the checkpoint again with `detect export`")

    try:
        classes, mean, std = (parse_json(meta[k]) for k in ("classes", "mean", "std"))
        imgsz = parse_json(meta["imgsz"])
    except ValueError as e:
        raise bad(f"not JSON: {str(e)[:200]}") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("'classes' must be a list of names")
    problem = model_size_problem(imgsz, len(classes))
    if problem:
        raise bad(problem)
    for name, v in (("mean", mean), ("std", std)):
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                              and math.isfinite(x) for x in v)):
            raise bad(f"'{name}' must be 3 finite numbers")
        if name == "std" and min(v) <= 0:
            raise bad("'std' must be positive")
    try:  # files exported before letterboxing and the learned scale lack these: stretch, scale unknown
        object_size = float(meta.get("object_size", 0.0))
    except ValueError:
        raise bad("'object_size' must be a number") from None
    if not (math.isfinite(object_size) and 0.0 <= object_size <= imgsz):
        raise bad(f"'object_size' must be in [0, imgsz], got {meta.get('object_size')!r}")
    resize = "letterbox" if meta.get("resize") == "letterbox" else "stretch"
    return classes, Preprocess(imgsz=imgsz, mean=tuple(mean), std=tuple(std), resize=resize, object_size=object_size)


def check_shapes(session: Any, path: str | Path, imgsz: int, num_classes: int) -> None:
    """The graph's declared input ``[B, 3, S, S]`` and scores ``[B, N, K]`` agree with the
    metadata where their sizes are fixed numbers (a symbolic batch axis is fine)."""
    shape = list(session.get_inputs()[0].shape)
    fixed = [d if isinstance(d, int) else None for d in shape]
    if len(shape) != 4 or fixed[1] not in (3, None) or any(d not in (imgsz, None) for d in fixed[2:]):
        raise UsageError(f"{path}: its input shape {shape} disagrees with its metadata (imgsz {imgsz}: expected "
                         f"[batch, 3, {imgsz}, {imgsz}]); export the checkpoint again")
    scores = [o for o in session.get_outputs() if o.name == "scores"][0].shape
    if len(scores) != 3 or (isinstance(scores[-1], int) and scores[-1] != num_classes):
        raise UsageError(f"{path}: its scores output {list(scores)} disagrees with its {num_classes} classes; "
                         "export the checkpoint again")


def load_onnx(path: str | Path, device: Any = "cpu") -> tuple[OnnxSSD, ExperimentConfig, list[str]]:
    """``(model, config, classes)`` of an exported file, like ``checkpoint.load_model``."""
    model = OnnxSSD(path)
    return model.to(device).eval(), model.config(), list(model.classes)
