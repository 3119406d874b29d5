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
