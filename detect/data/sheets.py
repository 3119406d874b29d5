"""Sheets: photos tiled ``cols x rows`` into one large image, neighbours of different product
kinds, products at the size they have in their photos.

On data whose photos each hold one product kind (groceries: all 2,720), a sheet is the nearest
thing to a store shelf the data allows: many kinds in one image, read by slicing. The mosaic
stage of ``detect train`` (:mod:`detect.engine.stages`) scores its end on the val photos and on
sheets of them (``--val-sheets``, which any run can use); ``bench/dense.py`` scores models on
them (its groceries mosaics and 6x8 sheets).

Each photo sits at the top-left of a ``cell x cell`` square (``cell``: the largest photo side),
grey around it (:data:`GREY`, the letterbox's fill); its boxes move with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from detect.data.letterbox import PAD_VALUE as GREY  # what the model sees around a photo that is not square
from detect.structures import ImageRecord


def interleaved(records: Sequence[Any], rng: Optional[np.random.Generator] = None) -> list:
    """``records`` ordered so that neighbours hold different product kinds: one record of each
    class in turn (a record's kind: its first label; -1 without boxes). ``rng`` shuffles the
    classes' order and each class's records first: another arrangement of the same photos."""
    by_class: dict[int, list] = {}
    for r in records:
        by_class.setdefault(int(r.labels[0]) if len(r.labels) else -1, []).append(r)
    queues = [list(v) for v in by_class.values()]
    if rng is not None:
        queues = [[q[i] for i in rng.permutation(len(q))] for q in queues]
        queues = [queues[i] for i in rng.permutation(len(queues))]
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order


def tile(images: Sequence[np.ndarray], targets: Sequence[dict], cols: int, rows: int,
         cell: Optional[int] = None) -> tuple[list[np.ndarray], list[dict]]:
    """Every ``cols * rows`` images (uint8[H, W, 3], H and W <= ``cell``) as one sheet
    uint8[rows * cell, cols * cell, 3], row by row; photos left over at the end make no sheet.
    ``targets``: dicts of ``boxes`` (float[N, 4] xyxy pixels), ``labels`` (int[N]) and
    ``difficult`` (bool[N]); the sheets' targets hold them shifted to the sheet."""
    cell = int(cell or max(max(im.shape[:2]) for im in images))
    sheets, sheet_targets = [], []
    per = cols * rows
    for k in range(0, len(images) - per + 1, per):
        sheet = np.full((rows * cell, cols * cell, 3), GREY, np.uint8)
        boxes, labels, difficult = [], [], []
        for j in range(per):
            im, t = images[k + j], targets[k + j]
            x0, y0 = (j % cols) * cell, (j // cols) * cell
            h, w = im.shape[:2]
            if h > cell or w > cell:
                raise ValueError(f"image {k + j} is {w}x{h}, larger than the cell ({cell} px)")
            sheet[y0:y0 + h, x0:x0 + w] = im
            boxes.append(np.asarray(t["boxes"], np.float64).reshape(-1, 4) + [x0, y0, x0, y0])
            labels.append(np.asarray(t["labels"], np.int64).reshape(-1))
            difficult.append(np.asarray(t["difficult"], bool).reshape(-1))
        sheets.append(sheet)
        sheet_targets.append({"boxes": np.concatenate(boxes), "labels": np.concatenate(labels),
                              "difficult": np.concatenate(difficult)})
    return sheets, sheet_targets


def write_sheets(records: Sequence[ImageRecord], n: int, folder: str | Path,
                 log: Callable[[str], None] = print) -> list[ImageRecord]:
    """``records`` (interleaved) tiled ``n x n`` into JPEG sheets ``folder/sheet_NNN.jpg``
    (written atomically) and their records. A photo that cannot be read leaves its cell grey
    and its boxes out (said once, naming the files)."""
    from detect.data.dataset import ImageReadError, read_image_rgb
    from detect.utils import atomic_write_bytes

    order = interleaved(records)
    per = n * n
    order = order[:len(order) - len(order) % per]
    if not order:
        return []
    cell = max(max(int(r.width), int(r.height)) for r in order)
    unread: list[str] = []
    out: list[ImageRecord] = []
    for s in range(len(order) // per):
        group = order[s * per:(s + 1) * per]
        images, targets = [], []
        for r in group:
            try:
                im = read_image_rgb(r.image)  # uint8[H, W, 3] RGB
                t = {"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult}
            except ImageReadError as e:
                unread.append(f"{r.image} ({e})")
                im = np.full((1, 1, 3), GREY, np.uint8)
                t = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "difficult": np.zeros(0, bool)}
            images.append(im[:cell, :cell])  # the cache's size is the image's: a photo that changed since is cut
            targets.append(t)
        (sheet,), (t,) = tile(images, targets, n, n, cell)
        path = Path(folder) / f"sheet_{s:03d}.jpg"
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError(f"{path}: JPEG encoding failed")
        atomic_write_bytes(path, jpeg.tobytes())
        out.append(ImageRecord(image=str(path), width=sheet.shape[1], height=sheet.shape[0],
                               boxes=t["boxes"].astype(np.float32), labels=t["labels"], difficult=t["difficult"],
                               truncated=np.zeros(len(t["labels"]), bool), annotation=""))
    if unread:
        log(f"warning: {len(unread)} val photo(s) could not be read for the sheets and were left grey; first: {unread[0]}")
    return out
