"""The annotated audit photo: products (boxes and names), each row's base line and number,
gaps as hatched red boxes with the count of empty facings, occupants in grey."""

from __future__ import annotations

import cv2
import numpy as np

from detect.viz.draw import class_color, draw_detections, draw_label

GAP = (40, 40, 230)  # BGR red
LINE = (230, 160, 40)  # BGR blue-ish: base lines
GREY = (150, 150, 150)


def _sizes(img: np.ndarray, boxes: np.ndarray) -> tuple[int, int]:
    """Line width and label font size: by the photo's size, but no larger than the products
    allow (a store shelf of 200 products: labels a fifth of a product's height, not 70 px)."""
    H, W = img.shape[:2]
    lw = max(round((H + W) / 2 * 0.003), 1)
    fs = max(round((H + W) / 2 * 0.02), 11)
    if len(boxes):
        h = float(np.median(np.asarray(boxes)[:, 3] - np.asarray(boxes)[:, 1]))
        lw = max(1, min(lw, round(h * 0.03)))
        fs = max(11, min(fs, round(h * 0.2)))
    return lw, fs


def draw_audit(image: np.ndarray, result, copy: bool = True) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with ``result`` (an :class:`~detect.audit.audit.AuditResult`) drawn."""
    img = image.copy() if copy else image
    det, keep = result.detections, result.products
    H, W = img.shape[:2]
    lw, fs = _sizes(img, det.boxes)
    for b in np.round(det.boxes[~keep]).astype(int):
        cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), GREY, lw)
    draw_detections(img, det.boxes[keep], det.scores[keep], det.labels[keep], det.classes, show_score=False, copy=False,
                    line_width=lw, font_size=fs)
    for g in result.gaps:  # a red tint over each gap (only there: a 12-MP photo is not copied)
        x1, y1, x2, y2 = (int(round(v)) for v in g.box)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
        if x2 > x1 and y2 > y1:
            roi = img[y1:y2, x1:x2]
            cv2.addWeighted(roi, 0.65, np.full_like(roi, GAP), 0.35, 0, dst=roi)
    for g in result.gaps:
        for s in g.slots:
            x1, y1, x2, y2 = (int(round(v)) for v in s)
            cv2.rectangle(img, (x1, y1), (x2, y2), GAP, lw + 1)
            cv2.line(img, (x1, y1), (x2, y2), GAP, lw)
            cv2.line(img, (x1, y2), (x2, y1), GAP, lw)
        draw_label(img, f"gap x{g.facings}", int(g.box[0]), int(g.box[1]), GAP, fs)
    for row in result.rows.rows:
        x0, x1 = int(row.x0), int(row.x1)
        cv2.line(img, (x0, int(row.base_y(x0))), (x1, int(row.base_y(x1))), LINE, lw * 2)
        draw_label(img, f"row {row.index + 1}" + (" (empty)" if row.empty else ""), x0, int(row.base_y(x0)), LINE, fs, above=False)
    return img


def draw_tracks(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, ids: np.ndarray, names: list[str],
                unique: int | None = None, copy: bool = True) -> np.ndarray:
    """Boxes labelled ``"<name> #<track id>"`` (unconfirmed tracks: the name alone), and the
    running count of unique products in the top-left corner."""
    img = image.copy() if copy else image
    lw, fs = _sizes(img, boxes)
    for b, l, t in zip(np.round(boxes).astype(int), labels, ids):
        color = class_color(int(l))
        cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), color, lw)
        name = names[int(l)] if 0 <= int(l) < len(names) else str(int(l))
        draw_label(img, f"{name} #{int(t)}" if t >= 0 else name, int(b[0]), int(b[1]), color, fs)
    if unique is not None:
        draw_label(img, f"unique products: {unique}", 0, 0, (30, 30, 30), fs, above=False)
    return img
