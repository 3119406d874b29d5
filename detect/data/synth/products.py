"""Product sprites for the synthetic shelves: ten classes, two brand colour schemes each.

Every ``draw_*`` function paints one product seen from the front into a fresh sprite and
returns ``(image, mask)``: ``image`` uint8[h, w, 3] BGR and ``mask`` uint8[h, w] (1 on the
product, 0 around it). Classes differ in silhouette *and* in printed appearance (brand
colours, a brand word, a logo-like pattern), so a detector has to look at both; the two
brands of a class share the silhouette and the layout but not the colours.

Only OpenCV drawing and a numpy ``Generator`` are used, so a sprite is a pure function of
the generator state: the same seed paints the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

Color = tuple[int, int, int]  # BGR
AA = cv2.LINE_AA
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)


@dataclass(frozen=True)
class Brand:
    """Colour scheme and printed word of one brand (all colours BGR)."""

    word: str
    body: Color
    accent: Color
    text: Color
    extra: Color


# ---------------------------------------------------------------- drawing helpers


def _jit(rng: np.random.Generator, c: Color, amount: int = 14) -> Color:
    """A colour jittered by up to ``amount`` per channel (printing and lighting differences)."""
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(c) + d, 0, 255))  # type: ignore[return-value]


def _scale(c: Color, f: float) -> Color:
    return tuple(int(min(255, max(0, v * f))) for v in c)  # type: ignore[return-value]


def _pts(norm: list[tuple[float, float]], w: int, h: int) -> np.ndarray:
    """Normalised (x, y) polygon -> int32[P, 2] pixel polygon of a ``w`` x ``h`` sprite."""
    p = np.asarray(norm, np.float32) * np.asarray([w - 1, h - 1], np.float32)
    return np.round(p).astype(np.int32)


def _fill(img: np.ndarray, mask: np.ndarray | None, pts: np.ndarray, color: Color) -> None:
    cv2.fillPoly(img, [pts], color, AA)
    if mask is not None:
        cv2.fillPoly(mask, [pts], 1)


def fit_text(img: np.ndarray, word: str, box: tuple[float, float, float, float], color: Color, font: int,
          bold: float = 0.12) -> None:
    """Print ``word`` centred in ``box`` = (x0, y0, x1, y1), scaled to fit its width and height."""
    x0, y0, x1, y1 = box
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    (tw, th), base = cv2.getTextSize(word, font, 1.0, 2)
    s = min(bw / tw, bh / (th + base))
    if s * th < 3:  # too small to print legibly: a line of "ink" keeps the pattern
        cv2.line(img, (int(x0), int((y0 + y1) / 2)), (int(x1), int((y0 + y1) / 2)), color, 1, AA)
        return
    thick = max(1, int(round(s * th * bold)))
    tx = int(round(x0 + (bw - tw * s) / 2))
    ty = int(round(y0 + (bh + th * s) / 2))
    cv2.putText(img, word, (tx, ty), font, s, color, thick, AA)


def _vertical_text(img: np.ndarray, word: str, box: tuple[int, int, int, int], color: Color, font: int) -> None:
    """Print ``word`` rotated by 90 degrees (reading bottom to top) into ``box``."""
    x0, y0, x1, y1 = box
    patch = np.ascontiguousarray(cv2.rotate(img[y0:y1, x0:x1], cv2.ROTATE_90_CLOCKWISE))
    fit_text(patch, word, (0, 0, patch.shape[1], patch.shape[0]), color, font)
    img[y0:y1, x0:x1] = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)


def _shade_columns(img: np.ndarray, lo: float, hi: float, highlight: float = 0.0) -> None:
    """Cylinder shading: columns darken towards both sides; a specular stripe at 30% width."""
    w = img.shape[1]
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    prof = lo + (hi - lo) * np.sqrt(np.clip(1.0 - x * x, 0.0, 1.0))
    if highlight:
        prof += highlight * np.exp(-((x + 0.4) ** 2) / 0.01)
    out = img.astype(np.float32) * prof[None, :, None]
    np.clip(out, 0, 255, out=out)
    img[:] = out.astype(np.uint8)


def _rounded_rect(img: np.ndarray, mask: np.ndarray | None, x0: int, y0: int, x1: int, y1: int, r: int,
                  color: Color) -> None:
    r = max(0, min(r, (x1 - x0) // 2, (y1 - y0) // 2))
    for tgt, col in ((img, color), (mask, 1)):
        if tgt is None:
            continue
        lt = AA if tgt is img else cv2.LINE_8
        cv2.rectangle(tgt, (x0 + r, y0), (x1 - r, y1), col, -1, lt)
        cv2.rectangle(tgt, (x0, y0 + r), (x1, y1 - r), col, -1, lt)
        if r > 0:
            for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
                cv2.circle(tgt, (cx, cy), r, col, -1, lt)


def _zigzag(x0: float, x1: float, y: float, depth: float, teeth: int, down: bool) -> list[tuple[float, float]]:
    """Points of a crimped edge from x0 to x1 along y (teeth pointing up unless ``down``)."""
    xs = np.linspace(x0, x1, 2 * teeth + 1)
    sign = 1.0 if down else -1.0
    return [(float(x), y + (sign * depth if i % 2 else 0.0)) for i, x in enumerate(xs)]


def _canvas(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)


# ---------------------------------------------------------------- the ten products


def draw_cereal_box(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    body = _jit(rng, b.body)
    _fill(img, mask, _pts([(0, 0), (1, 0), (1, 1), (0, 1)], w, h), body)
    side = int(w * 0.9)
    img[:, side:] = _scale(body, 0.68)  # the box's side face, in shadow
    cv2.rectangle(img, (0, 0), (side, int(h * 0.22)), _jit(rng, b.accent), -1)
    fit_text(img, b.word, (w * 0.06, h * 0.02, side - w * 0.06, h * 0.2), b.text, FONTS[2])
    cx, cy, r = int(w * 0.45), int(h * 0.64), max(2, int(w * 0.3))
    cv2.circle(img, (cx, cy), r, (235, 240, 245), -1, AA)  # the bowl
    cv2.ellipse(img, (cx, cy), (r, r), 0, 0, 180, _jit(rng, b.extra), -1, AA)
    for _ in range(7):  # flakes in the bowl
        fx = cx + int(rng.uniform(-0.7, 0.7) * r)
        fy = cy - int(rng.uniform(0.0, 0.6) * r)
        cv2.circle(img, (fx, fy), max(1, r // 5), (40, 130, 200), -1, AA)
    cv2.rectangle(img, (int(w * 0.05), int(h * 0.9)), (int(w * 0.5), int(h * 0.95)), b.text, -1)
    return img, mask


def draw_soda_bottle(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    outline = [(0.34, 0), (0.66, 0), (0.66, 0.07), (0.6, 0.07), (0.6, 0.2), (0.94, 0.34), (1, 0.42),
               (1, 0.95), (0.9, 1), (0.1, 1), (0, 0.95), (0, 0.42), (0.06, 0.34), (0.4, 0.2), (0.4, 0.07), (0.34, 0.07)]
    _fill(img, mask, _pts(outline, w, h), _jit(rng, b.body))
    cv2.rectangle(img, (int(w * 0.34), 0), (int(w * 0.66), int(h * 0.07)), _jit(rng, b.extra), -1)
    y0, y1 = int(h * 0.5), int(h * 0.76)
    cv2.rectangle(img, (0, y0), (w - 1, y1), _jit(rng, b.accent, 8), -1)
    _vertical_text(img, b.word, (int(w * 0.1), y0 + 1, int(w * 0.9), y1 - 1), b.text, FONTS[1])
    cv2.line(img, (0, y0 - 2), (w - 1, y0 - 2), b.text, max(1, h // 90), AA)
    _shade_columns(img, 0.62, 1.12, highlight=0.45)
    img[mask == 0] = 0
    return img, mask


def draw_can(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    rim = max(2, int(h * 0.05))
    _fill(img, mask, _pts([(0, 0.05), (1, 0.05), (1, 0.95), (0, 0.95)], w, h), _jit(rng, b.body))
    for cy in (rim, h - 1 - rim):
        cv2.ellipse(img, (w // 2, cy), (w // 2, rim), 0, 0, 360, (205, 205, 210), -1, AA)
        cv2.ellipse(mask, (w // 2, cy), (w // 2, rim), 0, 0, 360, 1, -1)
    wave = [(0, 0.64), (0.5, 0.54), (1, 0.46), (1, 0.6), (0.5, 0.68), (0, 0.78)]
    _fill(img, None, _pts(wave, w, h), _jit(rng, b.accent))
    _vertical_text(img, b.word, (int(w * 0.18), int(h * 0.09), int(w * 0.82), int(h * 0.44)), b.text, FONTS[0])
    cv2.circle(img, (w // 2, int(h * 0.85)), max(1, int(w * 0.15)), b.text, max(1, w // 20), AA)
    _shade_columns(img, 0.55, 1.1, highlight=0.6)
    img[mask == 0] = 0
    return img, mask


def draw_chips_bag(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    teeth = max(3, w // 12)
    top = _zigzag(0.02, 0.98, 0.05, -0.04, teeth, down=False)
    bottom = _zigzag(0.98, 0.02, 0.95, 0.04, teeth, down=True)
    outline = top + [(1.0, 0.25), (0.98, 0.75)] + bottom + [(0.0, 0.75), (0.02, 0.25)]
    _fill(img, mask, _pts(outline, w, h), _jit(rng, b.body))
    for yb in (0.02, 0.9):  # crimped seals
        cv2.rectangle(img, (0, int(h * yb)), (w - 1, int(h * (yb + 0.08))), _scale(b.body, 0.7), -1)
    cx, cy, r = w * 0.5, h * 0.36, w * 0.34
    ang = np.linspace(0, 2 * np.pi, 25)[:-1]
    rad = np.where(np.arange(24) % 2 == 0, r, r * 0.72)
    star = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang) * 0.8], 1).round().astype(np.int32)
    cv2.fillPoly(img, [star], _jit(rng, b.accent), AA)
    fit_text(img, b.word, (cx - r * 0.75, cy - r * 0.3, cx + r * 0.75, cy + r * 0.3), b.text, FONTS[1], 0.18)
    for dx, dy in ((-0.15, 0.72), (0.12, 0.7), (0.0, 0.8)):  # the chips
        cv2.ellipse(img, (int(w * (0.5 + dx)), int(h * dy)), (max(1, int(w * 0.17)), max(1, int(h * 0.06))),
                    int(rng.integers(-30, 30)), 0, 360, _jit(rng, b.extra), -1, AA)
    for _ in range(3):  # foil wrinkles
        x = int(rng.uniform(0.1, 0.9) * w)
        cv2.line(img, (x, int(h * 0.12)), (x + int(rng.uniform(-0.1, 0.1) * w), int(h * 0.5)),
                 _scale(b.body, 1.35), 1, AA)
    img[mask == 0] = 0
    return img, mask


def draw_milk_carton(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    _fill(img, mask, _pts([(0.1, 0), (0.9, 0), (0.9, 0.06), (0.1, 0.06)], w, h), _jit(rng, b.body, 6))
    _fill(img, mask, _pts([(0, 0.28), (0.1, 0.06), (0.9, 0.06), (1, 0.28)], w, h), _jit(rng, b.accent))
    _fill(img, mask, _pts([(0, 0.28), (1, 0.28), (1, 1), (0, 1)], w, h), _jit(rng, b.body, 6))
    xs = np.linspace(0, 1, 9)
    wave = [(float(x), 0.78 + 0.04 * np.sin(x * 9.0)) for x in xs] + [(1, 1), (0, 1)]
    _fill(img, None, _pts(wave, w, h), _jit(rng, b.accent))
    fit_text(img, b.word, (w * 0.08, h * 0.36, w * 0.92, h * 0.52), b.text, FONTS[2])
    cv2.circle(img, (w // 2, int(h * 0.64)), max(1, int(w * 0.14)), b.extra, -1, AA)  # a drop logo
    cv2.line(img, (int(w * 0.5), 0), (int(w * 0.5), int(h * 0.28)), _scale(b.accent, 0.7), 1, AA)
    side, on = img[:, int(w * 0.88):], mask[:, int(w * 0.88):] > 0  # side face in shadow
    side[on] = (side[on] * 0.8).astype(np.uint8)
    return img, mask


def draw_jar(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    lid = _jit(rng, b.accent)
    _rounded_rect(img, mask, 0, int(h * 0.17), w - 1, h - 1, int(w * 0.16), _jit(rng, b.body))
    _rounded_rect(img, mask, int(w * 0.06), 0, int(w * 0.94), int(h * 0.2), int(h * 0.04), lid)
    step = max(2, w // 10)
    for x in range(int(w * 0.06) + step, int(w * 0.94), step):  # lid ridges / gingham
        cv2.line(img, (x, 1), (x, int(h * 0.19)), b.extra, 1)
    cv2.rectangle(img, (int(w * 0.05), int(h * 0.42)), (int(w * 0.95), int(h * 0.8)), (205, 235, 245), -1)
    fit_text(img, b.word, (w * 0.1, h * 0.45, w * 0.9, h * 0.62), b.text, FONTS[1])
    cv2.circle(img, (w // 2, int(h * 0.71)), max(1, int(h * 0.06)), _jit(rng, b.extra), -1, AA)
    cv2.line(img, (int(w * 0.15), int(h * 0.25)), (int(w * 0.15), int(h * 0.38)), (235, 235, 235), max(1, w // 25), AA)
    return img, mask


def draw_soap_bottle(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    pump = _jit(rng, b.extra, 8)
    _fill(img, mask, _pts([(0.4, 0.0), (0.95, 0.0), (0.95, 0.05), (0.4, 0.05)], w, h), pump)  # nozzle
    _fill(img, mask, _pts([(0.43, 0.04), (0.57, 0.04), (0.57, 0.2), (0.43, 0.2)], w, h), pump)  # stem
    _fill(img, mask, _pts([(0.28, 0.18), (0.72, 0.18), (0.72, 0.27), (0.28, 0.27)], w, h), _scale(pump, 0.85))
    _rounded_rect(img, mask, 0, int(h * 0.25), w - 1, h - 1, int(w * 0.3), _jit(rng, b.body))
    cv2.ellipse(img, (w // 2, int(h * 0.62)), (max(1, int(w * 0.38)), max(1, int(h * 0.16))), 0, 0, 360,
                _jit(rng, b.accent, 6), -1, AA)
    fit_text(img, b.word, (w * 0.18, h * 0.55, w * 0.82, h * 0.69), b.text, FONTS[0])
    for _ in range(4):  # bubbles
        cv2.circle(img, (int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.33, 0.45) * h)),
                   max(1, w // 14), (250, 250, 250), 1, AA)
    _shade_columns(img, 0.7, 1.08, highlight=0.3)
    img[mask == 0] = 0
    return img, mask


def draw_chocolate_bar(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    teeth = max(2, h // 6)
    left = [(0.03 - (0.03 if i % 2 else 0.0), y) for i, y in enumerate(np.linspace(1, 0, 2 * teeth + 1))]
    right = [(0.97 + (0.03 if i % 2 else 0.0), y) for i, y in enumerate(np.linspace(0, 1, 2 * teeth + 1))]
    _fill(img, mask, _pts(left + right, w, h), _jit(rng, b.body))
    _fill(img, None, _pts([(0.62, 0), (0.7, 0), (0.5, 1), (0.42, 1)], w, h), _jit(rng, b.accent))
    fit_text(img, b.word, (w * 0.06, h * 0.12, w * 0.46, h * 0.88), b.text, FONTS[2], 0.16)
    g = max(2, int(h * 0.22))
    for i in range(3):  # chocolate squares picture
        for j in range(2):
            x, y = int(w * 0.74) + i * (g + 1), int(h * 0.25) + j * (g + 1)
            cv2.rectangle(img, (x, y), (x + g - 1, y + g - 1), (20, 45, 80), -1)
    return img, mask


def draw_tea_box(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    body = _jit(rng, b.body)
    _fill(img, mask, _pts([(0, 0.12), (0.06, 0), (1, 0), (1, 1), (0, 1)], w, h), body)
    _fill(img, None, _pts([(0, 0.12), (0.06, 0), (1, 0), (0.94, 0.12)], w, h), _scale(body, 1.5))  # lid face
    cv2.rectangle(img, (int(w * 0.06), int(h * 0.3)), (int(w * 0.56), int(h * 0.86)), _jit(rng, b.accent, 8), -1)
    fit_text(img, b.word, (w * 0.09, h * 0.36, w * 0.53, h * 0.8), b.text, FONTS[2])
    for i in range(4):  # leaves
        cx, cy = int(w * (0.68 + 0.08 * (i % 2))), int(h * (0.3 + 0.16 * i))
        cv2.ellipse(img, (cx, cy), (max(1, int(w * 0.09)), max(1, int(h * 0.06))), 30 + 60 * (i % 2), 0, 360,
                    _jit(rng, b.extra), -1, AA)
    cv2.rectangle(img, (1, int(h * 0.14)), (w - 2, h - 2), b.accent, max(1, h // 40))
    return img, mask


def draw_yogurt_cup(rng: np.random.Generator, h: int, w: int, b: Brand) -> tuple[np.ndarray, np.ndarray]:
    img, mask = _canvas(h, w)
    _fill(img, mask, _pts([(0, 0.1), (1, 0.1), (0.85, 1), (0.15, 1)], w, h), _jit(rng, b.body, 6))
    cv2.ellipse(img, (w // 2, int(h * 0.1)), (w // 2, max(1, int(h * 0.1))), 0, 0, 360, (200, 200, 205), -1, AA)
    cv2.ellipse(mask, (w // 2, int(h * 0.1)), (w // 2, max(1, int(h * 0.1))), 0, 0, 360, 1, -1)
    _fill(img, None, _pts([(0.05, 0.36), (0.95, 0.36), (0.89, 0.74), (0.11, 0.74)], w, h), _jit(rng, b.accent))
    fit_text(img, b.word, (w * 0.16, h * 0.4, w * 0.84, h * 0.56), b.text, FONTS[1])
    for i in range(3):  # fruit
        c = (int(w * (0.3 + 0.2 * i)), int(h * 0.65))
        cv2.circle(img, c, max(1, int(w * 0.07)), _jit(rng, b.extra), -1, AA)
        cv2.line(img, (c[0], c[1] - max(1, int(w * 0.07))), (c[0] + 2, c[1] - max(2, int(w * 0.1))), (40, 150, 40), 1, AA)
    img[mask == 0] = 0
    return img, mask


@dataclass(frozen=True)
class ProductClass:
    """One synthetic class: its name, how tall it stands relative to the tallest class,
    its width/height range, how to draw it and its brands."""

    name: str
    height: float
    aspect: tuple[float, float]
    draw: Callable[[np.random.Generator, int, int, Brand], tuple[np.ndarray, np.ndarray]]
    brands: tuple[Brand, ...]


PRODUCTS: tuple[ProductClass, ...] = (
    ProductClass("cereal_box", 0.92, (0.66, 0.78), draw_cereal_box, (
        Brand("OATY", (40, 205, 250), (40, 40, 200), (255, 255, 255), (60, 160, 230)),
        Brand("KORN", (30, 140, 245), (40, 70, 120), (80, 230, 250), (220, 200, 120)))),
    ProductClass("soda_bottle", 1.0, (0.27, 0.33), draw_soda_bottle, (
        Brand("FIZZ", (50, 130, 35), (245, 245, 245), (40, 120, 30), (40, 40, 210)),
        Brand("AQUA", (225, 205, 170), (175, 95, 25), (255, 255, 255), (190, 100, 30)))),
    ProductClass("can", 0.46, (0.52, 0.62), draw_can, (
        Brand("ZAP", (175, 80, 20), (210, 210, 215), (255, 255, 255), (0, 0, 0)),
        Brand("VOLT", (35, 35, 35), (40, 225, 140), (60, 240, 170), (0, 0, 0)))),
    ProductClass("chips_bag", 0.72, (0.72, 0.88), draw_chips_bag, (
        Brand("CRISP", (40, 40, 215), (30, 220, 250), (30, 30, 170), (60, 190, 240)),
        Brand("CRUNCH", (55, 165, 45), (235, 245, 250), (30, 90, 20), (80, 200, 240)))),
    ProductClass("milk_carton", 0.82, (0.46, 0.56), draw_milk_carton, (
        Brand("MILK", (245, 245, 242), (205, 125, 30), (180, 90, 20), (220, 170, 90)),
        Brand("DAIRY", (240, 248, 250), (50, 55, 200), (40, 40, 170), (90, 110, 230)))),
    ProductClass("jar", 0.5, (0.8, 0.98), draw_jar, (
        Brand("JAM", (45, 30, 140), (50, 50, 210), (40, 30, 120), (250, 250, 250)),
        Brand("HONEY", (30, 150, 230), (50, 175, 215), (30, 90, 150), (40, 200, 250)))),
    ProductClass("soap_bottle", 0.74, (0.38, 0.46), draw_soap_bottle, (
        Brand("SOAP", (185, 120, 240), (250, 245, 250), (150, 60, 170), (245, 245, 245)),
        Brand("FRESH", (175, 175, 40), (240, 250, 245), (120, 120, 20), (230, 230, 230)))),
    ProductClass("chocolate_bar", 0.24, (2.2, 2.8), draw_chocolate_bar, (
        Brand("CHOCO", (30, 50, 95), (50, 180, 230), (210, 230, 245), (0, 0, 0)),
        Brand("COCOA", (120, 40, 95), (240, 240, 240), (250, 250, 250), (0, 0, 0)))),
    ProductClass("tea_box", 0.4, (1.3, 1.6), draw_tea_box, (
        Brand("TEA", (50, 95, 25), (200, 235, 245), (30, 70, 20), (90, 200, 120)),
        Brand("CHAI", (28, 28, 28), (60, 170, 215), (25, 25, 25), (70, 140, 200)))),
    ProductClass("yogurt_cup", 0.36, (0.88, 1.05), draw_yogurt_cup, (
        Brand("YOGO", (248, 248, 248), (185, 150, 250), (140, 60, 200), (50, 40, 215)),
        Brand("CREAM", (240, 250, 250), (100, 220, 250), (20, 110, 200), (30, 140, 245)))),
)

CLASSES: list[str] = [p.name for p in PRODUCTS]


def draw_product(rng: np.random.Generator, cls: int, h: int, brand: int | None = None,
                 aspect: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint one product of class ``cls`` (index into :data:`CLASSES`), ``h`` pixels tall.

    Returns ``(image uint8[h, w, 3] BGR, mask uint8[h, w])``; ``w`` follows the class's aspect
    range (or ``aspect`` when given). ``brand`` picks the colour scheme (random when None).
    """
    p = PRODUCTS[cls]
    h = max(int(round(h)), 6)
    a = float(rng.uniform(*p.aspect)) if aspect is None else aspect
    w = max(int(round(h * a)), 4)
    b = p.brands[int(rng.integers(len(p.brands))) if brand is None else brand]
    return p.draw(rng, h, w, b)
