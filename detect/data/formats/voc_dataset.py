"""VOC datasets as a :class:`~detect.data.formats.source.DataSource`: a dataset YAML, a VOC folder, or
VOC split folders; their caches are built by :func:`detect.data.cache.xml2pkl.build_cache`.

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
optional ``classes.txt`` and ``ImageSets/Main/<split>.txt``. Nor do VOC split folders
(``train/``, ``valid/``, ``test/`` with XML beside the images, as Roboflow and CVAT export: one
annotation root whose splits are its folders).
"""

from __future__ import annotations

import os
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from detect.data.cache.build import BuildResult
from detect.data.cache.xml2pkl import build_cache
from detect.data.formats import layouts
from detect.data.formats.source import ALL, DatasetError, DataSource
from detect.data.images import walk_files
from detect.readers import FileReadError, load_yaml, path_problem

YAML_KEYS = ("name", "root", "annotations", "images", "classes", "splits", "cache_dir")


@dataclass
class DatasetSpec:
    """Absolute locations of one dataset's parts.

    Attributes:
        name: short name, used in cache file names.
        root: dataset folder.
        annotations: folder searched recursively for VOC XML.
        images: image folder (None: beside the XML files).
        classes: class file (None: the sorted union of the names found).
        splits: split name -> id file, or the ids themselves (None: all files).
        cache_dir: where caches go (None: chosen by :func:`cache_dir_for`).
        source: the YAML file or folder the spec came from.
    """

    name: str
    root: Path
    annotations: Path
    images: Optional[Path] = None
    classes: Optional[Path] = None
    splits: dict[str, Optional[Path] | list[str]] = field(default_factory=dict)
    cache_dir: Optional[Path] = None
    source: str = ""


def _under(base: Path, value: object, key: str, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{where}: '{key}' must be a non-empty path string, got {reprlib.repr(value)}")
    problem = path_problem(value)
    if problem:
        raise DatasetError(f"{where}: '{key}' is not a usable path: {problem}")
    p = Path(os.path.expanduser(value))
    return (p if p.is_absolute() else base / p).resolve()


def load_spec(path: str | os.PathLike) -> DatasetSpec:
    """Read and check a dataset YAML (format in the module docstring)."""
    path = Path(path)
    try:
        d = load_yaml(path, "dataset YAML")  # bounded, regular file only, alias and depth limits
    except FileReadError as e:
        raise DatasetError(str(e)) from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a mapping with keys {list(YAML_KEYS)}")
    unknown = sorted(map(str, set(d) - set(YAML_KEYS)))
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
    name = str(d.get("name") or path.stem)
    if not re.fullmatch(r"[\w.-]{1,100}", name) or name.startswith("."):  # it names the cache files
        raise DatasetError(f"{path}: 'name' must be up to 100 letters, digits, '_', '-' or '.' (it names the cache "
                           f"files), got {reprlib.repr(name)}")
    return DatasetSpec(
        name=name,
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


def voc_split_folders_spec(folder: str | os.PathLike) -> DatasetSpec:
    """The spec of VOC split folders (Roboflow's and CVAT's exports): the folder is one annotation
    root, so every split shares one class list; each split is the XML of its folder
    (``valid/`` or ``val/`` is split ``val``), and every record needs its image beside its XML."""
    root = Path(folder).resolve()
    found = layouts.voc_split_folders(root)
    if not found:
        raise DatasetError(f"{folder}: no train/, valid/, val/ or test/ folder with XML files inside")
    splits: dict[str, Optional[Path] | list[str]] = {
        split: [f"{d.name}/{os.path.splitext(rel)[0]}" for rel in walk_files(d, {".xml"})[0].rels] for split, d in found.items()}
    return DatasetSpec(
        name=root.name,
        root=root,
        annotations=root,
        images=root,
        classes=root / "classes.txt" if (root / "classes.txt").is_file() else None,
        splits=splits,
        source=str(folder),
    )


def voc_source(spec: DatasetSpec, kind: str = "voc") -> DataSource:
    """A dataset YAML, VOC folder or VOC split folders as a :class:`DataSource` (raises
    :class:`DatasetError` when a folder or file it names does not exist)."""
    if not spec.annotations.is_dir():
        raise DatasetError(f"{spec.source}: annotation folder {spec.annotations} does not exist")
    if spec.images is not None and not spec.images.is_dir():
        raise DatasetError(f"{spec.source}: image folder {spec.images} does not exist")
    if spec.classes is not None and not spec.classes.is_file():
        raise DatasetError(f"{spec.source}: class file {spec.classes} does not exist")

    def build(split: str, output: Path, **kw) -> BuildResult:
        selection = None if split == ALL else spec.splits[split]
        if isinstance(selection, Path) and not selection.is_file():
            raise DatasetError(f"{spec.source}: split file {selection} of split {split!r} does not exist")
        return build_cache(spec.annotations, output, images=spec.images, classes=spec.classes, split=selection, **kw)

    files = [spec.source] if Path(spec.source).is_file() else []
    files += [str(p) for p in (spec.classes, *spec.splits.values()) if isinstance(p, Path)]
    return DataSource(kind, spec.name, spec.root, list(spec.splits), build, cache_dir=spec.cache_dir, source=spec.source,
                      files=files)
