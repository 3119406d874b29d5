"""``detect serve``: the HTTP service (:mod:`~detect.serve.app`), its web page and the
labelling-tool backends. Everything here detects through :class:`detect.infer.predict.Predictor`,
the code path of ``detect predict``; the only thing taken from ``detect.models`` is
``set_postprocess``, the one way to change a loaded detector's NMS IoU between batches."""
