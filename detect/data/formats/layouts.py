"""The files that tell dataset layouts apart (a YOLO ``data.yaml`` in a folder, VOC split folders),
and split names across layouts (``valid``, ``val2017`` -> ``val``). Which layout a ``--data`` path
is: :func:`detect.data.formats.table.detect_layout`, from these probes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Optional

from detect.data.formats.yolo import looks_like_data_yaml
from detect.readers import FileReadError, load_yaml

SPLIT_FOLDERS = ("train", "valid", "val", "validation", "test")


def canonical_split(name: str) -> str:
    """``valid``/``validation`` -> ``val``; a trailing year goes (``val2017`` -> ``val``)."""
    n = re.sub(r"\d{4}$", "", name.lower()) or name.lower()
    return "val" if n in ("valid", "validation") else n


def pick_split(requested: str, available: Iterable[str]) -> Optional[str]:
    """The available split a requested name means: itself, else the only one with the same
    :func:`canonical_split` (``--split val`` finds COCO's ``val2017`` and Roboflow's ``valid``)."""
    available = list(available)
    if requested in available:
        return requested
    same = [a for a in available if canonical_split(a) == canonical_split(requested)]
    return same[0] if len(same) == 1 else None


def _load_yaml(path: Path) -> object:
    """A YAML file through the bounded reader (:func:`detect.readers.load_yaml`: a FIFO named
    notes.yaml at the top of a --data folder hung the layout check), None when it cannot be used."""
    try:
        return load_yaml(path, "YAML file")
    except FileReadError:
        return None


def is_data_yaml(path: Path) -> bool:
    """Whether a YAML file is an ultralytics data.yaml (an unreadable one is not)."""
    return looks_like_data_yaml(_load_yaml(path))


def yolo_yaml_in(folder: Path) -> Optional[Path]:
    """The data.yaml of a YOLO dataset folder: ``data.yaml``/``data.yml`` (whatever it holds:
    one that cannot be read or parsed is still the dataset's, and its reader says what is wrong,
    rather than "not a dataset layout I know"), else the only top-level YAML that is one
    (several: the one named like the folder, as ultralytics picks)."""
    for name in ("data.yaml", "data.yml"):
        p = folder / name
        if os.path.lexists(p) and not p.is_dir() and (_load_yaml(p) is None or is_data_yaml(p)):
            return p
    found = [p for p in sorted(folder.glob("*.y*ml")) if p.suffix.lower() in (".yaml", ".yml") and is_data_yaml(p)]
    if len(found) > 1:
        found = [p for p in found if p.stem == folder.name]
    return found[0] if len(found) == 1 else None


def _has_xml(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(".xml") and e.is_file() for e in it)
    except OSError:
        return False


def voc_split_folders(root: Path) -> dict[str, Path]:
    """Split name (canonical) -> folder, for the split folders of ``root`` that hold XML files."""
    out: dict[str, Path] = {}
    for name in SPLIT_FOLDERS:
        folder = root / name
        if folder.is_dir() and _has_xml(folder):
            out.setdefault(canonical_split(name), folder)
    return out
