"""A YOLO dataset (an ultralytics ``data.yaml``, :mod:`detect.data.formats.yolo`) as a
:class:`~detect.data.formats.source.DataSource`, its caches built by
:func:`detect.data.cache.importers.build_yolo_cache`."""

from __future__ import annotations

from pathlib import Path

from detect.data.cache.build import BuildResult
from detect.data.cache.importers import build_yolo_cache
from detect.data.formats.source import DatasetError, DataSource
from detect.data.formats.yolo import DataYamlError, read_data_yaml


def yolo_source(data_yaml: Path) -> DataSource:
    """A YOLO ``data.yaml`` as a :class:`DataSource`; its caches are named after the dataset
    folder when the YAML is a plain ``data.yaml``."""
    try:
        spec = read_data_yaml(data_yaml)
    except DataYamlError as e:
        raise DatasetError(str(e)) from None
    name = spec.root.name if data_yaml.stem.lower() in ("data", "dataset") else data_yaml.stem

    def build(split: str, output: Path, *, workers: int = 0, **kw) -> BuildResult:
        return build_yolo_cache(spec, split, output, **kw)  # reading label files needs no worker pool

    # splits whose folders exist: Roboflow's data.yaml names a test/ folder it may not have
    files = [str(spec.yaml), *(str(e) for entries in spec.splits.values() for e in entries if e.is_file())]
    return DataSource("yolo", name, spec.root, spec.present(), build, source=str(data_yaml), files=files)
