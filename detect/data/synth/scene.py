"""Scene composition for the synthetic shelves: backgrounds, layout, occluders, photo effects,
and the ground-truth boxes of what stays visible.

Every product is pasted into the image and, with its own id (1..254), into an id map of the
same size; occluders (shelf edges, price signs, hands) write id 0. After the camera warp the
box of a product is the extent of the pixels still carrying its id, so boxes are the
*visible* extent, and ``visible`` = visible pixels / painted pixels tells how much of it is
hidden: under 30% visible is marked ``difficult``, under 5% (or a dozen pixels) is dropped.

Shorthand: H, W image size; N products kept; boxes float32[N, 4] xyxy, 0-based, x2/y2 exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detect.data.synth.products import AA, FONTS, PRODUCTS, draw_product, fit_text

MAX_OBJECTS = 25
CHOCOLATE = next(i for i, p in enumerate(PRODUCTS) if p.name == "chocolate_bar")
SKIN = ((150, 175, 225), (120, 150, 200), (85, 115, 165), (60, 80, 115))  # BGR


@dataclass
class Scene:
    """One rendered scene.

    Attributes:
        image: uint8[H, W, 3], BGR (OpenCV order).
        boxes (float32[N, 4]): visible extent, xyxy, 0-based pixels, x2/y2 exclusive.
        labels (int64[N]): indices into ``detect.data.synth.CLASSES``.
        difficult (bool[N]): under 30% of the product visible, or tiny.
        truncated (bool[N]): the box misses part of the product (border or occlusion).
        visible (float32[N]): visible fraction of each product's painted area.
        kind: "shelf" or "checkout".
        quality: JPEG quality the dataset writer uses for this scene.
        item (int64[N] or None): each box's index into the composing canvas's products (dense
            shelves use it to join boxes with their planogram truth).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray
    visible: np.ndarray
    kind: str
    quality: int = 90
    item: np.ndarray | None = None


class _Canvas:
    """The image being composed, its id map, and the full extent and area of each product."""

    def __init__(self, img: np.ndarray, max_objects: int = MAX_OBJECTS) -> None:
        self.img = img
        self.max_objects = max_objects
        # ids 1..254 fit uint8 (the photo scenes); dense shelves hold hundreds of products
        self.ids = np.zeros(img.shape[:2], np.uint8 if max_objects < 255 else np.uint16)
        self.items: list[tuple[int, int, float, float, float, float]] = []  # label, area, x0, y0, x1, y1

    @property
    def free(self) -> int:
        return self.max_objects - len(self.items)

    def paste(self, sprite: np.ndarray, mask: np.ndarray, x: float, y: float, label: int | None,
              dim: float = 1.0) -> None:
        """Paste ``sprite`` where ``mask`` is set with its top-left corner at (x, y); parts
        outside the image are cut. ``label`` None pastes an occluder (id 0)."""
        h, w = mask.shape
        H, W = self.ids.shape
        x, y = int(round(x)), int(round(y))
        k = 0
        if label is not None:
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            self.items.append((label, int(np.count_nonzero(mask)), x + cols[0], y + rows[0],
                               x + cols[-1] + 1, y + rows[-1] + 1))
            k = len(self.items)
        cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        m = mask[cy0 - y:cy1 - y, cx0 - x:cx1 - x] > 0
        src = sprite[cy0 - y:cy1 - y, cx0 - x:cx1 - x]
        if dim != 1.0:
            src = (src * dim).astype(np.uint8)
        self.img[cy0:cy1, cx0:cx1][m] = src[m]
        self.ids[cy0:cy1, cx0:cx1][m] = k


# ---------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """float32[h, w] in [0, 1]: uniform noise on a coarse grid, bilinearly upsampled."""
    g = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)


def texture(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """uint8[h, w, 3] BGR background: "wood", "metal", "pegboard", "paint" or "belt"."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    if kind == "wood":
        base = np.asarray([rng.uniform(40, 90), rng.uniform(90, 140), rng.uniform(140, 200)], np.float32)
        warp = _smooth_noise(rng, h, w, 24) * 6.0
        shade = 0.85 + 0.15 * np.sin(yy * rng.uniform(0.3, 0.8) + warp)
    elif kind == "metal":
        base = np.full(3, rng.uniform(140, 210), np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
        streaks = cv2.resize(rng.random((h, 4), dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        shade = 0.85 + 0.1 * streaks + 0.1 * (yy / max(h, 1))
    elif kind == "pegboard":
        base = np.asarray(rng.choice([(225, 228, 230), (200, 205, 210), (180, 200, 215)]), np.float32)
        p = int(rng.integers(10, 18))
        xx = np.arange(w)[None, :]
        holes = ((yy.astype(int) % p) < 2) & ((xx % p) < 2)
        shade = 0.93 + 0.07 * _smooth_noise(rng, h, w, 64) - 0.45 * holes
    elif kind == "belt":
        base = np.full(3, rng.uniform(30, 60), np.float32)
        ribs = ((yy.astype(int) % int(rng.integers(3, 6))) == 0).astype(np.float32)
        shade = 0.9 + 0.2 * _smooth_noise(rng, h, w, 48) - 0.25 * ribs
    else:  # "paint"
        base = np.asarray([rng.uniform(60, 230) for _ in range(3)], np.float32)
        shade = 0.88 + 0.12 * _smooth_noise(rng, h, w, 96)
    shade = np.broadcast_to(shade, (h, w)).astype(np.float32)
    return np.clip(shade[..., None] * base, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- occluders and distractors


def _hand(rng: np.random.Generator, cv: _Canvas, cx: float, cy: float, size: float) -> None:
    """A hand-like blob (palm and fingers) centred at (cx, cy), pointing in a random direction."""
    color = tuple(int(c) for c in np.clip(np.asarray(SKIN[int(rng.integers(len(SKIN)))]) + rng.integers(-10, 11, 3), 0, 255))
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    n = np.array([-d[1], d[0]])
    c = np.array([cx, cy])
    palm = (max(2, int(size * 0.32)), max(2, int(size * 0.26)))
    fingers = [(c + d * size * 0.3 + n * size * o, c + d * size * (0.75 - abs(o)) + n * size * o * 1.2)
               for o in (-0.2, -0.07, 0.07, 0.2)]
    fingers.append((c - n * size * 0.2, c - n * size * 0.5 + d * size * 0.15))  # thumb
    arm = (c, c - d * size * 1.6)
    for tgt, col in ((cv.img, color), (cv.ids, 0)):
        lt = AA if tgt is cv.img else cv2.LINE_8
        cv2.line(tgt, tuple(arm[0].astype(int)), tuple(arm[1].astype(int)), col, max(2, int(size * 0.45)), lt)
        cv2.ellipse(tgt, tuple(c.astype(int)), palm, float(np.degrees(ang)), 0, 360, col, -1, lt)
        for a, b in fingers:
            cv2.line(tgt, tuple(a.astype(int)), tuple(b.astype(int)), col, max(2, int(size * 0.11)), lt)


def _price_sign(rng: np.random.Generator, cv: _Canvas, cx: float, cy: float, size: float, stick_to: float) -> None:
    """A promotion sign ("shelf talker") on a stick reaching down to ``stick_to``."""
    color = [(30, 30, 220), (30, 210, 250), (30, 140, 250), (60, 180, 60)][int(rng.integers(4))]
    word = ["SALE", "-20%", "NEW", "2 FOR 1", "PROMO"][int(rng.integers(5))]
    r = max(3, int(size / 2))
    c = (int(cx), int(cy))
    round_sign = rng.random() < 0.5
    for tgt, col in ((cv.img, (70, 70, 70)), (cv.ids, 0)):
        cv2.line(tgt, (c[0], c[1]), (c[0], int(stick_to)), col, max(1, r // 8))
    for tgt, col in ((cv.img, color), (cv.ids, 0)):
        if round_sign:
            cv2.circle(tgt, c, r, col, -1)
        else:
            cv2.rectangle(tgt, (c[0] - r, c[1] - int(r * 0.7)), (c[0] + r, c[1] + int(r * 0.7)), col, -1)
    fx = int(r * 0.7)
    fit_text(cv.img, word, (c[0] - fx, c[1] - fx / 2, c[0] + fx, c[1] + fx / 2), (255, 255, 255), FONTS[1], 0.15)


def _plank(rng: np.random.Generator, cv: _Canvas, y0: int, y1: int, kind: str) -> None:
    """A shelf's front edge from y0 to y1 with a strip of price labels (an occluder)."""
    H, W = cv.ids.shape
    y0, y1 = max(y0, 0), min(y1, H)
    if y1 <= y0:
        return
    cv.img[y0:y1] = texture(rng, kind, y1 - y0, W)
    cv.ids[y0:y1] = 0
    lh = max(2, int((y1 - y0) * 0.6))
    x = int(rng.integers(0, 30))
    while x < W:
        lw = int(rng.integers(18, 34) * W / 320)
        ly = y0 + (y1 - y0 - lh) // 2
        cv2.rectangle(cv.img, (x, ly), (x + lw, ly + lh), (235, 240, 240) if rng.random() < 0.8 else (40, 220, 250), -1)
        if lh >= 6:
            cv2.putText(cv.img, f"{rng.integers(1, 10)}.{rng.integers(10, 99)}", (x + 2, ly + lh - 2),
                        FONTS[0], lh / 26, (20, 20, 20), 1, AA)
        x += lw + int(rng.integers(20, 90) * W / 320)
    shadow = np.linspace(0.55, 1.0, max(2, (y1 - y0) // 2), dtype=np.float32)  # under the edge
    s0, s1 = y1, min(H, y1 + shadow.size)
    if s1 > s0:
        cv.img[s0:s1] = (cv.img[s0:s1] * shadow[: s1 - s0, None, None]).astype(np.uint8)


# ---------------------------------------------------------------- layouts


def _fill_row(rng: np.random.Generator, cv: _Canvas, y_base: float, avail: float, quota: int) -> None:
    """Stand products on a shelf row whose base is ``y_base`` and whose free height is
    ``avail``: a few classes in groups of same-product facings, scaled so the row's tallest
    class nearly fills the row (shelves are spaced for their products); chocolate bars come
    in stacks; sometimes a second, darker row peeks out behind."""
    W = cv.ids.shape[1]
    classes = rng.choice(len(PRODUCTS), size=int(rng.integers(2, 5)), replace=False)
    unit = avail * rng.uniform(0.8, 0.95) / max(PRODUCTS[int(c)].height for c in classes)
    front, back = [], []
    x = -rng.uniform(0.0, 0.25) * avail
    while x < W and len(front) < quota:
        c = int(rng.choice(classes))
        h = min(unit * PRODUCTS[c].height * rng.uniform(0.92, 1.06), avail * 0.97)
        sprite, mask = draw_product(rng, c, h)
        ph, pw = mask.shape
        stack = int(rng.integers(1, max(1, min(3, int(avail * 0.97 // ph))) + 1)) if c == CHOCOLATE else 1
        for _ in range(int(rng.integers(1, 4))):
            if x >= W or len(front) + stack > quota:
                break
            for s in range(stack):
                front.append((sprite, mask, x, y_base - ph * (s + 1) - rng.integers(0, 2), c))
            x += pw + rng.uniform(0.0, 0.1) * avail
        x += rng.uniform(0.0, 0.3) * avail
    if front and rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 4))):
            if len(front) + len(back) >= quota:
                break
            ref = front[int(rng.integers(len(front)))]
            c = int(rng.choice(classes))
            sprite, mask = draw_product(rng, c, min(unit * PRODUCTS[c].height, avail) * rng.uniform(0.9, 1.0))
            bx = ref[2] + rng.uniform(-0.6, 0.6) * ref[1].shape[1]
            back.append((sprite, mask, bx, y_base - mask.shape[0] - rng.uniform(0.02, 0.08) * avail, c))
    for sprite, mask, px, py, c in back:
        cv.paste(sprite, mask, px, py, c, dim=float(rng.uniform(0.6, 0.8)))
    for sprite, mask, px, py, c in front:
        cv.paste(sprite, mask, px, py, c)


def shelf_scene(rng: np.random.Generator, H: int, W: int) -> _Canvas:
    """Two to four shelf rows (the top one often cut by the border) in front of a back wall."""
    cv = _Canvas(texture(rng, str(rng.choice(["pegboard", "paint", "metal"])), H, W))
    n_rows = int(rng.choice([2, 3, 4], p=[0.55, 0.38, 0.07]))
    row_h = H / (n_rows - rng.uniform(0.0, 0.4))
    plank_h = row_h * rng.uniform(0.07, 0.12)
    plank_kind = str(rng.choice(["wood", "metal"]))
    rows, y = [], -rng.uniform(0.0, 0.35) * row_h
    while y < H - 0.35 * row_h:
        rows.append(y)
        y += row_h
    for i, top in enumerate(rows):
        quota = max(1, cv.free // (len(rows) - i))
        base = top + row_h - plank_h
        _fill_row(rng, cv, base + rng.integers(0, 3), row_h - plank_h, quota)
    for top in rows:
        _plank(rng, cv, int(top + row_h - plank_h), int(top + row_h), plank_kind)
    for _ in range(int(rng.choice([0, 1, 2], p=[0.65, 0.25, 0.1]))):
        top = rows[int(rng.integers(len(rows)))]
        base = top + row_h - plank_h
        _price_sign(rng, cv, rng.uniform(0.05, 0.95) * W, base - rng.uniform(0.2, 0.5) * row_h,
                    rng.uniform(0.07, 0.14) * W, base)
    if rng.random() < 0.15:
        _hand(rng, cv, rng.uniform(0.1, 0.9) * W, rng.uniform(0.2, 0.8) * H, rng.uniform(0.18, 0.3) * H)
    return cv


def _rotate(sprite: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a sprite and its mask by ``angle`` degrees into a canvas that holds all of it."""
    h, w = mask.shape
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(M[0, 0]), abs(M[0, 1])
    nw, nh = int(h * sin + w * cos) + 1, int(h * cos + w * sin) + 1
    M[0, 2] += nw / 2 - w / 2
    M[1, 2] += nh / 2 - h / 2
    return (cv2.warpAffine(sprite, M, (nw, nh), flags=cv2.INTER_LINEAR),
            cv2.warpAffine(mask, M, (nw, nh), flags=cv2.INTER_NEAREST))


def checkout_scene(rng: np.random.Generator, H: int, W: int) -> _Canvas:
    """Products lying on a checkout belt at random angles, maybe a divider bar and a hand."""
    cv = _Canvas(texture(rng, "belt", H, W))
    rail = int(H * rng.uniform(0.0, 0.1))
    if rail:
        cv.img[:rail] = texture(rng, "metal", rail, W)
    if rng.random() < 0.4:  # divider bar, lying on the belt under the products
        y = int(rng.uniform(0.15, 0.85) * H)
        cv2.rectangle(cv.img, (0, y), (W - 1, y + max(3, H // 25)), (90, 60, 40) if rng.random() < 0.5 else (30, 30, 30), -1)
    scale = rng.uniform(0.32, 0.5)  # longer side of a product, relative to H
    placed: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(4, 12))):
        c = int(rng.integers(len(PRODUCTS)))
        a = rng.uniform(*PRODUCTS[c].aspect)
        long = H * scale * rng.uniform(0.85, 1.15)
        sprite, mask = draw_product(rng, c, long if a <= 1 else long / a, aspect=a)
        angle = rng.uniform(-25, 25) if rng.random() < 0.7 else 90 + rng.uniform(-15, 15)
        sprite, mask = _rotate(sprite, mask, angle)
        h, w = mask.shape
        for _try in range(12):
            x, y = rng.uniform(-0.2 * w, W - 0.8 * w), rng.uniform(rail - 0.1 * h, H - 0.8 * h)
            r = (x, y, x + w, y + h)
            if all(_overlap(r, q) < 0.3 for q in placed):
                placed.append(r)
                cv.paste(sprite, mask, x, y, c)
                break
    if rng.random() < 0.4 and placed:
        x0, y0, x1, y1 = placed[int(rng.integers(len(placed)))]
        _hand(rng, cv, rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(0.2, 0.32) * H)
    return cv


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller of two xyxy rectangles."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small
