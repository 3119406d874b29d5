"""The README's examples run as written, from a folder laid out like a fresh clone (issue 23).

The rule, for every ```bash and ```python block of README.md (a block in another language, or in
none, is refused: an example must say what it is):
- a block runs, and must exit 0, unless an HTML comment on the line right before it says
  otherwise: ``<!-- no-test: WHY -->`` (it needs your data, a server, the install itself, or is a
  synopsis with placeholders) or ``<!-- slow: WHY -->`` (it runs only with RUN_SLOW=1);
- the blocks under one heading are one session: a block runs after the runnable blocks above it
  under the same heading, in one folder (the ``detect synth`` before a ``detect train``);
- the folder is a temporary copy of a fresh clone: the repository's top-level files linked in
  (no ``runs/``, no ``data/``), ``.venv`` the environment running the tests; shell blocks run
  there with that environment activated (``detect`` on the PATH);
- Python blocks run with that environment's Python in an empty folder outside the clone, as a
  script of yours would (a path that only resolves in a checkout fails).
``pytest -rs tests/test_readme.py`` lists every block that did not run, and why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN_LANGS = {"bash": "bash", "python": "python"}
NOT_IN_A_CLONE = {".git", ".venv", "runs", "data", "build", "dist", ".pytest_cache"}  # made by using it
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARK = re.compile(r"^\s*<!--\s*(no-test|slow):\s*(.*?)\s*-->\s*$")
HEADING = re.compile(r"^#{1,6} ")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    heading: str
    mark: str  # "", "no-test" or "slow"
    why: str

    def name(self, blocks: list["Block"]) -> str:
        """A test id that survives edits elsewhere: the heading's words and the block's place under it."""
        n = sum(1 for b in blocks if b.heading == self.heading and b.line <= self.line)
        return f"{re.sub(r'[^a-z0-9]+', '-', self.heading.split(':')[0].lower()).strip('-')}-{n}-{self.lang}"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with its language, heading and mark, dedented to its fence."""
    blocks, heading, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if HEADING.match(line):
            heading = line.strip("# ").strip()
        m = FENCE.match(line)
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md:{i + 1}: a code block is never closed"
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:end]]
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(prev)
        blocks.append(Block(i + 1, lang, "\n".join(body) + "\n", heading, mark.group(1) if mark else "",
                            mark.group(2) if mark else ""))
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def _params():
    for b in BLOCKS:
        if b.lang not in RUN_LANGS:
            continue
        marks = [pytest.mark.skip(reason=f"README.md:{b.line}: {b.why}")] if b.mark == "no-test" else []
        if b.mark == "slow":
            marks.append(pytest.mark.slow)
        yield pytest.param(b, id=b.name(BLOCKS), marks=marks)


def _fresh_clone(tmp: Path) -> Path:
    """A folder laid out like a fresh clone of this checkout after ``bash install.sh``: its
    top-level entries linked, ``.venv`` the running environment. Nothing under ROOT is written
    by the examples (they write runs/ and data/, which are the folder's own)."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "detect").exists():
        pytest.skip(f"no `detect` script in {venv}/bin: run the tests with the installed .venv's Python")
    clone = tmp / "clone"
    clone.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in NOT_IN_A_CLONE:
            (clone / entry.name).symlink_to(entry)
    (clone / ".venv").symlink_to(venv)
    return clone


def _env(clone: Path, tmp: Path) -> dict:
    venv = clone / ".venv"
    env = dict(os.environ)
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",  # as `source .venv/bin/activate`
        VIRTUAL_ENV=str(venv),
        PYTHONPATH=str(ROOT),  # this checkout's code (the editable install points at a checkout too)
        RETAIL_DETECT_CACHE=str(tmp / "cache"),  # caches and INT8 models stay in the test's folder
        MPLBACKEND="Agg",
    )
    return env


def _run(block: Block, cwd: Path, env: dict, timeout: float) -> None:
    if block.lang == "python":
        cmd = [str(cwd / ".venv" / "bin" / "python"), "-c", block.code]
        cwd = cwd.parent / "elsewhere"
        cwd.mkdir(exist_ok=True)
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, (
        f"README.md:{block.line} (under '{block.heading}') exited {p.returncode}:\n{block.code}\n"
        f"--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", list(_params()))
def test_readme_block_runs(block: Block, tmp_path):
    clone = _fresh_clone(tmp_path)
    env = _env(clone, tmp_path)
    before = [b for b in BLOCKS if b.heading == block.heading and b.line < block.line
              and b.lang in RUN_LANGS and b.mark != "no-test"]
    for b in before + [block]:
        _run(b, clone, env, timeout=1800 if b.mark == "slow" else 300)


def test_every_block_is_an_example_with_a_language_and_every_mark_says_why():
    other = [f"README.md:{b.line} ```{b.lang}" for b in BLOCKS if b.lang not in RUN_LANGS]
    assert not other, f"code blocks that are neither bash nor python (tag each, or mark it): {other}"
    unexplained = [f"README.md:{b.line}" for b in BLOCKS if b.mark and len(b.why) < 8]
    assert not unexplained, f"a no-test/slow mark must say why: {unexplained}"
    run_always = [b for b in BLOCKS if not b.mark]
    assert any(b.lang == "python" for b in run_always), "the Python example must run in the fast suite"


def test_quick_start_is_the_two_commands_ci_runs():
    """The README starts with the install + demo and the test command; .ci/run runs that command
    as written there after install.sh, so the two cannot drift apart."""
    first, second = (b.code.strip() for b in BLOCKS[:2])
    assert first == "bash install.sh && .venv/bin/detect demo"
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert "bash install.sh" in ci and second in ci[ci.index("bash install.sh") + 1:], (
        f".ci/run does not run the README's test command {second!r} after install.sh")
    text = README.read_text(encoding="utf-8")
    assert text.index("## Quick start") < text.index("## Your own data in 3 commands") < text.index("## Reference")


def test_readme_links_and_pictures_exist():
    """Every relative link and picture points at a file of the clone; pictures stay small."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    relative = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert relative, "no relative links found: the pattern broke"
    missing = [t for t in relative if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    pictures = re.findall(r"!\[[^\]]+\]\(([^)\s]+)\)", text)
    assert pictures, "the README shows an annotated shelf"
    for pic in pictures:
        assert (ROOT / pic).stat().st_size < 300_000, f"{pic} is over 300 KB: a README picture is a download for every reader"
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    headings = {re.sub(r"[^\w\- ]", "", h.strip("# ").lower()).replace(" ", "-")
                for h in text.splitlines() if HEADING.match(h)}
    assert not anchors - headings, f"links to headings that do not exist: {sorted(anchors - headings)}"
