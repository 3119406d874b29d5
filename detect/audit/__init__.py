"""Shelf facts from detections: rows, facings, gaps, planogram compliance, share of shelf and
unique products in a video (no model code: boxes in, facts out).

Shorthand used in every module here: N boxes, float32[N, 4] xyxy 0-based pixels (x2/y2 the
exclusive right/bottom edge), labels int64[N] 0-based into the class names; R shelf rows,
numbered 0 from the top of the photo; C columns (facings) of a row, left to right.

``detect audit`` (:mod:`detect.audit.audit_cli`) runs a :class:`~detect.infer.predict.Predictor`
and these rules; :func:`detect.audit.audit.audit_image` is the one call for a single photo.
"""
