"""One photo's audit: detections -> rows -> facings, share of shelf, gaps -> compliance.

:func:`audit_detections` is the pure part (boxes in, :class:`AuditResult` out);
:func:`audit_image` runs a :class:`~detect.infer.predict.Predictor` first. The HTTP service and
``detect audit`` both call these.

Detections under ``conf`` (but above the predictor's own threshold) are *occupants*: something
stands there that the model is not sure of (a product turned or lying down, an unknown one), so
it closes a gap but counts as no product's facing (label -1 inside the rules, "unknown" in the
tables).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np

from detect.audit.compliance import Compliance, check, row_slots
from detect.audit.facings import Column, Facing, Share, columns, facings, share_of_shelf
from detect.audit.gaps import RATIO, Gap, find_gaps
from detect.audit.planned_gaps import planned_gaps
from detect.audit.planogram import Planogram
from detect.audit.rows import Rows, distinct, find_rows, mark_cut
from detect.structures import Detections

UNKNOWN = -1  # label of an occupant (see the module docstring)
DEFAULT_CONF = 0.25  # score of a product (detect audit --conf, POST /v1/audit's conf)
DEFAULT_OCCUPANCY_CONF = 0.1  # score of an occupant (--occupancy-conf, occupancy_conf)


@dataclass
class AuditResult:
    """The shelf facts of one photo.

    Attributes:
        source: where the photo came from ("" for an array).
        width, height: photo size in pixels.
        detections: all detections used (occupants included, see ``products``; a second box of
            one product is left out, :func:`~detect.audit.rows.distinct`).
        products (bool[K]): detection k is a product (score >= conf), not an occupant.
        rows, columns, facings, share, gaps: see :mod:`detect.audit.rows` ... :mod:`~detect.audit.gaps`.
        compliance: per-position verdicts when a planogram was given, else None.
    """

    source: str
    width: int
    height: int
    detections: Detections
    products: np.ndarray
    rows: Rows
    columns: list[list[Column]]
    facings: list[Facing]
    share: list[Share]
    gaps: list[Gap]
    compliance: Optional[Compliance] = None

    def to_dict(self) -> dict:
        det = self.detections
        rows = []
        for row, cols in zip(self.rows.rows, self.columns):
            d = row.to_dict()
            d["sequence"] = [det.classes[c.label] if c.label >= 0 else "unknown" for c in cols]
            rows.append(d)
        out = {
            "source": self.source, "width": self.width, "height": self.height,
            "products": int(self.products.sum()), "occupants": int((~self.products).sum()),
            "rows": rows,
            "facings": [{"row": f.row + 1, "product": f.name, "facings": f.facings, "units": f.units, "width": round(f.width, 1)}
                        for f in self.facings],
            "share_of_shelf": [{"product": s.name, "facings": s.facings, "width": round(s.width, 1),
                                "by_facings": round(s.by_facings, 4), "by_width": round(s.by_width, 4)} for s in self.share],
            "gaps": [g.to_dict() for g in self.gaps],
            "empty_facings": sum(g.facings for g in self.gaps),
            "detections": [dict(d, row=int(r) + 1 if r >= 0 else None, product=bool(p)) for d, r, p in zip(det.to_list(), self.rows.row_of, self.products)],
        }
        if self.compliance is not None:
            out["compliance"] = self.compliance.to_dict()
        return out

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def audit_detections(det: Detections, width: int, height: int, planogram: Optional[Planogram] = None, *,
                     conf: Optional[float] = None, shelf_edges: str = "products", ratio: float = RATIO,
                     source: str = "", planned: bool = True) -> AuditResult:
    """The audit of one photo's detections.

    Args:
        det: detections in the photo's pixels.
        conf: detections scored under it are occupants (None: every detection is a product).
        shelf_edges: "products" (the shelf ends at the outermost products of any row) or
            "image" (at the photo's left and right edges): where end-of-row gaps stop.
        ratio: the gap rule's ratio (:mod:`detect.audit.gaps`).
        planned: with a planogram, also the gaps it points at (:mod:`detect.audit.planned_gaps`).
    """
    if shelf_edges not in ("products", "image"):
        raise ValueError(f"shelf_edges must be 'products' or 'image', got {shelf_edges!r}")
    products = np.ones(len(det.boxes), bool) if conf is None else np.asarray(det.scores) >= conf
    keep = distinct(det.boxes, det.scores, products)
    if not keep.all():  # one product read twice is one product
        det = Detections(np.asarray(det.boxes)[keep], np.asarray(det.scores)[keep], np.asarray(det.labels)[keep], det.classes)
        products = products[keep]
    boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
    labels = np.where(products, det.labels, UNKNOWN).astype(np.int64)
    names = list(det.classes)
    rows = find_rows(boxes, anchors=products)
    mark_cut(rows, boxes, height)
    cols = columns(boxes, labels, rows)
    table = [f for f in facings(cols, labels, names) if f.label >= 0]
    edges = (0.0, float(width)) if shelf_edges == "image" else None
    gaps = find_gaps(cols, rows, boxes, names, shelf_x=edges, ratio=ratio, image_size=(int(width), int(height)))
    if planogram is not None and planned:
        gaps = planned_gaps(planogram, cols, rows, gaps, boxes, names, ratio=ratio, image_size=(int(width), int(height)))
    comp = check(planogram, row_slots(cols, gaps), names) if planogram is not None else None
    return AuditResult(source, int(width), int(height), det, products, rows, cols, table, share_of_shelf(table), gaps, comp)


def audit_image(predictor, image: np.ndarray, planogram: Optional[Planogram] = None, *, conf: Optional[float] = None,
                shelf_edges: str = "products", source: str = "") -> AuditResult:
    """Detect with ``predictor`` (a :class:`~detect.infer.predict.Predictor`) on one BGR uint8
    photo and audit it (see :func:`audit_detections`)."""
    det = predictor.predict([image])[0]
    h, w = image.shape[:2]
    return audit_detections(det, w, h, planogram, conf=conf, shelf_edges=shelf_edges, source=source)
