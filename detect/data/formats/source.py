"""What every dataset format is opened as: a :class:`DataSource` (its splits, where its caches go,
how the cache of one split is built), and :class:`DatasetError`, the usage error of a dataset
that cannot be opened. Each format's opener (a row of :data:`detect.data.formats.table.FORMATS`)
returns one.

Caches go, one file per split, in the first of: the dataset YAML's ``cache_dir``;
``$RETAIL_DETECT_CACHE``; ``<root>/.cache`` when the dataset folder is writable; otherwise
``~/.cache/retail-detect`` (``$XDG_CACHE_HOME`` honoured). A read-only dataset (such as the
shared benchmark data) is never written to.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, TextIO

from detect.data.cache.build import BuildResult
from detect.data.formats.layouts import pick_split
from detect.data.formats.yolo import DataYamlError
from detect.errors import UsageError

ALL = "all"  # the split name meaning every annotated image


class CacheHome(Protocol):
    """Where a dataset's caches go: a :class:`DataSource`, or a VOC ``DatasetSpec``."""

    name: str
    root: Path
    cache_dir: Optional[Path]


class DatasetError(UsageError):
    """A dataset that cannot be resolved: bad YAML, missing folder, unknown split."""


def _writable(folder: Path) -> bool:
    """Writable for us *and* meant to be written: root passes ``os.access`` on folders without
    any write bit (a read-only share), so the mode bits are checked as well."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_dir_for(spec: CacheHome) -> Path:
    """Folder for the caches of a spec or source (rules in the module docstring)."""
    if spec.cache_dir is not None:
        return spec.cache_dir
    tag = f"{spec.name}-{hashlib.sha1(str(spec.root).encode()).hexdigest()[:10]}"
    env = os.environ.get("RETAIL_DETECT_CACHE")
    if env:
        return Path(env).expanduser() / tag
    if _writable(spec.root):
        return spec.root / ".cache"
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "retail-detect" / tag


@dataclass
class DataSource:
    """A dataset found at ``--data``, in any layout: its splits, where its caches go, and how the
    cache of one split is built.

    Attributes:
        kind: its format (the name of its row in :data:`detect.data.formats.table.FORMATS`).
        name, root, cache_dir: where its caches go (:func:`cache_dir_for`).
        splits: its split names; :data:`ALL` (every image) is accepted as well, and a name
            also finds the split it means (:func:`detect.data.formats.layouts.pick_split`).
        builder: ``builder(split, output, workers=, progress=, log=) -> BuildResult``.
        single: one annotation file that answers every split name (a COCO .json given alone).
        source: what the user gave.
        files: the files that define it besides its annotations and images (a YAML, a class
            file, split lists, COCO JSON): outputs must never replace them.
    """

    kind: str
    name: str
    root: Path
    splits: list[str]
    builder: Callable[..., BuildResult]
    single: bool = False
    cache_dir: Optional[Path] = None
    source: str = ""
    files: list[str] = field(default_factory=list)

    def split_key(self, split: Optional[str]) -> str:
        """The split name a requested split means here (raises :class:`DatasetError`)."""
        if self.single:
            return self.splits[0]
        if split in (None, ALL):
            return ALL
        key = pick_split(split, self.splits)
        if key is None:
            raise DatasetError(f"{self.source}: no split {split!r}; known splits: {sorted(self.splits) + [ALL]}")
        return key

    def cache_path(self, split: Optional[str]) -> Path:
        """Where the cache of ``split`` lives (:func:`cache_dir_for`)."""
        return cache_dir_for(self) / f"{self.name}-{self.split_key(split)}.pkl"

    def build(self, split: Optional[str], output: str | os.PathLike, *, workers: int = 0, progress: bool = False,
              log: TextIO = sys.stderr) -> BuildResult:
        """Build or reuse the cache of ``split`` at ``output`` (raises :class:`DatasetError`)."""
        key = self.split_key(split)
        try:
            return self.builder(key, Path(output), workers=workers, progress=progress, log=log)
        except (UsageError, DataYamlError) as e:
            raise DatasetError(f"{self.source}: {e}") from None
