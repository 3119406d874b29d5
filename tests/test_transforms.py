"""Augmentations keep boxes on the pixels they cover, drop what a crop hides, and keep
border and empty cases working."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

import cv2

from detect.data.transforms import PAD_VALUE, bbox_params, eval_transform, train_transform

# Six pure colours (RGB), far apart in direction, so colour jitter cannot swap them.
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255]], np.float32)


def painted(h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A black image with six non-overlapping boxes, box i painted PALETTE[i]; one box
    touches the right and bottom border (x2 == w, y2 == h)."""
    boxes = np.array([[4, 6, 40, 50], [50, 10, 90, 40], [100, 4, 150, 36],
                      [10, 66, 60, 110], [70, 60, 110, 100], [120, 80, w, h]], np.float32)
    img = np.zeros((h, w, 3), np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes.astype(int), PALETTE.astype(np.uint8)):
        img[y1:y2, x1:x2] = c
    return img, boxes


def nearest_colour(pixels: np.ndarray) -> np.ndarray:
    """Index into PALETTE of the closest colour *direction* for each pixel (P, 3) -> (P,)."""
    v = pixels.astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-6
    p = PALETTE / np.linalg.norm(PALETTE, axis=1, keepdims=True)
    return (v @ p.T).argmax(1)


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_boxes_on_their_pixels(seed):
    img, boxes = painted()
    t = train_transform(64, strength=1.0, min_visibility=0.3)
    t.set_random_seed(seed)
    out = t(image=img, bboxes=boxes, index=np.arange(len(boxes)))
    im, ob, idx = out["image"], np.asarray(out["bboxes"]), np.asarray(out["index"], int)
    assert im.shape == (64, 64, 3) and im.dtype == np.uint8
    assert ob.shape == (len(idx), 4) and len(set(idx.tolist())) == len(idx)
    assert (ob[:, :2] >= 0).all() and (ob[:, 2:] <= 64).all() and (ob[:, 2:] > ob[:, :2]).all()
    for (x1, y1, x2, y2), i in zip(ob, idx):
        # the inner part of the box (1 px off the interpolated edges) is box i's colour
        inner = im[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1].reshape(-1, 3)
        if len(inner) < 4:
            continue
        bright = inner[inner.max(1) > 40]
        assert len(bright) > 0.9 * len(inner), f"box of colour {i} covers background"
        assert (nearest_colour(bright) == i).mean() > 0.95, f"box {i} moved off its pixels"


def test_dropped_boxes_are_those_the_crop_hides():
    """A fixed crop: box 0 fully inside, box 1 half inside, box 2 20% inside, box 3 outside."""
    img = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[10, 10, 40, 40], [80, 10, 120, 50], [92, 60, 132, 90], [150, 10, 190, 90]], np.float32)
    t = A.Compose([A.Crop(0, 0, 100, 100), A.Resize(50, 50)], bbox_params=bbox_params(min_visibility=0.3))
    out = t(image=img, bboxes=boxes, index=np.arange(4))
    assert np.asarray(out["index"]).tolist() == [0, 1]
    np.testing.assert_allclose(out["bboxes"], [[5, 5, 20, 20], [40, 5, 50, 25]], atol=1e-4)


def test_eval_transform_stretch_scales_boxes_and_keeps_border_boxes():
    img, boxes = painted(120, 160)
    out = eval_transform(64, "stretch")(image=img, bboxes=boxes, index=np.arange(len(boxes)))
    assert out["image"].shape == (64, 64, 3)
    scale = np.array([64 / 160, 64 / 120] * 2, np.float32)
    np.testing.assert_allclose(out["bboxes"], boxes * scale, atol=1e-3)
    assert np.asarray(out["index"]).tolist() == list(range(len(boxes)))
    whole = eval_transform(32, "stretch")(image=img, bboxes=np.array([[0, 0, 160, 120]], np.float32), index=[0])
    np.testing.assert_allclose(whole["bboxes"], [[0, 0, 32, 32]], atol=1e-4)


@pytest.mark.parametrize("h, w", [(120, 160), (160, 120), (64, 64), (30, 200)])
def test_letterbox_keeps_the_aspect_and_pads_right_and_bottom(h, w):
    """One scale factor for both axes, no offset: a box maps back by dividing by it."""
    img, boxes = painted(120, 160)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
    boxes = boxes * np.float32([w / 160, h / 120] * 2)
    out = eval_transform(64)(image=img, bboxes=boxes, index=np.arange(len(boxes)))
    im = out["image"]
    assert im.shape == (64, 64, 3)
    s = 64 / max(h, w)
    nh, nw = round(h * s), round(w * s)  # each side rounded: the factors are nw / w and nh / h
    np.testing.assert_allclose(np.asarray(out["bboxes"]), boxes * np.float32([nw / w, nh / h] * 2), atol=1e-3)
    assert (im[nh:, :] == PAD_VALUE).all() and (im[:, nw:] == PAD_VALUE).all()


def test_scale_crop_shows_small_products_at_the_crop_size():
    """A big photo with small products is cut at native scale: products come out about
    crop_object input pixels (the log-uniform jitter is 0.7-1.4), whatever the photo's size."""
    for big in (1200, 3000):
        img = np.zeros((big * 3 // 4, big, 3), np.uint8)
        side = big / 25  # 48 or 120 px products: 1/25 of the photo
        xs = np.arange(0, big - side, side * 1.5)
        boxes = np.float32([[x, 100, x + side, 100 + side] for x in xs])
        img[100:int(100 + side)] = 200
        t = train_transform(160, 1.0, 0.3, crop_object=40)
        sizes = []
        for seed in range(20):
            t.set_random_seed(seed)
            out = t(image=img, bboxes=boxes, index=np.arange(len(boxes)))
            b = np.asarray(out["bboxes"]).reshape(-1, 4)
            full = b[(b[:, 2] - b[:, 0]) > 0.9 * (b[:, 3] - b[:, 1])]  # uncut ones
            sizes += (full[:, 3] - full[:, 1]).tolist()
        assert sizes and 40 / 1.5 < np.median(sizes) < 40 * 1.5, (big, np.median(sizes))


def test_scale_crop_leaves_photos_with_big_products_whole_or_zoomed():
    img, boxes = painted(120, 160)  # products ~40 of 160 px: 16 px at 64 input, above 10 / 1.5
    t = train_transform(64, 1.0, 0.3, crop_object=10)
    t.set_random_seed(0)
    wins = [t.window(120, 160, boxes) for _ in range(200)]
    whole = sum(w is None for w in wins)
    assert 0.05 * 200 < whole < 0.5 * 200  # zoom-in crops with probability 0.75
    for w in wins:
        if w is not None:
            x0, y0, x1, y1 = w
            assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120


@pytest.mark.parametrize("make", [lambda: eval_transform(48), lambda: train_transform(48, 1.0, 0.3)])
def test_empty_images(make):
    t = make()
    for seed in range(5):
        if hasattr(t, "set_random_seed"):
            t.set_random_seed(seed)
        out = t(image=np.zeros((70, 90, 3), np.uint8), bboxes=np.zeros((0, 4), np.float32), index=np.arange(0))
        assert out["image"].shape == (48, 48, 3)
        assert np.asarray(out["bboxes"]).reshape(-1, 4).shape == (0, 4) and len(out["index"]) == 0


def test_strength_zero_is_eval():
    img, boxes = painted()
    a = train_transform(40, strength=0.0)(image=img, bboxes=boxes, index=np.arange(6))
    b = eval_transform(40)(image=img, bboxes=boxes, index=np.arange(6))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_allclose(a["bboxes"], b["bboxes"])


def test_train_transform_is_reproducible_for_a_seed():
    img, boxes = painted()
    outs = []
    for _ in range(2):
        t = train_transform(64, 1.0, 0.3)
        t.set_random_seed(7)
        outs.append([t(image=img, bboxes=boxes, index=np.arange(6)) for _ in range(3)])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_allclose(a["bboxes"], b["bboxes"])


class FourItems:
    """A dataset of four items ``get(i)``, as MosaicDataset wraps one."""

    transform = None
    records = ["r"] * 4

    def __init__(self, get):
        self.get = get

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.get(i)


def test_mosaic_keeps_scale_and_mixes_four_photos():
    import torch

    from detect.data.mosaic import MosaicDataset, mosaic

    S = 64
    items = []
    corner = [(40, 40), (4, 40), (40, 4), (4, 4)]  # each photo's product near the canvas centre
    for k in range(4):  # photo k: one 20 x 20 product of class k, image value 50 * (k + 1)
        im = torch.full((3, S, S), 50 * (k + 1), dtype=torch.uint8)
        x, y = corner[k]
        t = {"boxes": torch.tensor([[x, y, x + 20.0, y + 20.0]]), "labels": torch.tensor([k]),
             "difficult": torch.tensor([False]), "image_id": 7, "orig_size": torch.tensor([S, S])}
        items.append((im, t))
    image, t = mosaic(items, np.array([1.0, 1.0]))  # the window centred on the canvas: a quarter of each photo
    assert image.shape == (3, S, S) and image.dtype == torch.uint8
    assert sorted(t["labels"].tolist()) == [0, 1, 2, 3] and t["image_id"] == 7
    sides = (t["boxes"][:, 2:] - t["boxes"][:, :2])
    assert torch.all(sides == 20)  # native scale: nothing resized
    for (x0, y0, x1, y1), k in zip(t["boxes"].tolist(), t["labels"].tolist()):
        assert int(image[0, int(y0) + 1, int(x0) + 1]) == 50 * (k + 1)  # each box on its photo's pixels
    _, t = mosaic(items, np.array([0.5, 0.5]))  # the window is photo 0 exactly
    assert t["labels"].tolist() == [0]

    big = [(im, dict(t, boxes=torch.tensor([[4.0, 4.0, 60.0, 60.0]]))) for im, t in items]  # a product filling each photo

    np.random.seed(0)
    ds = MosaicDataset(FourItems(big.__getitem__), p=1.0, min_visibility=0.1)
    assert ds.records == ["r"] * 4 and len(ds) == 4
    got = [len(ds[i % 4][1]["labels"]) for i in range(8)]
    assert max(got) > 1  # mixed photos
    assert MosaicDataset(FourItems(big.__getitem__), p=0.0)[2][1]["labels"].tolist() == [2]


def test_centred_mosaic_puts_the_product_in_the_middle_with_other_photos_around():
    import torch

    from detect.data.mosaic import MosaicDataset, centred_layout, mosaic

    S = 64
    for box, slot in (([10, 10, 20, 20], 3), ([40, 8, 52, 30], 2), ([6, 40, 30, 60], 1), ([44, 44, 60, 60], 0)):
        got, at = centred_layout(np.array(box, float), S)
        assert got == slot  # the photo sits where the window reaching past its near edges stays on the canvas
        items = []
        for k in range(4):  # photo k: image value 50 * (k + 1); the centred photo holds the product
            im = torch.full((3, S, S), 50 * (k + 1), dtype=torch.uint8)
            b = torch.tensor([box], dtype=torch.float32) if k == slot else torch.tensor([[0.0, 0.0, 6.0, 6.0]])
            items.append((im, {"boxes": b, "labels": torch.tensor([k]), "difficult": torch.tensor([False]), "image_id": k}))
        image, t = mosaic(items, at, 0.3, base=slot)
        assert t["image_id"] == slot  # the centred photo's target
        product = t["boxes"][t["labels"] == slot][0]
        assert torch.allclose((product[:2] + product[2:]) / 2, torch.tensor([S / 2, S / 2]))  # in the middle, whole
        assert torch.allclose(product[2:] - product[:2], torch.tensor(box[2:], dtype=torch.float32) - torch.tensor(box[:2], dtype=torch.float32))
        assert len(torch.unique(image[0])) > 1  # other photos around it
    _, at = centred_layout(np.array([10.0, 10.0, 20.0, 20.0]), S, jitter=np.array([0.1, -0.1]))
    np.testing.assert_allclose(at, [1 + 15 / 64 + 0.1, 1 + 15 / 64 - 0.1])

    def item(i):
        t = {"boxes": torch.tensor([[8.0 * i, 8.0, 8.0 * i + 20, 28.0]]), "labels": torch.tensor([i]),
             "difficult": torch.tensor([False]), "image_id": i}
        return torch.full((3, S, S), 50 * (i + 1), dtype=torch.uint8), t

    np.random.seed(0)
    ds = MosaicDataset(FourItems(item), p=1.0, min_visibility=0.3, centre=1.0)
    for i in range(4):
        image, t = ds[i]
        assert t["image_id"] == i
        own = t["boxes"][t["labels"] == i]
        centres = (own[:, :2] + own[:, 2:]) / 2
        assert torch.any((centres - S / 2).abs().max(1).values <= S / 16 + 0.5)  # its product centred, within the jitter
