"""Draw detections on BGR images: boxes, class names and scores, one colour per class.

Labels are rendered with FreeType through PIL into small cached alpha masks, so names in any
script (Latin, Chinese, Japanese, Korean ...) draw correctly, never as '???', and a label
costs one small alpha blend per box once its text was seen. The font is looked up once:

1. ``$DETECT_FONT`` (a .ttf/.otf/.ttc path), when set;
2. Noto Sans CJK from the ``cvttf-notosanscjk-regular`` PyPI package (a dependency);
3. common system CJK fonts (Noto CJK, WenQuanYi, Droid Sans Fallback, PingFang, YaHei);
4. DejaVu Sans or PIL's built-in font (Latin only; a warning is printed once when a name
   has characters that font lacks).

This module needs only results (numpy arrays and names); it imports nothing from the models.
"""

from __future__ import annotations

import colorsys
import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

_SYSTEM_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)
_LATIN_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "C:/Windows/Fonts/arial.ttf")


@lru_cache(maxsize=None)
def font_path() -> Optional[str]:
    """Path of the font used for labels (see the module docstring for the search order), or
    ``None`` when only PIL's built-in Latin font is available."""
    env = os.environ.get("DETECT_FONT")
    if env:
        if Path(env).is_file():
            return env
        print(f"warning: DETECT_FONT={env} is not a file; looking for another font", file=sys.stderr)
    spec = importlib.util.find_spec("cvttf_NotoSansCJK_Regular")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            for f in sorted(Path(folder).glob("*.[ot][tt][fc]")):
                return str(f)
    for f in _SYSTEM_FONTS + _LATIN_FONTS:
        if Path(f).is_file():
            return f
    return None


@lru_cache(maxsize=None)
def _cmap() -> frozenset[int]:
    """Code points the label font has glyphs for (empty when unknown)."""
    path = font_path()
    if path is None:
        return frozenset(range(32, 127))
    try:
        from fontTools.ttLib import TTCollection, TTFont

        # closed when read: a lazy font left to the garbage collector warned "unclosed file" wherever that ran
        with (TTCollection if path.lower().endswith(".ttc") else TTFont)(path, lazy=True) as font:
            return frozenset((font.fonts[0] if isinstance(font, TTCollection) else font).getBestCmap() or {})
    except Exception:  # fontTools missing or an unusual font: assume it covers what it claims
        return frozenset()


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_path()
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


_warned: set[str] = set()


def _check_glyphs(text: str) -> None:
    cmap = _cmap()
    if not cmap:
        return
    missing = sorted({c for c in text if ord(c) not in cmap and not c.isspace()})
    if missing and text not in _warned:
        _warned.add(text)
        print(
            f"warning: the label font {font_path() or '(PIL default)'} has no glyph for {''.join(missing)!r} in "
            f"{text!r}; install a CJK font (pip install cvttf-notosanscjk-regular) or set DETECT_FONT",
            file=sys.stderr,
        )


def text_mask(text: str, size: int) -> np.ndarray:
    """Render ``text`` at ``size`` px into an alpha mask ``uint8[h, w]`` (255 = ink).

    The height is the same for every text of one size (the font's band from the top of an
    accent to the bottom of a descender, CJK included), so labels line up."""
    _check_glyphs(text)
    font = _font(size)
    top, bottom = _band(size)
    right = max(int(font.getbbox(text)[2]) if text else 1, 1)
    img = Image.new("L", (right, bottom - top), 0)
    ImageDraw.Draw(img).text((0, -top), text, font=font, fill=255)
    return np.asarray(img)


@lru_cache(maxsize=64)
def _band(size: int) -> tuple[int, int]:
    font = _font(size)
    sample = "ÅÉgjpqy|"
    if 0x6C49 in _cmap():  # the font has CJK: include a CJK glyph in the band
        sample += "汉"
    _, top, _, bottom = font.getbbox(sample)
    return int(top), int(bottom) + 1


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour for class ``label`` (golden-ratio hues: any number of
    classes, neighbouring labels far apart on the colour wheel)."""
    h = (label * 0.618033988749895 + 0.05) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def text_color(bg_bgr: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bg_bgr`` (ITU-R BT.601 luma)."""
    b, g, r = bg_bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def draw_label(image: np.ndarray, text: str, x: int, y: int, bg: tuple[int, int, int], size: int, above: bool = True) -> None:
    """Draw ``text`` on a filled ``bg`` box anchored at ``(x, y)`` in place: above the point
    when ``above`` and there is room, else below it; always kept inside the image (cropped at
    its right and bottom when the label is larger than the image)."""
    H, W = image.shape[:2]
    mask = _label_mask(text, size)  # (lh, lw): the text mask with a pad-wide empty border
    lh, lw = mask.shape
    y0 = y - lh if above and y - lh >= 0 else y
    y0 = int(min(max(y0, 0), max(H - lh, 0)))
    x0 = int(min(max(x, 0), max(W - lw, 0)))
    y1, x1 = min(y0 + lh, H), min(x0 + lw, W)
    # the label's blend bg * (1 - a) + fg * a, alpha a from the mask, is a lookup of the mask in
    # a 256-step bg -> fg ramp: one indexing op (the float math cost ~0.3 ms a label at 720p)
    image[y0:y1, x0:x1] = np.take(_ramp(tuple(int(c) for c in bg)), mask[: y1 - y0, : x1 - x0], axis=0)  # (h, w) -> (h, w, 3)


@lru_cache(maxsize=4096)
def _label_mask(text: str, size: int) -> np.ndarray:
    """:func:`text_mask` with the label's padding (``size // 6``) around it, cached: a label is
    rendered once, then drawn by :func:`draw_label` with one lookup."""
    pad = max(size // 6, 1)
    m = cv2.copyMakeBorder(text_mask(text, size), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    m.flags.writeable = False
    return m


@lru_cache(maxsize=256)
def _ramp(bg: tuple[int, int, int]) -> np.ndarray:
    """uint8[256, 3]: row a is ``bg`` blended with its text colour at alpha a/255, rounded down
    as the float blend it replaces was."""
    a = np.arange(256, dtype=np.float32)[:, None] * (1.0 / 255.0)  # (256, 1)
    bgf, fg = np.asarray(bg, np.float32), np.asarray(text_color(bg), np.float32)
    ramp = (bgf * (1.0 - a) + fg * a).astype(np.uint8)
    ramp.flags.writeable = False
    return ramp


def draw_detections(
    image_bgr: np.ndarray,
    boxes,
    scores,
    labels,
    names: Sequence[str],
    *,
    line_width: Optional[int] = None,
    font_size: Optional[int] = None,
    show_score: bool = True,
    copy: bool = True,
) -> np.ndarray:
    """Draw boxes with ``"<name> <score>"`` labels on a BGR image.

    Args:
        image_bgr (uint8[H, W, 3]): the image (a copy is drawn on unless ``copy=False``).
        boxes (float[K, 4]): xyxy in the image's pixels (numpy or torch).
        scores (float[K]), labels (int[K]): confidences and 0-based class indices.
        names: class names indexed by label (any script).
        line_width, font_size: default scale with the image size, and with the boxes' median
            side where that is smaller (a store shelf's many small products).
    Returns:
        uint8[H, W, 3]: the annotated image.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"draw_detections expects a uint8 BGR image [H, W, 3], got {image_bgr.dtype} {image_bgr.shape}")
    img = image_bgr.copy() if copy else image_bgr
    boxes, scores, labels = (np.asarray(_numpy(a)) for a in (boxes, scores, labels))
    if len(boxes) == 0:
        return img
    H, W = img.shape[:2]
    # scale with the image, but not past the products: on a 12-MP shelf of 150-px products labels
    # sized to the photo (87 px) covered their neighbours
    side = float(np.median(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    lw = line_width or max(min(round((H + W) / 2 * 0.003), round(0.02 * side)), 1)
    fs = font_size or max(min(round((H + W) / 2 * 0.025), round(0.2 * side)), 11)
    order = np.argsort(scores, kind="stable")  # low scores first: the best label ends on top
    xyxy = np.round(boxes).astype(np.int64)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, W - 1)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, H - 1)
    for i in order:
        x1, y1, x2, y2 = (int(v) for v in xyxy[i])
        cv2.rectangle(img, (x1, y1), (x2, y2), class_color(int(labels[i])), lw, cv2.LINE_8)  # axis-aligned on whole pixels: anti-aliasing changed only the corners, at 3.6x the cost
    for i in order:
        label = int(labels[i])
        name = names[label] if 0 <= label < len(names) else str(label)
        text = f"{name} {float(scores[i]):.2f}" if show_score else name
        x1, y1 = int(xyxy[i, 0]), int(xyxy[i, 1])
        draw_label(img, text, x1 - (lw - 1) // 2, y1 - (lw - 1) // 2, class_color(label), fs)
    return img


def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy() if a.is_floating_point() else a.detach().cpu().numpy()
    return np.asarray(a)
