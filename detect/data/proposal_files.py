"""Precomputed region proposals: the proposal cache format and proposal files from elsewhere.

Two sources, one in-memory form (:class:`ProposalSet`: image -> float32[P, 4] xyxy in 0-based
pixels of the *original* image, best first, optional float32[P] scores):

1. **Proposal caches** written by ``detect proposals CACHE`` (:mod:`detect.engine.proposal_cache`):
   one pickle (protocol 5) of plain containers and numpy arrays, written atomically, read only
   through the restricted unpickler (pickle runs code; see :mod:`detect.data.cache.safe_pickle`).
   Columnar like the annotation cache, so thousands of images load in milliseconds::

       format, schema     "retail-detect/proposals", 1
       method             {"name": "selective_search", "mode", "max", "resize", "min_size"}
       annotations        {"path": the annotation cache, "images": its image list, in order}
       images             list[str] (I image paths)   size, mtime_ns: int64[I] (their fingerprint,
                          for incremental updates)   seconds: float32[I] (compute time each)
       box_start          int64[I + 1]   boxes float32[M, 4]   scores None (ranked, no scores)

2. **Proposal files** of your own method, in any of these containers, keyed by the image's
   path (as in the annotation cache) or by its file stem (``BEANS0001``; must be unique):

   - ``.npz``: one array per image, ``float32[P, 4]`` (x1, y1, x2, y2) or ``[P, 5]`` with a
     score column; read with ``allow_pickle=False``. (``np.savez(f, **{stem: boxes})``.)
   - ``.json``: ``{"<path or stem>": [[x1, y1, x2, y2(, score)], ...], ...}``.
   - ``.pkl``: ``{"<path or stem>": float32[P, 4 or 5] array or {"boxes": [P, 4], "scores": [P]}}``
     (numpy arrays and plain containers only: the same restricted unpickler refuses the rest).

   Boxes are float xyxy in 0-based pixels of the original image, x2/y2 the exclusive edge
   (as everywhere in this project, see :mod:`detect.structures`), ranked best first (when a
   score column is given and the boxes are not sorted, they are sorted by it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detect.data.cache.safe_pickle import NUMPY_GLOBALS, load_pickle_or_raise, load_versioned_pickle
from detect.errors import UsageError
from detect.readers import MAX_JSON_BYTES, FileReadError, parse_json, read_file

FORMAT = "retail-detect/proposals"
SCHEMA = 1


class ProposalFileError(UsageError):
    """A proposal cache or file that cannot be used: the message names the file and the fix."""


@dataclass
class ProposalSet:
    """Proposals per image in original-image pixels.

    Attributes:
        boxes: image key -> float32[P, 4] xyxy, ranked best first.
        scores: image key -> float32[P] (only for sources that have scores).
        method: how they were made (``{"name": "selective_search", ...}`` or ``{"name": "file", ...}``).
        source: the file they were read from.
    """

    boxes: dict[str, np.ndarray]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        stems: dict[str, list[str]] = {}
        for key in self.boxes:
            stems.setdefault(Path(key).stem, []).append(key)
        self._by_stem = {s: keys[0] for s, keys in stems.items() if len(keys) == 1}
        self._by_abspath = {os.path.abspath(k): k for k in self.boxes}

    def __len__(self) -> int:
        return len(self.boxes)

    def key_for(self, image_path: str) -> Optional[str]:
        """The key holding ``image_path``'s proposals: the same path, the same absolute path,
        or (when unique) the same file stem; None when this set has none for it."""
        if image_path in self.boxes:
            return image_path
        key = self._by_abspath.get(os.path.abspath(image_path))
        if key is None:
            key = self._by_stem.get(image_path) or self._by_stem.get(Path(image_path).stem)
        return key

    def get(self, image_path: str) -> Optional[np.ndarray]:
        """float32[P, 4] proposals of ``image_path`` (original pixels), or None."""
        key = self.key_for(image_path)
        return None if key is None else self.boxes[key]


# ------------------------------------------------------------------------------ cache files


def read_proposal_cache(path: str | os.PathLike) -> dict[str, Any]:
    """The validated raw dict of a proposal cache; :class:`ProposalFileError` for a truncated,
    foreign, unsafe or other-schema file (never half a cache)."""
    data = load_versioned_pickle(path, FORMAT, SCHEMA, what="proposal cache", rebuild="detect proposals", error=ProposalFileError)
    return _check_cache(data, os.fspath(path))


def _check_cache(data: dict[str, Any], path: str) -> dict[str, Any]:
    """Cheap structural checks, so a damaged file fails here rather than deep in training."""
    if data.get("schema") != SCHEMA:
        raise ProposalFileError(f"{path}: proposal cache schema {data.get('schema')!r}, this version reads {SCHEMA}; rebuild it with `detect proposals`")
    try:
        n = len(data["images"])
        start, boxes = data["box_start"], data["boxes"]
        ok = (len(data["size"]) == n and len(data["mtime_ns"]) == n and len(data["seconds"]) == n
              and len(start) == n + 1 and int(start[-1]) == len(boxes) and boxes.ndim == 2 and boxes.shape[1] == 4
              and bool((np.diff(start) >= 0).all()) and isinstance(data["method"], dict))
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        raise ProposalFileError(f"{path}: inconsistent proposal cache ({e}); rebuild it with `detect proposals`") from None
    if not ok:
        raise ProposalFileError(f"{path}: inconsistent proposal cache (column lengths differ); rebuild it with `detect proposals`")
    return data


def proposal_set_from_cache(data: dict[str, Any], source: str = "") -> ProposalSet:
    start = data["box_start"]
    boxes = {img: data["boxes"][int(start[i]) : int(start[i + 1])] for i, img in enumerate(data["images"])}
    return ProposalSet(boxes, {}, dict(data["method"]), source)


def load_proposals(path: str | os.PathLike) -> ProposalSet:
    """Proposals from a proposal cache or a proposal file (``.pkl``, ``.npz``, ``.json``; see
    the module docstring for the format).

    Raises:
        FileNotFoundError: no such file.
        ProposalFileError: unreadable, unsafe or malformed; the message names the file and entry.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"proposal file {path} not found (make one with `detect proposals CACHE -o {path}`)")
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise ProposalFileError(f"{path}: not a readable .npz of arrays ({e})") from None
        return _from_mapping(raw, path)
    if suffix == ".json":
        try:  # the bounded reader and parser (regular file, 1 GiB, depth and number limits)
            raw = parse_json(read_file(path, "proposal file", MAX_JSON_BYTES))
        except FileReadError as e:
            raise ProposalFileError(str(e)) from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, the limits
            raise ProposalFileError(f"{path}: not valid JSON ({str(e)[:300]})") from None
        return _from_mapping(raw, path)
    raw = load_pickle_or_raise(path, NUMPY_GLOBALS, ProposalFileError)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return proposal_set_from_cache(_check_cache(raw, path), path)
    return _from_mapping(raw, path)


def _from_mapping(raw: Any, path: str) -> ProposalSet:
    if not isinstance(raw, dict):
        raise ProposalFileError(f"{path}: expected a mapping image path or stem -> boxes, got {type(raw).__name__}")
    boxes, scores = {}, {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ProposalFileError(f"{path}: key {key!r} is not a string (use the image path or stem)")
        b, s = _entry(value, f"{path}: {key}")
        boxes[key], scores[key] = b, s
    scores = {k: v for k, v in scores.items() if v is not None}
    return ProposalSet(boxes, scores, {"name": "file", "source": os.path.abspath(path)}, path)


def _entry(value: Any, where: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """One image's proposals -> (float32[P, 4], float32[P] or None), sorted by score if given."""
    s = None
    if isinstance(value, dict):
        if "boxes" not in value:
            raise ProposalFileError(f"{where}: a dict entry needs a 'boxes' key")
        arr, s = value["boxes"], value.get("scores")
    else:
        arr = value
    try:
        arr = np.asarray(arr, np.float32)
        if arr.size == 0:
            arr = arr.reshape(0, 4)
        if arr.ndim != 2 or arr.shape[1] not in (4, 5):
            raise ValueError(f"shape {arr.shape}")
        if arr.shape[1] == 5:
            arr, s = arr[:, :4], arr[:, 4]
        if s is not None:
            s = np.asarray(s, np.float32).reshape(-1)
            if len(s) != len(arr):
                raise ValueError(f"{len(s)} scores for {len(arr)} boxes")
    except (ValueError, TypeError) as e:
        raise ProposalFileError(f"{where}: expected [P, 4] boxes x1, y1, x2, y2 (or [P, 5] with a score): {e}") from None
    if not np.isfinite(arr).all():
        raise ProposalFileError(f"{where}: boxes contain NaN or inf")
    if s is not None and len(s) > 1 and (np.diff(s) > 0).any():
        order = np.argsort(-s, kind="stable")
        arr, s = arr[order], s[order]
    return np.ascontiguousarray(arr), s
