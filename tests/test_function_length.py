"""No function in ``detect/`` is over :data:`MAX_LINES` lines (issue 23): a function a newcomer
can read in one screen or two. Nested functions count inside the one that holds them, so a
long function cannot hide in a closure. Read with :mod:`ast`; nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detect"
MAX_LINES = 100


def function_lengths(root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(lines, "path:line name") of every function and method under ``root``, longest first."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                out.append((node.end_lineno - node.lineno + 1, where))
    return sorted(out, reverse=True)


def test_no_function_is_over_100_lines():
    long = [f"{where}: {n} lines" for n, where in function_lengths() if n > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines (split them into named steps):\n" + "\n".join(long)


def test_the_count_includes_nested_functions(tmp_path):
    (tmp_path / "m.py").write_text("def outer():\n    def inner():\n        pass\n" + "    x = 1\n" * 120)
    lengths = dict((w.split()[-1], n) for n, w in function_lengths(tmp_path))
    assert lengths == {"outer": 123, "inner": 2}
