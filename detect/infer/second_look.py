"""The second look at inference: every detection's crop is classified by a crop classifier
(:mod:`detect.models.crop_classifier`, trained by ``detect train-classifier``) and its score
becomes the geometric mean of the detector's score and the classifier's probability of the
detection's class: ``sqrt(score * P(class | crop))``.

Why a product of the two: the detector's score carries where and whether (and, through its
image-level context, what the window holds), the crop's probability carries which product,
free of the neighbours; a detection both agree on keeps its score, one the crop disagrees with
falls below the right class's twin from the same box. Relabelling each box with the crop's own
top classes instead lost 0.02-0.04 on groceries single photos (the detector's class still knows
more there); the square root keeps the score on the detector's scale, so ``conf`` keeps its
meaning, and does not change any ranking.

Boxes a detector reports for several classes (an SSD's default box scores every class; the
boxes are the same) are cropped and classified once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from detect.data.crops import crops_of
from detect.errors import UsageError
from detect.models.crop_classifier import KIND, CropClassifier, CropClassifierConfig
from detect.structures import Detections


class SecondLook:
    """A crop classifier loaded from ``path`` (``detect train-classifier``'s best.pt) for the
    detector's class names ``classes`` (the same names, in any order)."""

    def __init__(self, path: str | Path, classes: Sequence[str], device: torch.device, batch: int = 128) -> None:
        from detect.engine.checkpoint import load_checkpoint

        path = Path(path)
        try:
            ckpt = load_checkpoint(path)
        except (ValueError, KeyError, RuntimeError, OSError) as e:  # CheckpointError included
            raise UsageError(f"cannot load classifier {path}: {e}") from None
        if ckpt.get("kind") != KIND:
            raise UsageError(f"{path} is a detector's checkpoint, not a crop classifier: pass it as --weights, and as "
                             "--classifier the best.pt of `detect train-classifier`")
        names = list(ckpt["classes"])
        missing = [c for c in classes if c not in names]
        if missing:
            raise UsageError(f"classifier {path} does not know the detector's classes {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}; train it on the same data")
        self.cfg = CropClassifierConfig.from_dict(ckpt["config"])
        model = CropClassifier(self.cfg, pretrained="none")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise UsageError(f"classifier {path}: weights do not fit its config: {e}") from None
        self.model = model.to(device).eval()
        self.device, self.batch, self.path = device, int(batch), path
        self.columns = torch.tensor([names.index(c) for c in classes])  # detector class i -> classifier column

    @torch.inference_mode()
    def probabilities(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """float32[N, K]: P(detector class k | crop of box n), for one BGR image."""
        if len(boxes) == 0:
            return np.zeros((0, len(self.columns)), np.float32)
        # cut from the BGR photo and flip the crops' channels: a 12-MP photo is not converted whole
        # (the grey padding is the same in both orders)
        crops = np.ascontiguousarray(crops_of(image_bgr, boxes, self.cfg.size, self.cfg.expand)[..., ::-1])  # (N, S, S, 3) RGB
        out = []
        for i in range(0, len(crops), self.batch):
            logits = self.model(torch.from_numpy(crops[i : i + self.batch]).to(self.device))  # (b, K')
            out.append(torch.softmax(logits.float(), 1)[:, self.columns.to(logits.device)].cpu())  # (b, K)
        return torch.cat(out).numpy()

    def rescore(self, images: Sequence[np.ndarray], detections: Sequence[Detections], conf: float = 0.0,
                max_det: Optional[int] = None) -> list[Detections]:
        """Each image's detections with scores ``sqrt(score * P(label | crop))``, those under
        ``conf`` dropped, by decreasing score (at most ``max_det``)."""
        out = []
        for image, det in zip(images, detections):
            if len(det) == 0:
                out.append(det)
                continue
            boxes, inverse = np.unique(det.boxes, axis=0, return_inverse=True)  # one crop per distinct box
            probs = self.probabilities(image, boxes)  # (U, K)
            p = probs[inverse.reshape(-1), det.labels]  # (N,)
            scores = np.sqrt(det.scores * p).astype(np.float32)
            keep = np.flatnonzero(scores >= conf)
            keep = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
            out.append(Detections(det.boxes[keep], scores[keep], det.labels[keep], det.classes))
        return out
