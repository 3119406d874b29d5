"""Dataset specs: where a dataset's annotations, images, classes and splits are, and
:func:`resolve_data`, which turns what a user passes as ``--data`` into a :class:`Cache`.

A dataset YAML (see ``datasets/*.yaml``)::

    name: groceries                          # optional; default: the YAML file's stem
    root: ../../shared/data/groceries-voc    # relative to the YAML file's folder
    annotations: annotations                 # relative to root; searched recursively for *.xml
    images: images                           # relative to root
    classes: classes.txt                     # optional; default: the sorted names found
    splits:                                  # split name -> file of image ids (null: all files)
      train: splits/train.txt
      val: splits/val.txt
    cache_dir: null                          # optional; relative to the YAML file's folder

A VOC folder (what ``detect synth`` writes) needs no YAML: ``Annotations/``, ``JPEGImages/``,
optional ``classes.txt`` and ``ImageSets/Main/<split>.txt``.

Caches are built, and rebuilt incrementally when inputs change, by
:func:`detect.data.xml2pkl.build_cache`, one file per split, in the first of: ``cache_dir``;
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
from typing import Optional, TextIO

import yaml

from detect.data.cache import Cache, load_cache
from detect.data.xml2pkl import build_cache
from detect.errors import UsageError

YAML_KEYS = ("name", "root", "annotations", "images", "classes", "splits", "cache_dir")
ALL = "all"  # the split name meaning every annotated image


class DatasetError(UsageError):
    """A dataset that cannot be resolved: bad YAML, missing folder, unknown split."""


@dataclass
class DatasetSpec:
    """Absolute locations of one dataset's parts.

    Attributes:
        name: short name, used in cache file names.
        root: dataset folder.
        annotations: folder searched recursively for VOC XML.
        images: image folder (None: beside the XML files).
        classes: class file (None: the sorted union of the names found).
        splits: split name -> id file (None: all files).
        cache_dir: where caches go (None: chosen by :func:`cache_dir_for`).
        source: the YAML file or folder the spec came from.
    """

    name: str
    root: Path
    annotations: Path
    images: Optional[Path] = None
    classes: Optional[Path] = None
    splits: dict[str, Optional[Path]] = field(default_factory=dict)
    cache_dir: Optional[Path] = None
    source: str = ""


def _under(base: Path, value: object, key: str, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{where}: '{key}' must be a non-empty path string, got {value!r}")
    p = Path(os.path.expanduser(value))
    return (p if p.is_absolute() else base / p).resolve()


def load_spec(path: str | os.PathLike) -> DatasetSpec:
    """Read and check a dataset YAML (format in the module docstring)."""
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read dataset YAML: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a mapping with keys {list(YAML_KEYS)}")
    unknown = sorted(set(d) - set(YAML_KEYS))
    if unknown:
        raise DatasetError(f"{path}: unknown keys {unknown}; known: {list(YAML_KEYS)}")
    for key in ("root", "annotations"):
        if key not in d:
            raise DatasetError(f"{path}: missing '{key}'")
    here = path.resolve().parent
    root = _under(here, d["root"], "root", str(path))
    splits = d.get("splits") or {}
    if not isinstance(splits, dict):
        raise DatasetError(f"{path}: 'splits' must map split names to id files, got {type(splits).__name__}")
    return DatasetSpec(
        name=str(d.get("name") or path.stem),
        root=root,
        annotations=_under(root, d["annotations"], "annotations", str(path)),
        images=_under(root, d["images"], "images", str(path)) if d.get("images") else None,
        classes=_under(root, d["classes"], "classes", str(path)) if d.get("classes") else None,
        splits={str(k): (_under(root, v, f"splits.{k}", str(path)) if v else None) for k, v in splits.items()},
        cache_dir=_under(here, d["cache_dir"], "cache_dir", str(path)) if d.get("cache_dir") else None,
        source=str(path),
    )


def voc_folder_spec(folder: str | os.PathLike) -> DatasetSpec:
    """The spec of a VOC folder: ``Annotations/``, ``JPEGImages/``, optional ``classes.txt``,
    splits from ``ImageSets/Main/<split>.txt``."""
    root = Path(folder).resolve()
    ann = root / "Annotations"
    if not ann.is_dir():
        raise DatasetError(f"{folder}: not a VOC folder (no Annotations/ inside); give a dataset YAML, "
                           "a VOC folder or a cache .pkl")
    sets = root / "ImageSets" / "Main"
    splits = {p.stem: p for p in sorted(sets.glob("*.txt"))} if sets.is_dir() else {}
    return DatasetSpec(
        name=root.name,
        root=root,
        annotations=ann,
        images=root / "JPEGImages" if (root / "JPEGImages").is_dir() else None,
        classes=root / "classes.txt" if (root / "classes.txt").is_file() else None,
        splits=splits,
        source=str(folder),
    )


def _writable(folder: Path) -> bool:
    """Writable for us *and* meant to be written: root passes ``os.access`` on folders without
    any write bit (a read-only share), so the mode bits are checked as well."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_dir_for(spec: DatasetSpec) -> Path:
    """Folder for the spec's caches (rules in the module docstring)."""
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


def resolve_spec(spec: DatasetSpec, split: Optional[str] = "train", *, workers: int = 0,
                 progress: bool = False, log: TextIO = sys.stderr) -> Cache:
    """Build or reuse the cache of one split of ``spec`` (``None`` or "all": every file)."""
    if not spec.annotations.is_dir():
        raise DatasetError(f"{spec.source}: annotation folder {spec.annotations} does not exist")
    if spec.images is not None and not spec.images.is_dir():
        raise DatasetError(f"{spec.source}: image folder {spec.images} does not exist")
    if spec.classes is not None and not spec.classes.is_file():
        raise DatasetError(f"{spec.source}: class file {spec.classes} does not exist")
    if split in (None, ALL):
        split_file, tag = None, ALL
    elif split in spec.splits:
        split_file, tag = spec.splits[split], split
        if split_file is not None and not split_file.is_file():
            raise DatasetError(f"{spec.source}: split file {split_file} of split {split!r} does not exist")
    else:
        known = sorted(spec.splits) + [ALL]
        raise DatasetError(f"{spec.source}: no split {split!r}; known splits: {known}")
    out = cache_dir_for(spec) / f"{spec.name}-{tag}.pkl"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the cache folder {out.parent}: {e.strerror or e}; "
                           "set cache_dir in the dataset YAML or $RETAIL_DETECT_CACHE") from None
    try:
        result = build_cache(spec.annotations, out, images=spec.images, classes=spec.classes, split=split_file,
                             workers=workers, progress=progress, log=log)
    except UsageError as e:
        raise DatasetError(f"{spec.source}: {e}") from None
    return result.cache


def is_cache_path(data: str | Path) -> bool:
    """Whether ``--data`` names an annotation cache (one split) rather than a YAML or folder."""
    return Path(data).suffix.lower() in (".pkl", ".pickle")


def resolve_data(data: str | os.PathLike, split: Optional[str] = "train", *, workers: int = 0,
                 progress: bool = False, log: TextIO = sys.stderr) -> Cache:
    """``--data`` -> :class:`Cache`.

    Args:
        data: a dataset YAML (``.yaml``/``.yml``), a VOC folder, or a cache ``.pkl`` (loaded
            as it is: a cache already is one split, so ``split`` is not used).
        split: split name ("train", "val", ...), or None / "all" for every annotated image.
        workers, progress, log: passed to :func:`~detect.data.xml2pkl.build_cache`.

    Raises:
        DatasetError: unknown kind of input, bad YAML, missing folder or split.
        detect.data.cache.CacheError: a ``.pkl`` that is not a usable cache.
    """
    p = Path(data)
    if p.suffix.lower() in (".yaml", ".yml"):
        if not p.is_file():
            raise DatasetError(f"dataset YAML {p} does not exist")
        return resolve_spec(load_spec(p), split, workers=workers, progress=progress, log=log)
    if is_cache_path(p):
        if not p.is_file():
            raise DatasetError(f"cache {p} does not exist; build it with `detect xml2pkl`")
        return load_cache(p)
    if p.is_dir():
        return resolve_spec(voc_folder_spec(p), split, workers=workers, progress=progress, log=log)
    raise DatasetError(f"{data}: no such dataset; give a dataset YAML, a VOC folder or a cache .pkl")
