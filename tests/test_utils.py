"""detect.utils: output paths that must not be written, regular-file-only reads."""

from __future__ import annotations

import os
import stat

import pytest

from detect.utils import OutputPathError, check_output_path, open_regular


def test_output_path_new_or_regular_file_is_fine(tmp_path):
    assert check_output_path(tmp_path / "new.pkl") == tmp_path / "new.pkl"
    (tmp_path / "old.pkl").write_bytes(b"x")
    assert check_output_path(tmp_path / "old.pkl", [tmp_path / "a.xml"]) == tmp_path / "old.pkl"
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.pkl")  # a dangling link is replaced, nothing behind it
    check_output_path(tmp_path / "dangling.pkl")


def test_output_path_folder_fifo_device_refused(tmp_path):
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_path(tmp_path)
    os.mkfifo(tmp_path / "fifo.pkl")
    with pytest.raises(OutputPathError, match=r"fifo\.pkl is a FIFO"):
        check_output_path(tmp_path / "fifo.pkl")
    os.symlink("/dev/null", tmp_path / "null.pkl")  # a link to a device is refused like the device
    with pytest.raises(OutputPathError, match="character device"):
        check_output_path(tmp_path / "null.pkl", what="cache")
    if os.geteuid() == 0:  # as root, atomic_write replaced a device node with a regular file
        os.mknod(tmp_path / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        with pytest.raises(OutputPathError, match="character device"):
            check_output_path(tmp_path / "dev")
        assert stat.S_ISCHR(os.lstat(tmp_path / "dev").st_mode)


def test_output_path_that_is_an_input_refused(tmp_path):
    (tmp_path / "ann").mkdir()
    xml = tmp_path / "ann" / "a.xml"
    xml.write_text("<annotation/>")
    with pytest.raises(OutputPathError, match=r"a\.xml is one of the inputs"):
        check_output_path(tmp_path / "ann" / "a.xml", [tmp_path / "ann" / "b.xml", str(xml)])
    os.symlink(tmp_path / "ann", tmp_path / "link")  # the same file by another path
    with pytest.raises(OutputPathError, match="one of the inputs"):
        check_output_path(tmp_path / "link" / "a.xml", [xml])
    check_output_path(tmp_path / "ann" / "c.xml", [xml])  # a new file beside the inputs is fine


def test_output_path_input_found_by_name_case_aside_relative_or_from_a_generator(tmp_path, monkeypatch):
    """The one search over all input names (before the per-input check) misses none: another
    case of the name, a bare relative name, inputs given as a generator."""
    (tmp_path / "ann").mkdir()
    xml = tmp_path / "ann" / "a.xml"
    xml.write_text("<annotation/>")
    os.symlink(xml, tmp_path / "ann" / "A.XML")
    others = [str(tmp_path / "ann" / f"{i}.xml") for i in range(100)]
    with pytest.raises(OutputPathError, match="one of the inputs"):
        check_output_path(xml, [*others, str(tmp_path / "ann" / "A.XML")])
    monkeypatch.chdir(tmp_path / "ann")
    with pytest.raises(OutputPathError, match="one of the inputs"):
        check_output_path(xml, ["b.xml", "a.xml"])
    with pytest.raises(OutputPathError, match="one of the inputs"):
        check_output_path(xml, (p for p in [*others, str(xml)]))
    check_output_path(xml, (p for p in others))


def test_open_regular_refuses_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "f")
    with pytest.raises(OSError, match="FIFO"):
        open_regular(tmp_path / "f")  # would block forever with a plain open()
    (tmp_path / "r").write_bytes(b"abc")
    fd = open_regular(tmp_path / "r")
    try:
        assert os.read(fd, 10) == b"abc"
    finally:
        os.close(fd)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def _is_helper(pid: int) -> bool:
    """multiprocessing's resource tracker (started beside a forkserver or spawn pool) is a child
    too, but no pool worker: it ends by itself once every process holding its pipe is gone."""
    try:
        return b"resource_tracker" in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_parent_and_count_survivors(code: str, cwd: str, want: int = 2, wait: float = 5.0) -> tuple[int, int]:
    """Run ``code`` in a fresh interpreter, wait until it has ``want`` worker processes (its
    children, or its forkserver's), kill -9 it, and return (workers seen, workers alive
    ``wait`` seconds later). Survivors are killed here."""
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-c", code], cwd=cwd)
    workers: list[int] = []
    for _ in range(300):
        time.sleep(0.1)
        kids = [k for k in _children(p.pid) if not _is_helper(k)]
        workers = [w for k in kids for w in (_children(k) or [k])]  # a forkserver's children are the workers
        if len(workers) >= want:
            break
    time.sleep(0.5)  # let the initializers run
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + wait
    while time.time() < deadline and any(map(_alive, workers)):
        time.sleep(0.1)
    alive = [w for w in workers if _alive(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    return len(workers), len(alive)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counts processes through /proc (Linux)")
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_pool_workers_end_when_their_parent_is_killed(method):
    from pathlib import Path

    code = f"""
import multiprocessing as mp, os, time
from concurrent.futures import ProcessPoolExecutor
from detect.utils import die_with_parent
pool = ProcessPoolExecutor(2, mp_context=mp.get_context({method!r}), initializer=die_with_parent, initargs=(os.getpid(),))
for _ in range(2):
    pool.submit(time.sleep, 120)
time.sleep(120)
"""
    seen, alive = kill_parent_and_count_survivors(code, str(Path(__file__).resolve().parents[1]))
    assert seen == 2 and alive == 0
