"""docs/ARCHITECTURE.md's rooms table names every module of the package in its room (issue 23): a
module nobody can find in the map is a module a newcomer reads the whole tree to find."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> dict[str, str]:
    """First cell (``detect/``, ``detect/data/`` ...) -> the rest of its table row."""
    rows = {}
    for line in (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `(detect/[\w/.]*?)`", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_every_module_is_in_its_room():
    rows = _rows()
    assert "detect/" in rows and "detect/data/" in rows, "the rooms table moved or changed its form"
    missing = []
    for path in sorted((ROOT / "detect").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.stem in ("__init__", "__main__") or "_weights" in rel.parts:
            continue
        if len(rel.parts) == 2:  # a base module: its own row (cli.py) or the base row
            row = rows.get(f"detect/{rel.name}", "") + rows["detect/"]
        else:
            row = rows.get(f"detect/{rel.parts[1]}/", "")
        if not re.search(rf"\b{re.escape(path.stem)}\b", row):
            missing.append(str(rel))
    assert not missing, f"modules missing from docs/ARCHITECTURE.md's rooms table (add each to its room's row): {missing}"
