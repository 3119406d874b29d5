"""Unique products in a video: track detections across frames and count each product once.

Tracker: ByteTrack (Zhang et al., ECCV 2022) from Roboflow's ``trackers`` package
(https://github.com/roboflow/trackers, Apache-2.0, released monthly, clean-room
re-implementations of SORT, ByteTrack, OC-SORT and BoT-SORT with tests against the
reference numbers). Why this one:

- licence: Apache-2.0 (with ``supervision``, MIT); BoxMOT, the other maintained collection,
  is AGPL-3.0, which a library like this one cannot ship; ``bytetracker`` (MIT) was last
  released in 2023 and ``supervision`` itself dropped its ByteTrack for ``trackers``;
- ByteTrack matches the low-score boxes too (a product half hidden by a hand or blurred by
  the pan keeps its track) and needs no appearance model (no weights to download; the shelf
  products of one class look alike, so re-identification features would not tell them apart);
- a walk along an aisle is a steady pan: the Kalman filter's constant-velocity model predicts
  it, so IoU matching holds even when products move a large part of their width per frame.

A product is counted once its track is confirmed (``min_frames`` consecutive matches, 5 by
default: with the shipped weights on an aisle walk of seed 7, 3 frames counted 15% too many,
false detections lasting a few frames and products flickering in and out; 5 frames, 4% too
many; on true boxes 5 frames miss 3% glimpsed at the ends of a walk) and stays one product however many frames it is
seen in; its class is the most frequent label over its track (one misread frame does not
make a second product).

Shorthand: K detections of a frame.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from detect.structures import Detections

TRACKER = "ByteTrack (trackers {version})"


def _tracker_module():
    try:
        import supervision
        import trackers
    except ImportError as e:  # an optional extra: say how to get it
        from detect.errors import UsageError

        raise UsageError(f"counting unique products in a video needs the tracker: pip install 'retail-detect[track]' "
                         f"(trackers, supervision); {e}") from None
    return trackers, supervision


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


class UniqueCounter:
    """Feed it each frame's detections; it tracks them and counts unique products.

    Args:
        fps: the video's frame rate (the tracker's lost-track buffer is in seconds at 30 fps).
        min_frames: consecutive frames a track needs before it counts as a product.
        lost_seconds: how long a track that lost its product is kept for it to come back.
        track_conf: detections under this score do not start tracks (they can continue one).
        match_iou: the least IoU of a detection and a track's predicted box to match.
    """

    def __init__(self, fps: float = 30.0, min_frames: int = 5, lost_seconds: float = 1.0, track_conf: float = 0.5,
                 match_iou: float = 0.2) -> None:
        trackers, self._sv = _tracker_module()
        fps = float(fps) if fps and fps > 0 else 30.0
        self.tracker = trackers.ByteTrackTracker(
            lost_track_buffer=max(1, int(round(lost_seconds * 30))), frame_rate=fps,
            track_activation_threshold=track_conf, minimum_consecutive_frames=min_frames,
            minimum_iou_threshold=match_iou, high_conf_det_threshold=track_conf)
        self.name = TRACKER.format(version=_version("trackers"))
        self.labels: dict[int, Counter] = defaultdict(Counter)  # track id -> its labels over the frames
        self.frames = 0

    def update(self, det: Detections) -> np.ndarray:
        """Track one frame; returns int64[K]: the track id of each detection (-1: not (yet) a
        confirmed track)."""
        self.frames += 1
        K = len(det)
        ids = np.full(K, -1, np.int64)
        sv_det = self._sv.Detections(xyxy=np.asarray(det.boxes, np.float64).reshape(K, 4),
                                     confidence=np.asarray(det.scores, np.float64).reshape(K),
                                     class_id=np.asarray(det.labels, np.int64).reshape(K),
                                     data={"index": np.arange(K)})
        out = self.tracker.update(sv_det)
        if len(out):
            ids[out.data["index"]] = out.tracker_id
        for i in np.flatnonzero(ids >= 0):
            self.labels[int(ids[i])][int(det.labels[i])] += 1
        return ids

    def track_labels(self) -> dict[int, int]:
        """Track id -> its class (the most frequent label, ties to the lower index)."""
        return {t: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for t, c in self.labels.items()}

    def counts(self, names: list[str]) -> dict[str, int]:
        """Unique products per class name, most first (classes with none left out)."""
        per = Counter(names[l] if 0 <= l < len(names) else str(l) for l in self.track_labels().values())
        return dict(sorted(per.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class VideoAudit:
    """Unique products of one video: ``unique`` (class name -> products), ``frames`` read,
    ``tracker`` (name and version), ``video`` (the annotated copy, when written)."""

    source: str
    frames: int
    unique: dict[str, int]
    tracker: str
    video: Optional[str] = None
    failed_frames: int = 0
    picture: Optional[str] = field(default=None, repr=False)  # a data URL of one annotated frame (not in to_dict)

    @property
    def total(self) -> int:
        return sum(self.unique.values())

    def to_dict(self) -> dict:
        return {"source": self.source, "frames": self.frames, "total": self.total, "unique": self.unique,
                "tracker": self.tracker, "video": self.video, "failed_frames": self.failed_frames}
