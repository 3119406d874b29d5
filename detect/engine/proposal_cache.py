"""``detect proposals``: selective-search proposals for every image of an annotation cache,
cached beside it (the tools stage of Fast R-CNN).

Flow: load the annotation cache -> fingerprint its images (path, size, mtime) -> reuse the old
proposal cache's entries whose fingerprint and settings are unchanged -> run selective search
on the rest in parallel (one process per core) -> write the proposal cache atomically ->
print recall at 100/300/1,000/2,000 proposals and IoU 0.5/0.7 against the ground truth.

The format is described in :mod:`detect.data.proposal_files`. Exit codes: 0 done, 1 done but some
images could not be read (they get no proposals, listed on stderr), 2 usage error.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from detect.data.proposal_files import FORMAT, SCHEMA, ProposalFileError, proposal_set_from_cache, read_proposal_cache
from detect.models.selective_search import MODES, proposal_recall, selective_search
from detect.utils import atomic_write, die_with_parent

SERIAL_BELOW = 8  # images; fewer run in-process (a pool costs a fraction of a second to start)
TOPS = (100, 300, 1000, 2000)
IOUS = (0.5, 0.7)


@dataclass
class ProposalBuild:
    """What :func:`build_proposal_cache` did: ``data`` (the raw cache dict), ``computed``
    (images searched in this run), ``reused``, ``failed`` ([(image, reason)]), ``seconds``."""

    path: str
    data: dict[str, Any]
    computed: list[str]
    reused: int
    failed: list[tuple[str, str]]
    seconds: float


def default_output(cache_path: str, mode: str) -> str:
    """``g.pkl`` -> ``g.ss-fast.pkl`` beside the annotation cache."""
    p = Path(cache_path)
    return str(p.with_name(f"{p.stem}.ss-{mode}.pkl"))


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return int(st.st_size), int(st.st_mtime_ns)
    except OSError:
        return -1, -1


def _search_one(job: tuple[str, str, int, int]) -> tuple[str, Optional[np.ndarray], float, str]:
    """Worker: (image path, mode, max, resize) -> (path, boxes or None, seconds, error)."""
    import cv2

    from detect.data.dataset import ImageReadError, read_image_rgb

    cv2.setNumThreads(1)
    path, mode, max_boxes, resize = job
    t0 = time.perf_counter()
    try:  # the dataset's reader: the boxes must fit the pixels training sees (no EXIF rotation)
        rgb = read_image_rgb(path)
    except ImageReadError as e:
        return path, None, 0.0, e.reason
    boxes = selective_search(np.ascontiguousarray(rgb[:, :, ::-1]), mode=mode, max_boxes=max_boxes, resize=resize)
    return path, boxes, time.perf_counter() - t0, ""


def build_proposal_cache(
    cache_path: str,
    output: str,
    mode: str = "fast",
    max_boxes: int = 2000,
    resize: int = 500,
    workers: int = 0,
    progress: Optional[Callable[[int], Any]] = None,
    annotations: Any = None,
) -> ProposalBuild:
    """Selective-search proposals for the images of annotation cache ``cache_path``, written
    to ``output``. Only images that are new, or whose file changed (size or mtime), or all of
    them when the settings changed, are searched again.

    Raises FileNotFoundError / CacheError for an unusable annotation cache and ValueError for
    a bad option. ``annotations``: the cache already loaded from ``cache_path`` (saves reading it again).
    """
    from detect.data.cache.cache_file import load_cache

    if mode not in MODES:
        raise ValueError(f"--mode {mode!r}: expected one of {MODES}")
    if max_boxes < 0 or resize < 0:
        raise ValueError("--max and --resize must be >= 0")
    t0 = time.perf_counter()
    ann = annotations if annotations is not None else load_cache(cache_path)
    images = list(dict.fromkeys(r.image for r in ann.records if r.image))
    method = {"name": "selective_search", "mode": mode, "max": int(max_boxes), "resize": int(resize)}
    stats = [_stat(p) for p in images]

    old: dict[str, tuple[tuple[int, int], np.ndarray, float]] = {}
    if os.path.exists(output):
        try:
            prev = read_proposal_cache(output)
            if prev["method"] == method:
                boxes = proposal_set_from_cache(prev).boxes
                for i, img in enumerate(prev["images"]):
                    old[img] = ((int(prev["size"][i]), int(prev["mtime_ns"][i])), boxes[img], float(prev["seconds"][i]))
        except (ProposalFileError, OSError) as e:
            print(f"warning: {e}; rebuilding it", file=sys.stderr)

    results: dict[str, tuple[np.ndarray, float]] = {}
    todo = []
    for img, st in zip(images, stats):
        hit = old.get(img)
        if hit is not None and hit[0] == st and st[0] >= 0:
            results[img] = (hit[1], hit[2])
        else:
            todo.append(img)
    reused = len(results)
    failed: list[tuple[str, str]] = []
    jobs = [(p, mode, max_boxes, resize) for p in todo]
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    if len(jobs) < SERIAL_BELOW or n_workers == 1:
        outs = map(_search_one, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=min(n_workers, len(jobs)), initializer=die_with_parent, initargs=(os.getpid(),))
        outs = pool.map(_search_one, jobs, chunksize=max(1, min(16, len(jobs) // (4 * n_workers))))
    try:
        for path, boxes, secs, err in outs:
            if boxes is None:
                failed.append((path, err))
                boxes = np.zeros((0, 4), np.float32)
            results[path] = (boxes, secs)
            if progress is not None:
                progress(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    counts = np.array([len(results[p][0]) for p in images], np.int64)
    data = {
        "format": FORMAT,
        "schema": SCHEMA,
        "method": method,
        "annotations": {"path": os.path.abspath(cache_path), "images": images},
        "images": images,
        "size": np.array([s[0] for s in stats], np.int64),
        "mtime_ns": np.array([s[1] for s in stats], np.int64),
        "seconds": np.array([results[p][1] for p in images], np.float32),
        "box_start": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "boxes": np.concatenate([results[p][0] for p in images]).astype(np.float32).reshape(-1, 4)
        if images else np.zeros((0, 4), np.float32),
        "scores": None,
    }
    if todo or len(old) != len(images) or not os.path.exists(output):
        import pickle

        atomic_write(output, lambda f: pickle.dump(data, f, protocol=5))
    return ProposalBuild(output, data, todo, reused, failed, time.perf_counter() - t0)


def recall_table(data: dict[str, Any], records: list, tops: tuple[int, ...] = TOPS, ious: tuple[float, ...] = IOUS) -> str:
    """Recall of the ground truth (difficult boxes excluded) by each image's best proposals."""
    boxes = proposal_set_from_cache(data).boxes
    props, gts = [], []
    for r in records:
        if r.image not in boxes:
            continue
        props.append(boxes[r.image])
        keep = ~np.asarray(r.difficult, bool).reshape(-1) if len(r.difficult) == len(r.boxes) else slice(None)
        gts.append(np.asarray(r.boxes, np.float32).reshape(-1, 4)[keep])
    rec = proposal_recall(props, gts, tops, ious)
    n_props = np.diff(data["box_start"])
    lines = [f"proposals per image: mean {n_props.mean() if len(n_props) else 0:.0f}, "
             f"min {n_props.min() if len(n_props) else 0}, max {n_props.max() if len(n_props) else 0}; "
             f"ground-truth boxes: {sum(len(g) for g in gts)}",
             "recall  " + "".join(f"{'top ' + str(t):>10}" for t in tops)]
    for iou in ious:
        lines.append(f"IoU {iou:.1f} " + "".join(f"{rec[(t, iou)]:>10.3f}" for t in tops))
    return "\n".join(lines)
