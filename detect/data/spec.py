"""``--data`` -> :class:`~detect.data.cache.cache_file.Cache`: :func:`resolve_data` takes what a user
passes (a cache ``.pkl``, or any layout of :data:`detect.data.formats.table.FORMATS`: a dataset
YAML, a VOC folder or VOC split folders, a YOLO ``data.yaml`` or its folder, COCO JSON), opens it
as a :class:`~detect.data.formats.source.DataSource` and builds or reuses the cache of one split
(incrementally when inputs change) in its cache folder (:func:`~detect.data.formats.source.cache_dir_for`).
:func:`input_files` lists what a ``--data`` reads, for the output rule.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, TextIO

from detect.data.cache.cache_file import Cache, load_cache
from detect.data.formats.source import DatasetError, DataSource
from detect.data.formats.table import open_data
from detect.data.formats.voc_dataset import DatasetSpec, voc_source
from detect.errors import UsageError


def resolve_source(src: DataSource, split: Optional[str], **kw) -> Cache:
    """The cache of one split of ``src``, built or reused in its cache folder (:func:`cache_dir_for`)."""
    out = src.cache_path(split)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the cache folder {out.parent}: {e.strerror or e}; "
                           "set cache_dir in the dataset YAML or $RETAIL_DETECT_CACHE") from None
    return src.build(split, out, **kw).cache


def resolve_spec(spec: DatasetSpec, split: Optional[str] = "train", *, workers: int = 0,
                 progress: bool = False, log: TextIO = sys.stderr) -> Cache:
    """Build or reuse the cache of one split of ``spec`` (``None`` or "all": every file)."""
    return resolve_source(voc_source(spec), split, workers=workers, progress=progress, log=log)


def input_files(data: str | os.PathLike, cache: Optional[Cache] = None, source: Optional[DataSource] = None) -> list[str]:
    """Every file ``--data`` reads: the path itself, the files that define the dataset
    (:attr:`DataSource.files`), and, from ``cache``, each record's image and annotation file.
    What :func:`detect.utils.check_output_path` must never let an output replace (``val --json
    ds/classes.txt`` replaced the class list)."""
    out = [os.fspath(data)]
    if source is None and not is_cache_path(data):
        try:
            source = open_data(data)
        except UsageError:
            source = None
    if source is not None:
        out += source.files
    if cache is not None:
        out += [r.image for r in cache.records if r.image]
        out += [r.annotation for r in cache.records if r.annotation]
    return out


def is_cache_path(data: str | Path) -> bool:
    """Whether ``--data`` names an annotation cache (one split) rather than a YAML or folder."""
    return Path(data).suffix.lower() in (".pkl", ".pickle")


def is_single_split(data: str | Path) -> bool:
    """Whether ``--data`` is one split whatever split is asked for: a cache or a COCO .json."""
    return is_cache_path(data) or Path(data).suffix.lower() == ".json"


def resolve_data(data: str | os.PathLike, split: Optional[str] = "train", *, workers: int = 0,
                 progress: bool = False, log: TextIO = sys.stderr) -> Cache:
    """``--data`` -> :class:`Cache`.

    Args:
        data: a cache ``.pkl`` (loaded as it is: a cache already is one split, so ``split`` is
            not used), or any layout :func:`open_data` accepts: a dataset YAML, a VOC folder,
            VOC split folders, a YOLO data.yaml or its folder, a COCO folder or .json.
        split: split name ("train", "val", ...), or None / "all" for every annotated image.
        workers, progress, log: passed to the cache builder.

    Raises:
        DatasetError: unknown kind of input, bad YAML, missing folder or split.
        detect.data.cache.cache_file.CacheError: a ``.pkl`` that is not a usable cache.
    """
    p = Path(data)
    if is_cache_path(p):
        if not p.is_file():
            raise DatasetError(f"cache {p} does not exist; build it with `detect xml2pkl`")
        return load_cache(p)
    return resolve_source(open_data(p), split, workers=workers, progress=progress, log=log)
