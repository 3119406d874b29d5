"""The parse pool of detect xml2pkl (detect/data/cache/parse_pool.py): the same cache with workers
as without, a fresh interpreter's pool (forked), image verification in the workers, and no
worker left behind when the command is killed. The cache itself is test_cache.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import test_cache
from test_cache import build, write_voc

import detect.data.cache.parse_pool as pool
from detect.cli import main
from detect.data import build_cache, load_cache

dataset = test_cache.dataset  # the cache tests' fixture: a small VOC folder with images


def test_parallel_equals_serial(dataset, tmp_path, monkeypatch):
    serial = build(dataset, tmp_path / "s.pkl", workers=1)
    monkeypatch.setattr(pool, "SERIAL_BELOW", 0)  # force the process pool on a tiny folder
    parallel = build(dataset, tmp_path / "p.pkl", workers=2)
    for key in ("boxes", "labels", "file", "box_start"):
        np.testing.assert_array_equal(serial.data["records"][key], parallel.data["records"][key])
    assert serial.data["problems"] == parallel.data["problems"]


def test_the_command_and_the_pool_share_the_chunks(tmp_path):
    """The pool takes chunks from the front and the command itself from the back: both parse,
    and the table is the serial one, row for row (a fresh interpreter without torch, so the
    pool forks and sees the recording wrapper)."""
    import subprocess
    import sys

    ann = tmp_path / "ann"
    for i in range(320):
        objs = [("cup", (1 + i % 7, 2, 30, 40))] if i % 9 else [("cup", (9, 9, 3, 3))]  # some degenerate boxes
        write_voc(ann / f"{i:04d}.xml", objs)
    (ann / "0100.xml").write_text("<annotation><object>")  # not well-formed
    code = f"""
import os
import detect.data.cache.parse_pool as pool
from detect.data import build_cache
real = pool._parse_chunk
def recorded(jobs):
    with open({str(tmp_path / "pids")!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    return real(jobs)
pool._parse_chunk = recorded
pool.SERIAL_BELOW = 0
build_cache({str(ann)!r}, {str(tmp_path / "p.pkl")!r}, workers=2, progress=False)
print(os.getpid())
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    pids = (tmp_path / "pids").read_text().split()
    assert len(pids) == 10 and run.stdout.strip() in pids and len(set(pids)) == 2  # 320 files: 10 chunks of 32
    pooled = load_cache(tmp_path / "p.pkl")
    serial = build_cache(ann, tmp_path / "s.pkl", workers=1, progress=False)
    assert [r.annotation for r in pooled.records] == [r.annotation for r in serial.cache.records]
    for a, b in zip(pooled.records, serial.cache.records):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
    assert pooled.problems == serial.problems and len(serial.problems) > 30


def test_tool_script_with_process_pool(tmp_path):
    """tools/xml2pkl.py in a fresh interpreter (no torch loaded: the pool forks) on enough
    files to use the pool, compared with an in-process serial build."""
    import subprocess
    import sys

    ann = tmp_path / "Annotations"
    for i in range(pool.SERIAL_BELOW + 50):
        write_voc(ann / f"{i:05d}.xml", [("cup", (1 + i % 7, 2, 30, 40)), ("tea", (5, 5, 9 + i % 11, 20))])
    tool = Path(__file__).resolve().parents[1] / "tools" / "xml2pkl.py"
    run = subprocess.run([sys.executable, str(tool), str(ann), "-o", str(tmp_path / "p.pkl"), "--workers", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"{pool.SERIAL_BELOW + 50} XML files" in run.stderr
    serial = build_cache(ann, tmp_path / "s.pkl", workers=1, progress=False)
    pooled = load_cache(tmp_path / "p.pkl")
    assert len(pooled.records) == len(serial.cache.records)
    for a, b in zip(pooled.records, serial.cache.records):
        assert a.annotation == b.annotation and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)


def test_verify_images_in_the_pool(dataset, tmp_path, monkeypatch, capsys):
    from test_voc_parser import corrupt_jpeg

    corrupt_jpeg(dataset / "images/cup/CUP0.jpg", size=(64, 48))
    args = ["xml2pkl", str(dataset / "annotations"), "--images", str(dataset / "images"), "--no-progress",
            "-o", str(tmp_path / "c.pkl"), "--workers", "2"]
    assert main(args) == 0 and "CUP0" in [Path(r.annotation).stem for r in load_cache(tmp_path / "c.pkl").records]
    monkeypatch.setattr(pool, "SERIAL_BELOW", 0)  # the pool, as on a large folder
    assert main([*args, "--verify-images"]) == 0  # a new option: everything is parsed again
    err = capsys.readouterr().err
    assert "5 parsed" in err and f"[corrupt_image] image {dataset / 'images/cup/CUP0.jpg'} decodes with errors" in err
    assert "CUP0" not in [Path(r.annotation).stem for r in load_cache(tmp_path / "c.pkl").records]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counts processes through /proc (Linux)")
def test_kill_9_of_xml2pkl_leaves_no_pool_workers(tmp_path):
    """After kill -9 of xml2pkl its pool workers lived on (16 orphans, still there 14 minutes later)."""
    from test_utils import kill_parent_and_count_survivors

    for i in range(60):
        write_voc(tmp_path / "ann" / f"{i:03d}.xml", [("cup", (1, 1, 9, 9))])
    code = f"""
import sys, time
import detect.data.cache.parse_pool as x
x.SERIAL_BELOW = 0
parse = x._parse_chunk
def slow(jobs):  # busy workers (forked, so they see this)
    time.sleep(120)
    return parse(jobs)
x._parse_chunk = slow
from detect.cli import main
sys.exit(main(["xml2pkl", {str(tmp_path / "ann")!r}, "-o", {str(tmp_path / "c.pkl")!r}, "--workers", "3", "--no-progress"]))
"""  # 3 parsers: the command and 2 pool workers
    seen, alive = kill_parent_and_count_survivors(code, str(Path(__file__).resolve().parents[1]))
    assert seen == 2 and alive == 0
    assert not (tmp_path / "c.pkl").exists()
