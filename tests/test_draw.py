"""Drawing: labels in any script (never '???'), readable on any background, inside the image."""

from __future__ import annotations

import numpy as np
import pytest

from detect.viz import draw as D


def test_cjk_names_render_as_glyphs_not_question_marks():
    name = "可口可乐"
    assert D.font_path() is not None, "no label font found: install cvttf-notosanscjk-regular"
    for ch in name + "お茶신라면":
        assert ord(ch) in D._cmap(), f"the label font has no glyph for {ch!r}"
    cjk = D.text_mask(name, 20)
    qmarks = D.text_mask("????", 20)
    tofu = D.text_mask("\U000f0000" * 4, 20)  # private-use code points: what a font without CJK draws
    assert (cjk > 128).sum() > 40  # ink exists
    # each Han character is a full-width glyph with many strokes: more ink than a '?' ...
    assert (cjk > 128).sum() > 1.5 * (qmarks > 128).sum()
    # ... and it is not the font's missing-glyph box either
    if cjk.shape == tofu.shape:
        assert not np.array_equal(cjk, tofu)
    # different characters give different pictures (not one fallback glyph repeated)
    assert not np.array_equal(D.text_mask("可口", 20), D.text_mask("乐乐", 20))


def test_cjk_label_drawn_on_image():
    img = np.full((120, 200, 3), 255, np.uint8)
    out = D.draw_detections(img, np.array([[20.0, 40, 180, 110]]), np.array([0.9]), np.array([1]), ["cola", "雪碧"])
    assert out.shape == img.shape and not np.array_equal(out, img)
    assert np.array_equal(img, np.full_like(img, 255)), "draw_detections must not change its input"
    label = out[: 40, 20:]  # above the box
    assert (label != 255).any()


@pytest.mark.parametrize("bg", [(0, 0, 0), (255, 255, 255), (0, 255, 255)])
def test_text_colour_contrasts_with_label_background(bg):
    fg = D.text_color(bg)
    luma = lambda c: 0.299 * c[2] + 0.587 * c[1] + 0.114 * c[0]  # noqa: E731
    assert abs(luma(fg) - luma(bg)) > 100


def test_labels_stay_inside_the_image():
    """A label at the right/bottom edge is shifted inside the image, not cut off."""
    H, W, fs = 50, 80, 12
    pad = max(fs // 6, 1)
    for box in ([70, 0, 80, 8], [72, 44, 80, 50], [0, 0, 10, 10]):
        img = np.zeros((H, W, 3), np.uint8)
        out = D.draw_detections(img, np.array([box], np.float32), np.array([1.0]), np.array([0]), ["abc"],
                                font_size=fs, line_width=1)
        colour = np.array(D.class_color(0), np.uint8)
        filled = np.all(out == colour, axis=2)  # label background and box outline
        cols = np.where(filled.sum(0) >= D.text_mask("abc 1.00", fs).shape[0])[0]  # columns of the label background
        want = D.text_mask("abc 1.00", fs).shape[1] + 2 * pad
        assert cols.size and cols.max() < W and cols.max() - cols.min() + 1 >= want - 2, (box, cols)


def test_one_colour_per_class_and_distinct():
    colours = [D.class_color(i) for i in range(25)]
    assert len(set(colours)) == 25
    assert D.class_color(3) == D.class_color(3)


def test_empty_and_bad_inputs():
    img = np.zeros((10, 10, 3), np.uint8)
    out = D.draw_detections(img, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), ["x"])
    assert np.array_equal(out, img)
    with pytest.raises(ValueError, match="uint8 BGR"):
        D.draw_detections(np.zeros((10, 10), np.uint8), np.zeros((0, 4)), [], [], [])


def test_torch_inputs_accepted():
    torch = pytest.importorskip("torch")
    img = np.zeros((40, 40, 3), np.uint8)
    out = D.draw_detections(img, torch.tensor([[5.0, 5, 30, 30]]), torch.tensor([0.5]), torch.tensor([0]), ["x"])
    assert (out != 0).any()


@pytest.mark.parametrize("bg", [(0, 0, 0), (255, 255, 255), (30, 200, 90)])
def test_label_pixels_are_the_alpha_blend_of_text_on_its_background(bg):
    """The label is its background blended with the text colour by the glyph mask
    (``bg * (1 - a) + fg * a``, truncated to uint8), wherever it lands."""
    fs, text = 20, "milk 0.87"
    img = np.random.default_rng(0).integers(0, 256, (120, 300, 3), dtype=np.uint8)
    D.draw_label(img, text, 30, 80, bg, fs)
    mask = D.text_mask(text, fs)
    pad = max(fs // 6, 1)
    y0 = 80 - (mask.shape[0] + 2 * pad)
    a = mask[..., None].astype(np.float32) / 255.0
    want = (np.asarray(bg, np.float32) * (1 - a) + np.asarray(D.text_color(bg), np.float32) * a).astype(np.uint8)
    got = img[y0 + pad : y0 + pad + mask.shape[0], 30 + pad : 30 + pad + mask.shape[1]]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert (img[y0, 30 : 30 + mask.shape[1] + 2 * pad] == np.asarray(bg, np.uint8)).all()  # the pad row is plain bg
