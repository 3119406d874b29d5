"""How an image becomes the model's ``S x S`` input, declared once for training, evaluation and
inference (standard library only, so inference does not import albumentations).

``letterbox`` (the default): the longer side scaled to S, the aspect ratio kept, the image at the
top-left corner and the rest padded with :data:`PAD_VALUE`; a box maps back by ``w / w'`` and
``h / h'`` and no offset. ``stretch``: both sides scaled to S (checkpoints from before
letterboxing).
"""

from __future__ import annotations

PAD_VALUE = 114  # grey padding of letterboxed inputs (training, evaluation, inference alike)
RESIZE_MODES = ("letterbox", "stretch")


def input_size(h: int, w: int, imgsz: int, resize: str = "letterbox") -> tuple[int, int]:
    """(h', w'): where an ``h`` x ``w`` image lands in the ``imgsz`` x ``imgsz`` input (the rest is
    padding). Each side is rounded on its own, as OpenCV and albumentations resize, so a box maps
    back by ``w / w'`` and ``h / h'``."""
    if resize == "stretch":
        return imgsz, imgsz
    s = imgsz / max(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))
