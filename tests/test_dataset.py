"""DetectionDataset: decoding (gray, alpha, 16-bit, corrupt, missing), the item contract,
labels following their boxes through crops, empty images, collate."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from detect.data.dataset import DetectionDataset, ImageReadError, Targets, collate, float_images, read_image_rgb
from detect.data.transforms import bbox_params, eval_transform, train_transform
from detect.structures import ImageRecord


def write(path: Path, img: np.ndarray) -> str:
    assert cv2.imwrite(str(path), img)
    return str(path)


def record(path: str, w: int, h: int, boxes=(), labels=(), difficult=None) -> ImageRecord:
    n = len(boxes)
    return ImageRecord(
        image=path, width=w, height=h,
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        labels=np.asarray(labels, np.int64).reshape(n),
        difficult=np.asarray(difficult if difficult is not None else [False] * n, bool),
        truncated=np.zeros(n, bool),
    )


def test_decode_gray_alpha_16bit_and_colour_order(tmp_path):
    gray = write(tmp_path / "g.png", np.full((5, 7), 100, np.uint8))
    bgra = np.zeros((5, 7, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0  # fully transparent
    alpha = write(tmp_path / "a.png", bgra)
    deep = np.zeros((5, 7, 3), np.uint16)
    deep[..., 0], deep[..., 2] = 65535, 257 * 100
    deep16 = write(tmp_path / "d16.png", deep)
    gray16 = write(tmp_path / "g16.png", np.full((5, 7), 257 * 7, np.uint16))
    bgr = write(tmp_path / "c.png", np.dstack([np.zeros((5, 7), np.uint8)] * 2 + [np.full((5, 7), 255, np.uint8)]))

    expected = {gray: (100, 100, 100), alpha: (30, 20, 10), deep16: (100, 0, 255), gray16: (7, 7, 7), bgr: (255, 0, 0)}
    for path, rgb in expected.items():
        img = read_image_rgb(path)
        assert img.shape == (5, 7, 3) and img.dtype == np.uint8, path
        assert tuple(img[2, 3].tolist()) == rgb, path


def test_decode_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\x00" * 300)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    good = cv2.imencode(".jpg", np.full((40, 40, 3), 128, np.uint8))[1].tobytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[:20])
    for path in (corrupt, empty, truncated, tmp_path / "missing.jpg"):
        with pytest.raises(ImageReadError) as e:
            read_image_rgb(path)
        assert str(path) in str(e.value) and e.value.path == str(path)
    with pytest.raises(ImageReadError, match="no image file"):
        read_image_rgb("")


def test_dataset_raises_on_a_corrupt_file_through_getitem(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    ds = DetectionDataset([record(str(bad), 10, 10)], eval_transform(32))
    with pytest.raises(ImageReadError, match="bad.png"):
        ds[0]


def test_item_contract(tmp_path):
    path = write(tmp_path / "x.jpg", np.full((60, 80, 3), 200, np.uint8))
    r = record(path, 80, 60, [[0, 0, 80, 60], [10, 20, 30, 40]], [2, 5], [False, True])
    image, t = DetectionDataset([r], eval_transform(40, "stretch"))[0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(t) == {"boxes", "labels", "difficult", "image_id", "orig_size", "input_hw"}
    assert t["input_hw"].tolist() == [40, 40]  # stretched: the whole input
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["difficult"].dtype == torch.bool
    torch.testing.assert_close(t["boxes"], torch.tensor([[0, 0, 40, 40], [5, 40 / 3, 15, 80 / 3]]), atol=1e-4, rtol=0)
    assert t["labels"].tolist() == [2, 5] and t["difficult"].tolist() == [False, True]
    assert t["image_id"] == 0 and t["orig_size"].tolist() == [60, 80] and t["orig_size"].dtype == torch.int64


def test_uint8_items_are_the_float_items_before_scaling(tmp_path):
    """The loaders' uint8 images (a quarter of the bytes between processes and to the device)
    become exactly the float items on the device."""
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    r = record(write(tmp_path / "x.png", img), 80, 60, [[10, 20, 30, 40]], [1])
    (f, tf), (u, tu) = DetectionDataset([r], eval_transform(40))[0], DetectionDataset([r], eval_transform(40), uint8=True)[0]
    assert u.dtype == torch.uint8 and u.shape == (3, 40, 40) and u.is_contiguous()
    batch, _ = collate([(u, tu), (u, tu)])
    assert batch.dtype == torch.uint8
    torch.testing.assert_close(float_images(batch)[0], f, rtol=0, atol=0)
    assert float_images(f) is f and torch.equal(tu["boxes"], tf["boxes"])


def test_targets_cross_processes_as_a_few_tensors_and_come_back_the_same():
    """A worker's batch of targets is pickled as one tensor per key (every tensor crossing a
    process border costs a shared-memory segment: 4-5 per image halved a loader's rate), and
    unpickles to the same per-image dicts: key order, dtypes, shapes, empty boxes, keys only
    some images have, non-tensor values, 0-d tensors and the unreadable list included."""
    import pickle

    from detect.data.dataset import _pack_targets
    from detect.structures import Unreadable

    t = Targets([
        {"boxes": torch.rand(2, 4), "labels": torch.tensor([1, 2]), "difficult": torch.tensor([True, False]),
         "image_id": 3, "orig_size": torch.tensor([5, 6]), "proposals": torch.rand(3, 4), "score": torch.tensor(0.5)},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "difficult": torch.zeros(0, dtype=torch.bool),
         "image_id": 4, "orig_size": torch.tensor([7, 8]), "score": torch.tensor(0.25)},
    ], [Unreadable(1, "a.jpg", "gone")])
    n, keys, packed, rest = _pack_targets(t)
    assert set(packed) == {"boxes", "labels", "difficult", "orig_size"} and set(rest) == {"image_id", "proposals", "score"}
    u = pickle.loads(pickle.dumps(t))
    assert type(u) is Targets and u.unreadable == t.unreadable and [list(d) for d in u] == [list(d) for d in t]
    for a, b in zip(t, u):
        for k, v in a.items():
            if torch.is_tensor(v):
                assert b[k].dtype == v.dtype and b[k].shape == v.shape and torch.equal(b[k], v)
            else:
                assert b[k] == v
    assert pickle.loads(pickle.dumps(Targets())) == []


def test_crop_drops_labels_and_flags_with_their_boxes(tmp_path):
    path = write(tmp_path / "x.png", np.zeros((100, 200, 3), np.uint8))
    boxes = [[10, 10, 40, 40], [80, 10, 120, 50], [92, 60, 132, 90], [150, 10, 190, 90]]
    r = record(path, 200, 100, boxes, [3, 1, 4, 0], [True, False, True, False])
    crop = A.Compose([A.Crop(0, 0, 100, 100), A.Resize(50, 50)], bbox_params=bbox_params(0.3))
    _, t = DetectionDataset([r], crop)[0]
    assert t["labels"].tolist() == [3, 1] and t["difficult"].tolist() == [True, False]
    torch.testing.assert_close(t["boxes"], torch.tensor([[5.0, 5, 20, 20], [40, 5, 50, 25]]))


def test_border_boxes_and_empty_images(tmp_path):
    path = write(tmp_path / "x.png", np.zeros((30, 50, 3), np.uint8))
    edge = record(path, 50, 30, [[0, 0, 50, 30], [45.5, 25, 50.4, 30.2]], [0, 1])  # the last a bit outside
    empty = record(path, 50, 30)
    ds = DetectionDataset([edge, empty], train_transform(32, 1.0, 0.3))
    torch.manual_seed(0)
    for _ in range(5):
        _, t = ds[1]
        assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["difficult"].shape == (0,)
    _, t = DetectionDataset([edge], eval_transform(32))[0]
    assert t["labels"].tolist() == [0, 1]
    assert float(t["boxes"][:, 2].max()) <= 32 and float(t["boxes"][:, 3].max()) <= 32


def test_size_mismatch_with_the_cache_is_an_error(tmp_path):
    path = write(tmp_path / "x.png", np.zeros((30, 50, 3), np.uint8))
    with pytest.raises(ImageReadError, match="differs from the cache"):
        DetectionDataset([record(path, 60, 30)], eval_transform(32))[0]


def test_collate_and_reproducible_augmentation(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    path = write(tmp_path / "x.png", img)
    recs = [record(path, 60, 40, [[5, 5, 30, 30]], [1]), record(path, 60, 40)]
    images, targets = collate([DetectionDataset(recs, eval_transform(24))[i] for i in range(2)])
    assert images.shape == (2, 3, 24, 24) and [t["image_id"] for t in targets] == [0, 1]

    def run() -> list[torch.Tensor]:
        torch.manual_seed(123)
        ds = DetectionDataset(recs, train_transform(24, 1.0, 0.3))
        return [ds[0][0] for _ in range(4)]

    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(a[0], x) for x in a[1:])  # it does augment

    with pytest.raises(ValueError, match="one size"):
        collate([(torch.zeros(3, 8, 8), {}), (torch.zeros(3, 9, 9), {})])


def test_decoder_warnings_name_the_file(tmp_path, capfd):
    """libjpeg printed 'Corrupt JPEG data: ...' for a damaged image, naming no file."""
    from test_voc_parser import corrupt_jpeg

    path = corrupt_jpeg(tmp_path / "damaged.jpg")
    assert read_image_rgb(path).shape == (30, 40, 3)  # decoded, as before
    err = capfd.readouterr().err
    assert f"warning: {path}: the image decoder says: Corrupt JPEG data" in err
    png = tmp_path / "cut.png"
    data = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8))[1].tobytes()
    png.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png: not a decodable image .*libpng error"):
        read_image_rgb(png)
    assert f"{png}" not in capfd.readouterr().err  # said once, in the error
