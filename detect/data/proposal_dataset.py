"""A :class:`~detect.data.dataset.DetectionDataset` whose targets also carry precomputed
proposals, transformed with the image.

Each item's target gains ``proposals``: float32[P, 4] xyxy in pixels of the S x S model
input, ranked best first. The proposals are handed to :meth:`DetectionDataset.item` as extra
boxes, which go through the *same* albumentations call as the ground-truth boxes, so every
crop, flip and resize moves them exactly as it moves the image; a crop drops a proposal when
less than ``min_visibility`` of it stays in view, as it drops a ground-truth box. Which model
needs proposals is not this module's business: the engine builds a ProposalDataset for a
Fast R-CNN that takes them (:mod:`detect.engine.datasets`).

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
from detect.data.proposal_files import ProposalFileError, ProposalSet, load_proposals
from detect.structures import ImageRecord, Unreadable


class ProposalDataset(DetectionDataset):
    """Records + transform (as :class:`DetectionDataset`) + a :class:`ProposalSet`.

    Args:
        proposals: a :class:`ProposalSet` or the path of a proposal cache/file.
        max_proposals: keep each image's best this many (0: all).
        options: :class:`DetectionDataset`'s ``skip_unreadable`` and ``uint8``.

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
        **options: Any,
    ) -> None:
        super().__init__(records, transform, **options)  # skip_unreadable, uint8
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
        got = self.item(i, extra_boxes=props)  # the proposals go through the image's transform
        if isinstance(got, Unreadable):
            return got
        image, target, moved = got
        target["proposals"] = torch.from_numpy(moved.reshape(-1, 4).astype(np.float32, copy=False))
        return image, target
