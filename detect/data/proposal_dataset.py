"""A :class:`~detect.data.dataset.DetectionDataset` whose targets also carry precomputed
proposals, transformed with the image.

Each item's target gains ``proposals``: float32[P, 4] xyxy in pixels of the S x S model
input, ranked best first. The proposals go through the *same* albumentations call as the
ground-truth boxes (appended to ``bboxes``, told apart by their ``index``), so every crop,
flip and resize moves them exactly as it moves the image; a crop drops a proposal when less
than ``min_visibility`` of it stays in view, as it drops a ground-truth box.

One consequence to know: ``RandomSizedBBoxSafeCrop`` keeps *every* box in view, proposals
included, and proposals cover most of an image, so that branch of the train crop becomes
close to no crop; ``RandomResizedCrop`` and the flips work as usual.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from detect.data.dataset import DetectionDataset
from detect.data.proposals import ProposalFileError, ProposalSet, load_proposals
from detect.structures import ImageRecord, Unreadable


class _WithProposals:
    """Wraps a ``transform(image=, bboxes=, index=)`` pipeline so the proposals set in
    ``self.proposals`` travel with the boxes; the transformed ones land in ``self.out``."""

    def __init__(self, transform: Optional[Callable[..., dict[str, Any]]]) -> None:
        self.transform = transform
        self.proposals = np.zeros((0, 4), np.float32)
        self.out = np.zeros((0, 4), np.float32)

    def set_random_seed(self, seed: int) -> None:
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def __call__(self, image: np.ndarray, bboxes: np.ndarray, index: np.ndarray) -> dict[str, Any]:
        n = len(bboxes)
        h, w = image.shape[:2]
        props = self.proposals.reshape(-1, 4).copy()
        np.clip(props, 0, [w, h, w, h], out=props)
        props = props[(props[:, 2] > props[:, 0]) & (props[:, 3] > props[:, 1])]  # albumentations rejects empty boxes
        if self.transform is None:
            self.out = props
            return {"image": image, "bboxes": bboxes, "index": index}
        both = np.concatenate([np.asarray(bboxes, np.float32).reshape(-1, 4), props])
        idx = np.concatenate([np.asarray(index, np.int64), n + np.arange(len(props))])  # >= n: a proposal
        out = self.transform(image=image, bboxes=both, index=idx)
        out_idx = np.asarray(out["index"], np.int64).reshape(-1)
        out_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        is_gt = out_idx < n
        # albumentations keeps box order, so the proposals stay ranked
        self.out = np.ascontiguousarray(out_boxes[~is_gt])
        return {"image": out["image"], "bboxes": out_boxes[is_gt], "index": out_idx[is_gt]}


class ProposalDataset(DetectionDataset):
    """Records + transform (as :class:`DetectionDataset`) + a :class:`ProposalSet`.

    Args:
        proposals: a :class:`ProposalSet` or the path of a proposal cache/file.
        max_proposals: keep each image's best this many (0: all).

    Attributes:
        missing: records whose image has no entry in the set; they get no proposals (in
            training the ground-truth boxes still are RoIs). When *no* record is found the
            set is for other images and :class:`ProposalFileError` is raised.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Optional[Callable[..., dict[str, Any]]],
        proposals: ProposalSet | str,
        max_proposals: int = 0,
    ) -> None:
        self._wrapped = _WithProposals(transform)
        super().__init__(records, self._wrapped)
        self.proposals = load_proposals(proposals) if isinstance(proposals, str) else proposals
        self.max_proposals = max_proposals
        self._keys = [self.proposals.key_for(r.image) for r in self.records]
        self.missing = [r.image for r, k in zip(self.records, self._keys) if k is None]
        if self.records and len(self.missing) == len(self.records):
            raise ProposalFileError(
                f"{self.proposals.source or 'proposals'}: none of the {len(self.records)} images has proposals there "
                f"(first image: {self.records[0].image}); was it made for another annotation cache?"
            )
        if self.missing:
            print(f"warning: {len(self.missing)} of {len(self.records)} images have no proposals in "
                  f"{self.proposals.source or 'the proposal set'} (first: {self.missing[0]}); they get none",
                  file=sys.stderr)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]] | Unreadable:
        key = self._keys[i]
        props = self.proposals.boxes[key] if key is not None else np.zeros((0, 4), np.float32)
        if self.max_proposals:
            props = props[: self.max_proposals]
        self._wrapped.proposals = props
        item = super().__getitem__(i)
        if isinstance(item, Unreadable):
            return item
        image, target = item
        target["proposals"] = torch.from_numpy(self._wrapped.out.reshape(-1, 4).astype(np.float32, copy=False))
        return image, target


def attach_proposals(dataset: DetectionDataset, model_cfg: Any) -> DetectionDataset:
    """The dataset to train or evaluate ``model_cfg`` (a :class:`detect.config.ModelConfig`) on:
    ``dataset`` itself, or, for a Fast R-CNN with precomputed proposals, a
    :class:`ProposalDataset` over the same records and transform reading
    ``model_cfg.extra["proposal_file"]``.

    Raises ProposalFileError when such a model has no proposal file configured.
    """
    if getattr(model_cfg, "name", "") != "fast_rcnn" or getattr(model_cfg, "proposals", "rpn") == "rpn":
        return dataset
    extra = dict(getattr(model_cfg, "extra", None) or {})
    path = extra.get("proposal_file")
    if not path:
        raise ProposalFileError(
            f"model.proposals={model_cfg.proposals!r} needs a proposal file: run `detect proposals CACHE -o FILE.pkl` "
            "(or bring your own, see detect/data/proposals.py) and set model.extra.proposal_file: FILE.pkl"
        )
    wrapped = ProposalDataset(dataset.records, dataset.transform, str(path), int(extra.get("max_proposals", 0) or 0))
    wrapped.skip_unreadable = dataset.skip_unreadable
    return wrapped
