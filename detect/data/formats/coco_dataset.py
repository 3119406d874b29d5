"""A COCO dataset (a folder of ``annotations/*.json`` or Roboflow's ``<split>/_annotations.coco.json``,
or one JSON file; :mod:`detect.data.formats.coco`) as a :class:`~detect.data.formats.source.DataSource`,
its caches built by :func:`detect.data.cache.importers.build_coco_cache`."""

from __future__ import annotations

from pathlib import Path

from detect.data.cache.build import BuildResult
from detect.data.cache.importers import build_coco_cache
from detect.data.formats.coco import find_splits, split_of_file
from detect.data.formats.source import ALL, DataSource


def coco_source(path: Path) -> DataSource:
    """A COCO dataset folder, or one COCO JSON (a single split), as a :class:`DataSource`."""
    if path.is_file():
        name, split, root = split_of_file(path)
        splits = {name: split}
    else:
        splits, root = find_splits(path), path.resolve()

    def build(key: str, output: Path, *, workers: int = 0, **kw) -> BuildResult:
        chosen = list(splits) if key == ALL else [key]
        return build_coco_cache(root, [splits[s] for s in chosen], output, **kw)

    return DataSource("coco", root.name, root, list(splits), build, single=path.is_file(), source=str(path),
                      files=[str(s.json) for s in splits.values()])
