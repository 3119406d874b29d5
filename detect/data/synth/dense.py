"""Dense store shelves: a whole shelf section in one high-resolution photo, laid out from a
planogram, with the truth a shelf audit needs.

A store photo is not a product photo: 8-12 megapixels, 100-300 products of many kinds, each
0.2-1% of the image. :func:`render_dense` draws one from a planogram it invents first:

    planogram   shelves (rows, top to bottom) -> positions (left to right) -> product, facings
    photo       each position's facings stand side by side on its shelf (short products in
                stacks); some facings are left empty on purpose (gaps: out of stock) and some
                are filled with another product (misplaced); a tilted, keystoned hand-held
                camera, uneven light, blur and noise (detect.data.synth.camera)
    truth       the planogram, each shelf's base line, every product with its shelf, position,
                facing and instance id, the gaps and the misplaced products, all in photo pixels

Shorthand: H, W photo size; N products kept (visible enough, see camera.py); G gaps.
Boxes are float32 xyxy, 0-based pixels, x2/y2 exclusive, like every box in the project.
A facing is one column of a position: a stack of chocolate bars is one facing.

``detect synth OUT --dense --size 4000`` writes these as a VOC dataset (4000x3000 photos) with
``truth/<stem>.json`` beside the annotations (:func:`truth_json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from detect.data.synth.camera import _blur, _homography, _light, visible_scene, warp
from detect.data.synth.products import CLASSES, PRODUCTS, draw_product
from detect.data.synth.scene import Scene, _Canvas, _plank, texture

MAX_PRODUCTS = 4000  # id map is uint16; a 12-MP section holds 100-300
GAP_RATE = 0.06  # share of facings left empty on purpose
MISPLACED_RATE = 0.03  # share of facings filled with another product
STACKED = {c for c, p in enumerate(PRODUCTS) if p.height <= 0.3}  # short products stand in stacks
GAP_SEEN = 0.5  # an empty facing less than this much in view (cut by the photo's edge, or covered by a
# wider neighbour) is a difficult gap: too little empty shelf shows to tell it from the spacing


@dataclass
class Position:
    """One planogram position: ``facings`` columns of product ``label`` on shelf ``shelf``."""

    shelf: int
    position: int
    label: int
    facings: int


@dataclass
class DenseScene(Scene):
    """A :class:`~detect.data.synth.scene.Scene` with its shelf truth.

    Attributes (beyond Scene's, per kept box, int64[N]):
        shelf, position, facing: where the product stands (0-based, top shelf first, leftmost
            position first); ``instance``: a product id unique in the scene.
        planogram: the positions, shelf by shelf.
        rows: per shelf, its base line as ``[[x, y], [x, y]]`` at the left and right photo edge.
        gaps: float32[G, 4] boxes of facings left empty on purpose; ``gap_where`` int64[G, 3]:
            shelf, position, facing of each; ``gap_seen`` float32[G]: the fraction of each
            facing's width that is empty shelf in the photo (inside the photo, and not covered
            by a neighbouring product wider than its own facing); under :data:`GAP_SEEN` a gap
            is ``difficult`` in :func:`truth_json` (a scorer leaves it out, like a VOC
            difficult object: finding it is no hit, missing it no miss).
        misplaced: indices of the kept boxes standing in another product's position.
    """

    shelf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    facing: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    instance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    planogram: list[Position] = field(default_factory=list)
    rows: list[list[list[float]]] = field(default_factory=list)
    gaps: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    gap_where: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    gap_seen: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    misplaced: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def dense_size(size: int) -> tuple[int, int]:
    """(H, W) of a dense photo whose longer side is ``size``: landscape 4:3."""
    return int(round(size * 0.75)), int(size)


def _tilt(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """float64[3, 3]: a hand-held camera: up to 3 degrees of roll about the centre, zoomed so no
    corner shows outside the composed image, then a keystone (:func:`camera._homography`)."""
    a = np.radians(rng.uniform(-3.0, 3.0))
    zoom = abs(np.cos(a)) + abs(np.sin(a)) * max(H / W, W / H)  # the rotated frame covers the photo
    R = cv2.getRotationMatrix2D((W / 2, H / 2), float(np.degrees(a)), float(zoom))
    R = np.vstack([R, [0.0, 0.0, 1.0]])
    return _homography(rng, H, W, strength=0.05) @ R


def _plan_shelf(rng: np.random.Generator, shelf: int, W: float, unit: float, avail: float, gap: float) -> list[tuple]:
    """Positions of one shelf, left to right, and the facings each places:
    ``[(Position, [(label, x, h, w, stack), ...]), ...]``; neighbours differ in product."""
    out = []
    x = -rng.uniform(0.0, 0.6) * unit  # the section continues beyond the left edge
    prev = -1
    while x < W:
        choices = [c for c in range(len(PRODUCTS)) if c != prev]
        c = int(rng.choice(choices))
        prev = c
        h = min(unit * PRODUCTS[c].height, avail * 0.97)
        aspect = float(rng.uniform(*PRODUCTS[c].aspect))
        w = h * aspect
        stack = max(1, min(3, int(avail * 0.97 // h))) if c in STACKED else 1
        if stack > 1:
            stack = int(rng.integers(1, stack + 1))
        n = int(rng.integers(1, 6 if w < 0.5 * unit else 4))
        pos = Position(shelf, len(out), c, n)
        facings = []
        for _ in range(n):
            facings.append((c, x, h, w, stack))
            x += w + rng.uniform(0.02, 0.08) * w + gap
        out.append((pos, facings))
        x += rng.uniform(0.05, 0.25) * unit
    return out


def render_dense(seed: int, index: int = 0, size: int = 4000) -> DenseScene:
    """Render dense shelf photo ``index`` of ``seed`` (longer side ``size``, 4:3 landscape).

    The same (seed, index, size) always gives the same bytes. Shelves: 5-8, products 7-13% of
    the photo height for the tallest kind (60-400 pixels at 4000x3000); see the module docstring.
    """
    if size < 256:
        raise ValueError(f"dense shelf photos need a longer side of at least 256 pixels, got {size}")
    rng = np.random.default_rng([seed, 3, index])
    H, W = dense_size(size)
    cv = _Canvas(texture(rng, str(rng.choice(["pegboard", "paint", "metal"])), H, W), max_objects=MAX_PRODUCTS)
    n_rows = int(rng.integers(5, 9))
    row_h = H / (n_rows - rng.uniform(0.0, 0.5))
    plank_h = row_h * rng.uniform(0.07, 0.11)
    plank_kind = str(rng.choice(["wood", "metal"]))
    tops = [-rng.uniform(0.0, 0.3) * row_h + i * row_h for i in range(n_rows + 1)]
    tops = [t for t in tops if t < H - 0.4 * row_h]
    planogram: list[Position] = []
    where: list[tuple[int, int, int, int]] = []  # per painted product: shelf, position, facing, misplaced
    gaps: list[tuple[list[float], tuple[int, int, int]]] = []
    bases = []
    for s, top in enumerate(tops):
        avail = row_h - plank_h
        base = top + row_h - plank_h
        bases.append(base)
        unit = avail * rng.uniform(0.8, 0.93)  # the tallest kind nearly fills its shelf
        for pos, facings in _plan_shelf(rng, s, W, unit, avail, gap=rng.uniform(0.0, 0.03) * unit):
            planogram.append(pos)
            for f, (c, x, h, w, stack) in enumerate(facings):
                u = rng.random()
                if u < GAP_RATE:
                    gaps.append(([x, base - h * stack, x + w, base], (s, pos.position, f)))
                    continue
                label = c
                if u < GAP_RATE + MISPLACED_RATE:  # another product of about the same height
                    others = [o for o in range(len(PRODUCTS)) if o != c and o not in STACKED]
                    label = int(rng.choice(others))
                hh = h * rng.uniform(0.95, 1.03) if label == c else min(unit * PRODUCTS[label].height, avail * 0.97)
                sprite, mask = draw_product(rng, label, hh)
                ph, pw = mask.shape
                for k in range(stack if label == c else 1):
                    cv.paste(sprite, mask, x + (w - pw) / 2, base - ph * (k + 1) - rng.integers(0, 2), label)
                    where.append((s, pos.position, f, int(label != c)))
    for top in tops:
        _plank(rng, cv, int(top + row_h - plank_h), int(top + row_h), plank_kind)

    M = _tilt(rng, H, W)
    img, ids = warp(cv.img, cv.ids, M)
    img = _light(rng, _blur(rng, img))
    scene = visible_scene(cv, img, ids, M, "dense", quality=int(rng.integers(85, 96)), tiny=0.004)
    w = np.asarray(where, np.int64).reshape(-1, 4)[scene.item]  # (N, 4) per kept box
    gap_boxes = np.asarray([_warp_box(M, b, W, H) for b, _ in gaps], np.float32).reshape(-1, 4)
    inside = (gap_boxes[:, 2] - gap_boxes[:, 0] >= 4) & (gap_boxes[:, 3] - gap_boxes[:, 1] >= 4)
    shelf_of_item = np.asarray([s for s, _, _, _ in where], np.int64)
    gap_seen = np.asarray([_in_photo(M, b, W, H) * _uncovered(b, cv.items, shelf_of_item, g[0]) for b, g in gaps],
                          np.float32).reshape(-1)
    rows = [cv2.perspectiveTransform(np.float32([[[0, b], [W, b]]]), M)[0].round(1).tolist() for b in bases]
    return DenseScene(
        **{k: getattr(scene, k) for k in ("image", "boxes", "labels", "difficult", "truncated", "visible", "kind",
                                          "quality", "item")},
        shelf=w[:, 0], position=w[:, 1], facing=w[:, 2], instance=scene.item + 1,
        planogram=planogram, rows=rows,
        gaps=gap_boxes[inside], gap_where=np.asarray([g for _, g in gaps], np.int64).reshape(-1, 3)[inside],
        gap_seen=gap_seen[inside],
        misplaced=np.flatnonzero(w[:, 3]).astype(np.int64),
    )


def _warp_box(M: np.ndarray, box: Sequence[float], W: int, H: int) -> list[float]:
    """The axis-aligned extent of ``box`` (xyxy) after homography ``M``, clipped to the photo."""
    x0, y0, x1, y1 = box
    q = cv2.perspectiveTransform(np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]]), M)[0]
    lo, hi = q.min(0), q.max(0)
    return [float(np.clip(lo[0], 0, W)), float(np.clip(lo[1], 0, H)), float(np.clip(hi[0], 0, W)), float(np.clip(hi[1], 0, H))]


def _in_photo(M: np.ndarray, box: Sequence[float], W: int, H: int) -> float:
    """The fraction of canvas ``box`` (xyxy) that lands inside the W x H photo after homography ``M``."""
    x0, y0, x1, y1 = box
    q = cv2.perspectiveTransform(np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]]), M)[0]
    whole = abs(float(cv2.contourArea(q)))
    if whole <= 0:
        return 0.0
    frame = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    inter, _ = cv2.intersectConvexConvex(np.ascontiguousarray(q), frame)
    return float(min(max(inter / whole, 0.0), 1.0))


def _uncovered(box: Sequence[float], items: Sequence[tuple], shelf_of_item: np.ndarray, shelf: int) -> float:
    """The fraction of the width of canvas ``box`` (an empty facing of ``shelf``) that no
    painted product of that shelf covers (a product wider than its own facing, a misplaced
    one above all, reaches into its neighbour's)."""
    x0, x1 = float(box[0]), float(box[2])
    spans = sorted((max(it[2], x0), min(it[4], x1)) for it, s in zip(items, shelf_of_item) if s == shelf and it[4] > x0 and it[2] < x1)
    covered, end = 0.0, x0
    for a, b in spans:
        a = max(a, end)
        if b > a:
            covered += b - a
            end = b
    return 1.0 - covered / max(x1 - x0, 1e-6)


def truth_json(scene: DenseScene, filename: str, classes: Sequence[str] = CLASSES) -> dict[str, Any]:
    """The shelf truth of ``scene`` as a JSON-ready dict (``truth/<stem>.json``):
    ``planogram`` [{shelf, position, product, facings}], ``rows`` [{shelf, base}], ``products``
    [{box, product, shelf, position, facing, instance, difficult, misplaced}] in the order of the
    VOC objects, ``gaps`` [{box, shelf, position, facing, seen, difficult}], ``misplaced`` [{box, product,
    expected, shelf, position, facing}]; boxes xyxy 0-based pixels."""
    H, W = scene.image.shape[:2]
    expected = {(p.shelf, p.position): classes[p.label] for p in scene.planogram}
    mis = set(scene.misplaced.tolist())

    def box(b: np.ndarray) -> list[float]:
        return [round(float(v), 1) for v in b]

    products = [{"box": box(scene.boxes[i]), "product": classes[int(scene.labels[i])], "shelf": int(scene.shelf[i]),
                 "position": int(scene.position[i]), "facing": int(scene.facing[i]), "instance": int(scene.instance[i]),
                 "difficult": bool(scene.difficult[i]), "misplaced": i in mis} for i in range(len(scene.boxes))]
    return {
        "image": filename, "width": W, "height": H, "classes": list(classes),
        "planogram": [{"shelf": p.shelf, "position": p.position, "product": classes[p.label], "facings": p.facings}
                      for p in scene.planogram],
        "rows": [{"shelf": s, "base": r} for s, r in enumerate(scene.rows)],
        "products": products,
        "gaps": [{"box": box(b), "shelf": int(s), "position": int(p), "facing": int(f), "seen": round(float(v), 3),
                  "difficult": bool(v < GAP_SEEN)}
                 for b, (s, p, f), v in zip(scene.gaps, scene.gap_where, scene.gap_seen)],
        "misplaced": [{"box": products[i]["box"], "product": products[i]["product"],
                       "expected": expected[(products[i]["shelf"], products[i]["position"])],
                       "shelf": products[i]["shelf"], "position": products[i]["position"], "facing": products[i]["facing"]}
                      for i in sorted(mis)],
    }
