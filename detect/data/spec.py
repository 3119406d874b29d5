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
optional ``classes.txt`` and ``ImageSets/Main/<split>.txt``. Nor do the other layouts, found by
:func:`detect.data.formats.layouts.detect_layout`: VOC split folders (``train/``, ``valid/``, ``test/``
with XML beside the images; one annotation root whose splits are its folders), a YOLO
``data.yaml`` (:mod:`detect.data.formats.yolo`) and COCO JSON (:mod:`detect.data.formats.coco`). Each becomes a
:class:`DataSource` (:func:`open_data`): its split names and how the cache of one is built.

Caches are built, and rebuilt incrementally when inputs change, by
:func:`detect.data.cache.xml2pkl.build_cache` (VOC) or :mod:`detect.data.cache.importers` (YOLO, COCO),
one file per split, in the first of: ``cache_dir``;
``$RETAIL_DETECT_CACHE``; ``<root>/.cache`` when the dataset folder is writable; otherwise
``~/.cache/retail-detect`` (``$XDG_CACHE_HOME`` honoured). A read-only dataset (such as the
shared benchmark data) is never written to.
"""

from __future__ import annotations

import hashlib
import os
import re
import reprlib
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TextIO

from detect.data.formats import layouts
from detect.data.cache.cache_file import Cache, load_cache
from detect.data.formats.coco import find_splits, split_of_file
from detect.data.images import walk_files
from detect.data.cache.importers import build_coco_cache, build_yolo_cache
from detect.data.cache.xml2pkl import BuildResult, build_cache
from detect.data.formats.yolo import DataYamlError, read_data_yaml
from detect.errors import UsageError
from detect.readers import FileReadError, load_yaml, path_problem

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


def _writable(folder: Path) -> bool:
    """Writable for us *and* meant to be written: root passes ``os.access`` on folders without
    any write bit (a read-only share), so the mode bits are checked as well."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_dir_for(spec: DatasetSpec | DataSource) -> Path:
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
        kind: its layout (see :func:`detect.data.formats.layouts.detect_layout`).
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
        key = layouts.pick_split(split, self.splits)
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


def open_data(data: str | os.PathLike) -> DataSource:
    """``--data`` (anything but a cache) -> :class:`DataSource`, its layout detected
    (:func:`detect.data.formats.layouts.detect_layout`). Raises :class:`DatasetError` for anything else,
    saying which layouts are accepted."""
    p = Path(data)
    kind = layouts.detect_layout(p)
    if kind == "dataset_yaml":
        return voc_source(load_spec(p))
    if kind == "voc":
        return voc_source(voc_folder_spec(p))
    if kind == "voc_splits":
        return voc_source(voc_split_folders_spec(p), "voc_splits")
    if kind == "yolo":
        return yolo_source(p if p.is_file() else layouts.yolo_yaml_in(p))  # type: ignore[arg-type]
    if kind == "coco":
        return coco_source(p)
    if kind == "cache":
        raise DatasetError(f"{data} is already a cache")
    if p.suffix.lower() in (".yaml", ".yml") and not p.exists():
        raise DatasetError(f"dataset YAML {p} does not exist")
    if not p.exists():
        raise DatasetError(f"{data}: no such dataset; give {layouts.ACCEPTED}")
    raise DatasetError(f"{data}: not a dataset layout I know; give {layouts.ACCEPTED}")


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
