"""Planogram files: which product stands where, and in how many facings.

A planogram is a list of *positions*: ``shelf`` (numbered from the top of the photo: 1, 2, 3
... or from 0, as ``detect synth --dense`` numbers them), ``position`` (numbered from the left;
numbers need not be consecutive, their order is what counts),
``product`` (a class name of the model, or a product id such as a GTIN/UPC that a mapping file
turns into a class name) and ``facings`` (how many products wide, a whole number >= 1).

CSV (a header row names the columns, in any order; other columns are ignored)::

    shelf,position,product,facings
    1,1,cola_can,4
    1,2,chips_bag,3

JSON: a list of such objects, or an object holding the list under ``"positions"`` or
``"planogram"`` (what ``detect synth --dense`` writes in its truth files)::

    {"positions": [{"shelf": 1, "position": 1, "product": "cola_can", "facings": 4}, ...]}

Mapping file (``--product-map``): CSV with columns ``product,class`` or a JSON object
``{"<product id>": "<class name>"}``.

Bad input is a :class:`PlanogramError` (a usage error: ``detect`` exits 2) naming the file
and line (JSON: the line where the entry starts): a missing column, a shelf or position that
is not a whole number >= 0, facings that are not a whole number >= 1, an unknown product, a
position given twice.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from detect.errors import UsageError

COLUMNS = ("shelf", "position", "product", "facings")
MAX_BYTES = 16 * 1024 * 1024


class PlanogramError(UsageError):
    """A planogram or product-map file that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Position:
    """One planogram position: ``shelf`` and ``position`` (as numbered in the file), ``product`` (the class
    name), ``label`` (its index in the model's classes), ``facings`` (>= 1), ``line`` (where
    it was written)."""

    shelf: int
    position: int
    product: str
    label: int
    facings: int
    line: int = 0

    def to_dict(self) -> dict:
        return {"shelf": self.shelf, "position": self.position, "product": self.product, "facings": self.facings}


@dataclass(frozen=True)
class Planogram:
    """Positions sorted by shelf, then position; ``source`` is the file it came from."""

    positions: tuple[Position, ...]
    source: str = ""

    @property
    def shelves(self) -> list[int]:
        return sorted({p.shelf for p in self.positions})

    def shelf(self, number: int) -> list[Position]:
        return [p for p in self.positions if p.shelf == number]

    def to_list(self) -> list[dict]:
        return [p.to_dict() for p in self.positions]


def read_planogram(path: str | Path, classes: Sequence[str], mapping: Optional[str | Path] = None) -> Planogram:
    """Read a CSV or JSON planogram (by its suffix; others are sniffed: ``[`` or ``{`` first
    is JSON) and check every position against the model's ``classes``."""
    path = Path(path)
    names = read_mapping(mapping) if mapping else {}
    return parse_planogram(_read_text(path, "planogram"), str(path), classes, names)


def parse_planogram(text: str, source: str, classes: Sequence[str], mapping: Optional[dict[str, str]] = None) -> Planogram:
    """A planogram from its ``text`` (CSV or JSON, told apart as :func:`read_planogram` does by
    the name ``source``, which errors name): a file's, or an upload's (``POST /v1/audit``)."""
    path = Path(source)
    rows = _json_rows(path, text) if _is_json(path, text) else _csv_rows(path, text)
    if not rows:
        raise PlanogramError(f"{path}: the planogram has no positions")
    return build_planogram(rows, classes, mapping or {}, source)


def build_planogram(rows: list[tuple[int, dict]], classes: Sequence[str], mapping: dict[str, str],
                    source: str) -> Planogram:
    """Check ``(line, entry)`` pairs and make the planogram (errors name ``source`` and the line)."""
    index = {c: i for i, c in enumerate(classes)}
    seen: dict[tuple[int, int], int] = {}
    out = []
    for line, entry in rows:
        where = f"{source}: line {line}"
        missing = [c for c in COLUMNS if entry.get(c) in (None, "")]
        if missing:
            raise PlanogramError(f"{where}: missing {', '.join(missing)} (every position needs {', '.join(COLUMNS)})")
        shelf, pos, facings = (_whole(entry[c], c, where, least) for c, least in (("shelf", 0), ("position", 0), ("facings", 1)))
        product = str(entry["product"]).strip()
        name = mapping.get(product, product)
        if name not in index:
            known = ", ".join(list(classes)[:12]) + (" ..." if len(classes) > 12 else "")
            via = f" (mapped from {product!r})" if name != product else ""
            raise PlanogramError(f"{where}: unknown product {name!r}{via}; the model knows {known}"
                                 + ("" if mapping else "; give a --product-map for product ids"))
        if (shelf, pos) in seen:
            raise PlanogramError(f"{where}: shelf {shelf} position {pos} is given twice (also on line {seen[(shelf, pos)]})")
        seen[(shelf, pos)] = line
        out.append(Position(shelf, pos, name, index[name], facings, line))
    return Planogram(tuple(sorted(out, key=lambda p: (p.shelf, p.position))), source)


def read_mapping(path: str | Path) -> dict[str, str]:
    """Product id -> class name, from CSV (``product,class``) or JSON (an object)."""
    path = Path(path)
    return parse_mapping(_read_text(path, "product map"), str(path))


def parse_mapping(text: str, source: str) -> dict[str, str]:
    """:func:`read_mapping` of a file's or an upload's ``text`` (``source`` names it in errors)."""
    path = Path(source)
    if _is_json(path, text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanogramError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise PlanogramError(f'{path}: a JSON product map is one object {{"<product id>": "<class name>"}}')
        return {str(k).strip(): v.strip() for k, v in data.items()}
    out: dict[str, str] = {}
    for line, row in _csv_rows(path, text, ("product", "class")):
        if not row.get("product") or not row.get("class"):
            raise PlanogramError(f"{path}: line {line}: needs both product and class")
        if row["product"] in out:
            raise PlanogramError(f"{path}: line {line}: product {row['product']!r} is mapped twice")
        out[row["product"]] = row["class"]
    return out


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise PlanogramError(f"{path}: {what} file not found")
    if path.stat().st_size > MAX_BYTES:
        raise PlanogramError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a {what}")
    return text_of(path.read_bytes(), str(path), what)


def text_of(data: bytes, source: str, what: str = "planogram") -> str:
    """The UTF-8 text (a byte-order mark dropped) of a planogram or product map's bytes."""
    if len(data) > MAX_BYTES:
        raise PlanogramError(f"{source}: larger than {MAX_BYTES >> 20} MiB; not a {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PlanogramError(f"{source}: not UTF-8 text (byte {e.start}); save the {what} as UTF-8 CSV or JSON") from None


def _is_json(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    return suffix == ".json" or (suffix != ".csv" and text.lstrip()[:1] in ("[", "{"))


def _whole(value: Any, column: str, where: str, least: int) -> int:
    """A whole number >= ``least`` (``3``, ``"3"``, ``3.0``), else a PlanogramError saying so."""
    try:
        f = float(str(value).strip())
        ok = f.is_integer() and f >= least
    except (ValueError, OverflowError):
        ok = False
    if not ok or isinstance(value, bool):
        raise PlanogramError(f"{where}: {column} must be a whole number >= {least}, got {value!r}")
    return int(f)


def _csv_rows(path: Path, text: str, columns: Sequence[str] = COLUMNS) -> list[tuple[int, dict]]:
    """(line, row) of every non-empty data row, keys lower-cased; a missing column is an error."""
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    absent = [c for c in columns if c not in header]
    if absent:
        raise PlanogramError(f"{path}: line 1: missing column {', '.join(absent)} (the header must name "
                             f"{', '.join(columns)}; found {', '.join(h for h in header if h) or 'nothing'})")
    reader.fieldnames = header
    rows = []
    for row in reader:
        values = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
        if any(values.values()):
            rows.append((reader.line_num, values))
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line, entry) of every position of a JSON planogram."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanogramError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    entries = data
    if isinstance(data, dict):
        key = next((k for k in ("positions", "planogram") if k in data), None)
        if key is None:
            raise PlanogramError(f'{path}: a JSON planogram is a list of positions or an object with "positions"')
        entries = data[key]
    if not isinstance(entries, list):
        raise PlanogramError(f"{path}: the positions must be a JSON list")
    lines = iter(_object_lines(text))
    starts = {}  # id of each dict -> its line: dicts in preorder are the '{' in text order
    for obj in _preorder(data):
        starts[id(obj)] = next(lines, 0)
    rows = []
    for k, e in enumerate(entries):
        if not isinstance(e, dict):
            raise PlanogramError(f"{path}: entry {k + 1}: a position must be an object with {', '.join(COLUMNS)}")
        rows.append((starts.get(id(e), 0), {str(a).lower(): b for a, b in e.items()}))
    return rows


def _preorder(x: Any):
    if isinstance(x, dict):
        yield x
        for v in x.values():
            yield from _preorder(v)
    elif isinstance(x, list):
        for v in x:
            yield from _preorder(v)


def _object_lines(text: str) -> list[int]:
    """Line (1-based) of every ``{`` outside strings, in text order."""
    out, line, in_str, esc = [], 1, False, False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            out.append(line)
    return out
