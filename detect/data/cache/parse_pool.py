"""Parsing many annotation files into one columnar table, in this process or a process pool
(:func:`parse_many`, used by :mod:`detect.data.cache.xml2pkl` for the files a build must parse).

Workers are forked when that is safe (milliseconds to start; they inherit the job list, so only
``(start, stop)`` crosses to them), else started by a forkserver. Each worker ends with the
command (``kill -9`` of the command once left 16 orphans parsing on), never scans the heap it
inherited, and parses its chunk with the garbage collector off (parsing makes no cycles).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from detect.data.images import ImageIndex
from detect.utils import cpu_count, die_with_parent

SERIAL_BELOW = 400  # files; fewer are parsed in-process (a pool costs ~0.1 s to start)

_WORKER: dict[str, Any] = {}


def _init_worker(index: Optional[ImageIndex], how: dict[str, Any], parent: int = 0,
                 jobs: Optional[list[tuple[str, str]]] = None) -> None:
    if parent:  # a pool worker: end with the command (kill -9 left 16 orphans parsing on)
        die_with_parent(parent)
        import gc

        gc.freeze()  # the heap a forked worker inherits: never scanned (nor copied page by page) by its collections
    _WORKER["index"], _WORKER["how"], _WORKER["jobs"] = index, how, jobs


def _parse_chunk(jobs: list[tuple[str, str]]) -> dict[str, Any]:
    import gc

    from detect.data.cache.columns import pack
    from detect.data.formats.voc import parse_file

    index, how = _WORKER["index"], _WORKER["how"]
    enabled = gc.isenabled()
    gc.disable()  # parsing makes no reference cycles; collector passes over the growing chunk cost ~6% (measured)
    try:
        return pack([parse_file(p, index, xml_rel_dir=d, **how) for p, d in jobs])
    finally:
        if enabled:
            gc.enable()


def _parse_range(start: int, stop: int) -> dict[str, Any]:
    """:func:`_parse_chunk` of the jobs a forked worker inherited: only two numbers cross to it."""
    return _parse_chunk(_WORKER["jobs"][start:stop])


def _mp_context():
    """``fork`` (workers start in milliseconds) unless torch is loaded: a process that may hold
    CUDA state or OpenMP threads is not safe to fork, so then ``forkserver`` (or ``spawn``)."""
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    if "fork" in methods and "torch" not in sys.modules:
        return mp.get_context("fork")
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def parse_many(jobs: list[tuple[str, str]], index: Optional[ImageIndex], how: dict[str, Any], workers: int = 0,
               progress: bool = True) -> dict[str, Any]:
    """Parse ``(xml_path, xml_rel_dir)`` jobs into one columnar table (row i = job i), with
    ``workers`` processes, this one included (0: one per available core; 1 or few jobs: in
    this process alone) and a tqdm bar on stderr for runs longer than a second. ``how``: keyword arguments of
    :func:`~detect.data.formats.voc.parse_file` (``require_image``, ``root``, ``max_bytes``, ``verify_images``)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import numpy as np
    from tqdm import tqdm

    from detect.data.cache.columns import concat

    workers = workers if workers > 0 else cpu_count()
    bar = tqdm(total=len(jobs), desc="xml2pkl", unit="file", file=sys.stderr, disable=not progress, delay=1.0, mininterval=0.25)
    _init_worker(index, how)  # this process parses, alone or beside the pool
    try:
        if workers <= 1 or len(jobs) < (SERIAL_BELOW // 16 if how.get("verify_images") else SERIAL_BELOW):  # decoding is slow
            tables = []
            for i in range(0, len(jobs), 512):
                tables.append(_parse_chunk(jobs[i : i + 512]))
                bar.update(min(512, len(jobs) - i))
            return concat(tables)
        # ~16 chunks per parser (was 8, up to 1024 files): the parsers finish closer together
        size = int(np.clip(len(jobs) // (workers * 16), 32, 512))
        bounds = [(i, min(i + size, len(jobs))) for i in range(0, len(jobs), size)]
        results: list[Any] = [None] * len(bounds)
        ctx = _mp_context()
        inherit = ctx.get_start_method() == "fork"  # forked workers have the job list: send (start, stop) only
        with ProcessPoolExecutor(workers - 1, mp_context=ctx, initializer=_init_worker,
                                 initargs=(index, how, os.getpid(), jobs if inherit else None)) as pool:
            futures = [pool.submit(_parse_range, a, b) if inherit else pool.submit(_parse_chunk, jobs[a:b]) for a, b in bounds]
            try:
                # The pool takes chunks from the front, this process from the back, until they
                # meet (a chunk a worker has taken can no longer be cancelled): one process
                # fewer to fork, and its chunks cross no process border.
                for k in reversed(range(len(bounds))):
                    if not futures[k].cancel():
                        break
                    a, b = bounds[k]
                    results[k] = _parse_chunk(jobs[a:b])
                    bar.update(b - a)
                pending = {f: k for k, f in enumerate(futures) if not f.cancelled()}
                for fut in as_completed(pending):
                    k = pending[fut]
                    results[k] = fut.result()
                    bar.update(bounds[k][1] - bounds[k][0])
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return concat(results)
    finally:
        bar.close()
