"""Imports point one way (docs/ARCHITECTURE.md): ``base <- data <- models <- engine <- infer/tune <- audit <- cli``,
with ``models`` and ``data`` independent of each other and ``viz`` needing only the base.

Every ``import`` statement of the package is read with :mod:`ast`, function-level (lazy) ones
included, so a lazy import cannot hide a backwards dependency. Also: no import cycle between
modules, and ``datasets/`` stays a folder of data (no Python package).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "detect"

# room -> rooms it may import from (itself always allowed)
ALLOWED = {
    "base": set(),  # detect/*.py below: config, boxes, structures, utils, errors, options
    "data": {"base"},
    "models": {"base"},
    "viz": {"base"},
    "engine": {"base", "data", "models", "viz"},
    "infer": {"base", "data", "models", "viz", "engine"},
    "tune": {"base", "data", "models", "viz", "engine"},
    "audit": {"base", "viz", "infer"},  # shelf facts from detections: no model or engine code
    # serve detects through infer's Predictor; models only for set_postprocess (a batch's NMS IoU),
    # data only for the safe XML parser (Label Studio's labelling config); audit for POST /v1/audit
    "serve": {"base", "data", "models", "infer", "audit"},
    "cli": {"base", "data", "models", "viz", "engine", "infer", "tune", "audit", "serve"},
}
ROOMS = {"data", "models", "viz", "engine", "infer", "tune", "audit", "serve"}

# Inside data: the formats (readers, writers, the table of formats) and the cache sit below what
# resolves a --data (spec), which sits below detect convert (convert/); none imports one above it.
DATA_LEVELS = {"detect.data.formats": 0, "detect.data.cache": 0, "detect.data.spec": 1, "detect.data.convert": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    if module in ("detect.cli", "detect.__main__"):
        return "cli"
    return "base"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``detect`` import in a file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "detect"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "detect":
            # `from detect.infer import export` imports the module detect.infer.export
            subs = [f"{node.module}.{a.name}" for a in node.names]
            known = [s for s in subs if _is_module(s)]
            out += [(node.lineno, s) for s in known] or [(node.lineno, node.module)]
    return out


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph() -> dict[str, list[tuple[int, str]]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_imports_run_one_way():
    backwards = []
    for mod, deps in graph().items():
        src = room(mod)
        for line, dep in deps:
            dst = room(dep)
            if dst != src and dst not in ALLOWED[src]:
                backwards.append(f"{mod}:{line} ({src}) imports {dep} ({dst})")
    assert not backwards, "imports running backwards:\n" + "\n".join(backwards)


def data_level(module: str):
    return next((level for prefix, level in DATA_LEVELS.items() if module == prefix or module.startswith(prefix + ".")), None)


def test_data_rooms_run_one_way():
    upwards = []
    for mod, deps in graph().items():
        level = data_level(mod)
        for line, dep in deps:
            if level is not None and (data_level(dep) or 0) > level:
                upwards.append(f"{mod}:{line} imports {dep}")
            if dep.startswith("detect.data.convert") and room(mod) not in ("data", "cli"):
                upwards.append(f"{mod}:{line} imports {dep} (detect convert is the top of data)")
    assert not upwards, "imports running up inside data:\n" + "\n".join(upwards)


def test_no_import_cycles():
    g = {mod: sorted({d for _, d in deps if d != mod}) for mod, deps in graph().items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in g.get(mod, []):
            if mod.startswith(dep + "."):  # a module importing its own package's __init__
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]) if dep in path else f"{mod} -> {dep}")
            elif dep not in state:
                visit(dep, path + [dep])
        state[mod] = 2

    for mod in g:
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_datasets_folder_is_data_only():
    assert not list((ROOT / "datasets").rglob("*.py")), "datasets/ holds data and YAML only"
