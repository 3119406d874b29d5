"""Inference: :mod:`.predict` (the :class:`~detect.infer.predict.Predictor`), :mod:`.sources`
(images, folders, videos, streams as generators), :mod:`.results` (JSON lines, CSV, summary),
:mod:`.predict_cli` (``detect predict`` and ``detect demo``), :mod:`.export` (ONNX and
TorchScript, the SSD export head), :mod:`.ort_backend` (ONNX Runtime on the CPU) and
:mod:`.fuse` (BatchNorm folding)."""
