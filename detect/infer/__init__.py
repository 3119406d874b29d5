"""Inference: :mod:`.predict` (the :class:`~detect.infer.predict.Predictor`), :mod:`.sources`
(images, folders, videos, streams as generators), :mod:`.results` (JSON lines, CSV, summary),
:mod:`.predict_cli` (``detect predict`` and ``detect demo``), :mod:`.export` (ONNX and
TorchScript, the SSD export head; ONNX Runtime runs it through
:class:`detect.models.onnx_ssd.OnnxSSD`) and :mod:`.fuse` (BatchNorm folding)."""
