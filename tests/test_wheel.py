"""Installed as a wheel (``pip install .``, not editable) the package works: the wheel holds every
subpackage and the shipped weights, and ``detect demo`` run from another folder finds them.

The check is cheap enough for every CI run: the wheel is built offline from a copy of the sources
(no build isolation), and installed without dependencies into a fresh venv that sees this
environment's packages (torch and the rest) through a ``.pth`` file but not the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "detect").rglob("__init__.py")}
    assert set(cfg["packages"]) == found | {"detect._weights"}, "list a new subpackage in pyproject.toml"
    assert cfg["package-dir"] == {"detect._weights": "weights"}
    assert (ROOT / "weights" / "ssd_lite0_synth.pt").is_file()


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout must not be importable
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, **kw)


@pytest.mark.wheel
def test_wheel_installs_and_demo_finds_the_shipped_weights(tmp_path):
    src = tmp_path / "src"  # pip builds in the source folder: a copy keeps build/ out of the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("detect", "weights"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, src])
    if built.returncode:
        pytest.skip(f"pip cannot build the wheel offline here: {built.stderr.strip()[-500:]}")
    wheel = next(dist.glob("retail_detect-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"detect/_weights/ssd_lite0_synth.pt", "detect/_weights/README.md", "detect/data/synth/scene.py",
            "detect/infer/weights.py", "detect/tune/space.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "weights/", "datasets/"))]

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, symlinks=os.name != "nt")
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}  # torch, pip, ... (not the checkout)
    (site / "_retail_detect_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
    installed = _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel])
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    detect = env_dir / ("Scripts/detect.exe" if os.name == "nt" else "bin/detect")
    demo = _run([detect, "demo", "--out", "shelves", "--images", "1", "--device", "cpu"], cwd=elsewhere)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    used = demo.stdout.rsplit("(weights: ", 1)[-1].rstrip().rstrip(")")
    assert Path(used).resolve() == (site / "detect" / "_weights" / "ssd_lite0_synth.pt").resolve(), demo.stdout
    assert (elsewhere / "shelves" / "shelf_00.jpg").is_file()
