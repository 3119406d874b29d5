"""The table of annotation formats: one row per dataset layout we read (and write), saying how a
``--data`` path of it is recognised, how it is opened as a
:class:`~detect.data.formats.source.DataSource` (its splits, and how the cache of one is built),
and how ``detect convert --to NAME`` writes it. ``--data``, ``detect convert`` and ``detect
xml2pkl``'s siblings all go through this table, so a new format is one module (its reader, its
opener) and one row here (tests/test_format_table.py adds one in the test file).

Layouts (:func:`detect_layout`; the first row whose ``detect`` answers yes wins, rows exclude
each other where they could overlap):

- ``dataset_yaml``: a ``.yaml`` / ``.yml`` that is not a YOLO data.yaml (ours: ``root``,
  ``annotations``, ...; :mod:`detect.data.formats.voc_dataset`);
- ``yolo``: an ultralytics ``data.yaml`` (keys ``train``/``val``/``names``/``nc``), or a folder
  holding one (``data.yaml``, else its only YAML of that kind);
- ``coco``: a ``.json`` file, or a folder with ``annotations/*.json`` or Roboflow's
  ``<split>/_annotations.coco.json``;
- ``voc``: a folder with ``Annotations/``;
- ``voc_splits``: a folder whose ``train/``, ``valid/`` (or ``val/``) and ``test/`` hold XML
  beside the images (Roboflow's and CVAT's Pascal VOC exports): the split is the folder.

Not a format: ``cache``, a ``.pkl`` / ``.pickle`` file (one split, used as it is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from detect.data.formats import layouts
from detect.data.formats.coco import find_splits
from detect.data.formats.coco_dataset import coco_source
from detect.data.formats.source import DatasetError, DataSource
from detect.data.formats.voc_dataset import load_spec, voc_folder_spec, voc_source, voc_split_folders_spec
from detect.data.formats.writers import Output, Splits, plan_coco, plan_voc, plan_yolo
from detect.data.formats.yolo_dataset import yolo_source

Planner = Callable[[Path, Sequence[str], Splits, dict[str, str]], list[Output]]  # (out, classes, splits, names) -> files


@dataclass(frozen=True)
class Format:
    """One row of :data:`FORMATS`.

    Attributes:
        name: the layout's name (:func:`detect_layout`, ``DataSource.kind``, ``detect convert --to``).
        detect: ``detect(path) -> bool``: whether a ``--data`` path (a file, or a folder) is this layout.
        open: ``open(path) -> DataSource`` (raises :class:`DatasetError`).
        accepts: how the "give ..." message of an unknown ``--data`` names it.
        write: the planner of ``detect convert --to NAME``, ``write(out, classes, splits, names) ->
            [Output]`` (:mod:`detect.data.formats.writers`; called after
            :func:`~detect.data.formats.writers.check_class_names`); None: not written.
    """

    name: str
    detect: Callable[[Path], bool]
    open: Callable[[Path], DataSource]
    accepts: str
    write: Optional[Planner] = None


def is_file(p: Path) -> bool:
    """A ``--data`` that is not a folder: a file, or a FIFO/broken link that its reader refuses with a message."""
    return p.is_file() or (os.path.lexists(p) and not p.is_dir())


def _is_yaml(p: Path) -> bool:
    return is_file(p) and p.suffix.lower() in (".yaml", ".yml")


def is_yolo(p: Path) -> bool:
    """An ultralytics data.yaml (or a YAML named data/dataset, whose reader says what is wrong), or a folder holding one."""
    if is_file(p):
        return _is_yaml(p) and (layouts.is_data_yaml(p) or p.stem.lower() in ("data", "dataset"))
    return p.is_dir() and layouts.yolo_yaml_in(p) is not None


def is_dataset_yaml(p: Path) -> bool:
    """Any other YAML file: ours."""
    return _is_yaml(p) and not is_yolo(p)


def is_coco(p: Path) -> bool:
    """A ``.json`` file, or a folder with COCO splits (:func:`~detect.data.formats.coco.find_splits`)."""
    if is_file(p):
        return p.suffix.lower() == ".json"
    return p.is_dir() and bool(find_splits(p))


def is_voc(p: Path) -> bool:
    return p.is_dir() and (p / "Annotations").is_dir()


def is_voc_splits(p: Path) -> bool:
    return p.is_dir() and bool(layouts.voc_split_folders(p))


def open_yolo(p: Path) -> DataSource:
    return yolo_source(p if p.is_file() else layouts.yolo_yaml_in(p))  # type: ignore[arg-type]


FORMATS: tuple[Format, ...] = (
    Format("dataset_yaml", is_dataset_yaml, lambda p: voc_source(load_spec(p)), "a dataset YAML"),
    Format("yolo", is_yolo, open_yolo, "a YOLO data.yaml or its folder", write=plan_yolo),
    Format("coco", is_coco, coco_source, "a COCO .json or a folder with annotations/instances_*.json or "
           "<split>/_annotations.coco.json", write=plan_coco),
    Format("voc", is_voc, lambda p: voc_source(voc_folder_spec(p)), "a VOC folder with Annotations/", write=plan_voc),
    Format("voc_splits", is_voc_splits, lambda p: voc_source(voc_split_folders_spec(p), "voc_splits"),
           "a folder of VOC splits (train/, valid/ or val/, test/ with the XML beside the images, as Roboflow and CVAT export)"),
)


def accepted() -> str:
    """What ``--data`` may be, for the message of an unknown one."""
    return ", ".join(f.accepts for f in FORMATS) + ", or a cache .pkl"


def find_format(path: str | os.PathLike) -> Optional[Format]:
    """The row of the layout at ``path`` (the first whose ``detect`` answers yes), or None."""
    p = Path(path)
    return next((f for f in FORMATS if f.detect(p)), None)


def detect_layout(path: str | os.PathLike) -> Optional[str]:
    """The kind of dataset at ``path``: ``"cache"`` for a cache file, else the name of its
    :data:`FORMATS` row (see the module docstring), or None."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".pkl", ".pickle"):
        return "cache"
    fmt = find_format(p)
    return fmt.name if fmt is not None else None


def writers() -> dict[str, Planner]:
    """``detect convert --to`` name -> its planner, for the rows that write."""
    return {f.name: f.write for f in FORMATS if f.write is not None}


def open_data(data: str | os.PathLike) -> DataSource:
    """``--data`` (anything but a cache) -> :class:`DataSource`, its layout found in :data:`FORMATS`.
    Raises :class:`DatasetError` for anything else, saying which layouts are accepted."""
    p = Path(data)
    if detect_layout(p) == "cache":
        raise DatasetError(f"{data} is already a cache")
    fmt = find_format(p)
    if fmt is not None:
        return fmt.open(p)
    if p.suffix.lower() in (".yaml", ".yml") and not p.exists():
        raise DatasetError(f"dataset YAML {p} does not exist")
    if not p.exists():
        raise DatasetError(f"{data}: no such dataset; give {accepted()}")
    raise DatasetError(f"{data}: not a dataset layout I know; give {accepted()}")
