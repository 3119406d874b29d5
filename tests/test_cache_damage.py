"""Damaged and unsafe caches: truncated, foreign, older-schema or corrupt files, payloads with
a valid digest but a bad structure, huge array placeholders and malicious pickles are refused
with a one-sentence cache error (and rebuilt by xml2pkl), never executed or allocated. The
cache's normal life is test_cache.py."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import test_cache
from test_cache import build

from detect.cli import main
from detect.data import CacheError, load_cache
from detect.data.cache.cache_file import FORMAT, write_cache_data
from detect.data.cache.safe_pickle import NUMPY_GLOBALS, UnsafePickleError, safe_load_pickle

dataset = test_cache.dataset  # the cache tests' fixture: a small VOC folder with images


@pytest.mark.parametrize("damage", ["truncated", "foreign", "old_schema", "corrupt_payload", "bad_payload", "garbage",
                                    "huge_length", "huge_frame"])
def test_damaged_cache_detected_and_rebuilt(dataset, tmp_path, damage, capsys):
    out = tmp_path / "c.pkl"
    good = build(dataset, out)
    data = out.read_bytes()
    if damage == "truncated":
        out.write_bytes(data[:-100])
    elif damage == "foreign":
        out.write_bytes(pickle.dumps({"records": [1, 2, 3]}))
    elif damage == "old_schema":
        out.write_bytes(pickle.dumps({"format": FORMAT, "schema": 0}) + data)
    elif damage == "corrupt_payload":
        out.write_bytes(data[:-50] + bytes(b ^ 0xFF for b in data[-50:-40]) + data[-40:])
    elif damage == "bad_payload":  # intact header and digest, inconsistent columns
        bad = dict(good.data, records=dict(good.data["records"], labels=good.data["records"]["labels"][:-1]))
        write_cache_data(out, bad, fingerprint="x", summary={})
    elif damage == "huge_length":  # BINBYTES8 whose length exceeds sys.maxsize: OverflowError inside pickle
        out.write_bytes(b"\x80\x05\x8e" + b"\xff" * 8)
    elif damage == "huge_frame":  # the same for a protocol-4 FRAME
        out.write_bytes(b"\x80\x04\x95" + b"\xff" * 8)
    else:  # random bytes: any of the above, or an opcode's argument read as garbage
        out.write_bytes(os.urandom(256))
    with pytest.raises(CacheError, match="rebuild"):
        load_cache(out)
    res = build(dataset, out)
    assert "previous cache unusable, rebuilding" in capsys.readouterr().err
    assert len(res.parsed) == 5 and len(load_cache(out).records) == len(good.cache.records)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_not_executed(dataset, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"format": FORMAT, "payload": _Evil(marker)}))
    with pytest.raises(UnsafePickleError, match="refusing to load posix.system|refusing to load os.system"):
        safe_load_pickle(evil)
    with pytest.raises(CacheError, match="refusing"):
        load_cache(evil)
    # a malicious file sitting where the cache goes is replaced, not run
    build(dataset, evil)
    assert not marker.exists()
    assert len(load_cache(evil).records) == 4


def test_safe_load_pickle_allows_plain_data_and_listed_types(tmp_path):
    data = {"a": [1, 2.5, "x", None, True, (1, b"b")], "arr": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int64(3)}
    for proto in (2, 4, 5):
        back = safe_load_pickle(pickle.dumps(data, protocol=proto))
        assert back["a"] == data["a"] and np.array_equal(back["arr"], data["arr"]) and back["s"] == 3
    from collections import OrderedDict

    blob = pickle.dumps(OrderedDict(a=1))
    with pytest.raises(UnsafePickleError):
        safe_load_pickle(blob)
    assert safe_load_pickle(blob, allowed=NUMPY_GLOBALS | {("collections", "OrderedDict")}) == {"a": 1}


class _Placeholder:
    """Pickles as numpy's array placeholder ``_reconstruct(ndarray, shape, b'b')`` with a huge shape."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, self.shape, b"b"))


def _set(path: str, value):
    def mutate(data):
        *keys, last = path.split(".")
        d = data
        for k in keys:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value(d[last]) if callable(value) else value
    return mutate


@pytest.mark.parametrize("name, mutate", [
    ("problem with two fields", _set("problems", lambda p: [("a", "b")])),
    ("no options", _set("options", KeyError)),
    ("options.ann_dir not a string", _set("options.ann_dir", 5)),
    ("classes an int", _set("classes", 5)),
    ("class name not a string", _set("classes", lambda c: [1, *c[1:]])),
    ("NaN box", _set("records.boxes", lambda b: np.where(np.arange(b.size).reshape(b.shape) == 0, np.nan, b).astype(np.float32))),
    ("inf file box", _set("files.boxes", lambda b: np.full_like(b, np.inf))),
    ("object-dtype boxes", _set("records.boxes", lambda b: b.astype(object))),
    ("float64 labels", _set("records.labels", lambda a: a.astype(np.float64))),
    ("name_id past the names", _set("files.name_id", lambda a: a + 100)),
    ("hints not triples", _set("files.hints", lambda h: [("x",)] * len(h))),
    ("file problem index past the files", _set("files.problems", lambda p: [(99, "k", "m")])),
    ("box_start decreasing", _set("records.box_start", lambda s: s[::-1].copy())),
    ("image list too short", _set("images.path", lambda p: p[:-1])),
    ("2**40-byte array placeholder", _set("records.labels", _Placeholder((2**40,)))),
])
def test_valid_digest_bad_structure_is_a_cache_error(dataset, tmp_path, name, mutate):
    """The digest only proves the payload is what was written: a foreign or hand-edited payload
    raised TypeError, KeyError or MemoryError, or loaded NaN/object boxes and trained on them."""
    out = tmp_path / "c.pkl"
    good = build(dataset, out)
    data = pickle.loads(pickle.dumps(good.data))
    mutate(data)
    write_cache_data(out, data, fingerprint="x", summary=good.summary)
    with pytest.raises(CacheError, match=f"{out}: .*rebuild it with `detect xml2pkl`"):
        load_cache(out)
    assert len(build(dataset, out).parsed) == 5  # and xml2pkl rebuilds it


def test_damaged_summary_in_an_up_to_date_header_is_rebuilt(dataset, tmp_path, capsys):
    out = tmp_path / "c.pkl"
    args = ["xml2pkl", str(dataset / "annotations"), "--images", str(dataset / "images"), "--no-progress", "-o", str(out)]
    assert main(args) == 0
    good = build(dataset, out)
    from detect.data.cache.cache_file import read_cache_parts

    header, _ = read_cache_parts(out)
    write_cache_data(out, good.data, **{**header, "summary": {**good.summary, "first": [1]}})
    capsys.readouterr()
    assert main(args) == 0  # summarize() unpacked three fields from each of "first" and crashed
    assert "(0 parsed, 5 reused)" in capsys.readouterr().err  # not "up to date": the header is rewritten


def test_huge_array_placeholder_refused_before_allocation():
    blob = pickle.dumps({"a": _Placeholder((2**40,)), "b": np.arange(3.0)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="placeholder of shape"):
        safe_load_pickle(blob)
    assert safe_load_pickle(pickle.dumps(np.arange(70000, dtype=np.int64), protocol=2)).sum() == 70000 * 69999 // 2


# A length or memo index read as garbage, or written to harm: refused by the opcode walk before the
# C unpickler allocates it (1-2 GiB here: were the walk gone, the test would allocate that and fail, not
# exhaust the machine).
_HUGE_MEMO = b"\x80\x02N" + b"r" + (1 << 27).to_bytes(4, "little") + b"."  # None, then LONG_BINPUT 2**27
_HUGE_BYTES = b"\x80\x03B" + (1 << 30).to_bytes(4, "little") + b"x"  # BINBYTES of 1 GiB, one byte there
_HUGE_FRAME = b"\x80\x04\x95" + (1 << 30).to_bytes(8, "little") + b"N."  # a 1 GiB FRAME, two bytes there


@pytest.mark.parametrize("blob, message", [(_HUGE_MEMO, "memo index 134217728"), (_HUGE_BYTES, "expected 1073741824 bytes"),
                                           (_HUGE_FRAME, "a frame of 1073741824 bytes")],
                         ids=["memo_index", "counted_length", "frame"])
def test_garbage_sizes_refused_before_allocation(tmp_path, blob, message):
    with pytest.raises(pickle.UnpicklingError, match=message):
        safe_load_pickle(blob)
    f = tmp_path / "p.pkl"
    f.write_bytes(blob)
    with pytest.raises(pickle.UnpicklingError, match=message):
        safe_load_pickle(f)  # a file: each read cut to what the file holds


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_walk_passes_every_pickle_protocol_and_leaves_a_file_where_it_was(tmp_path, protocol):
    from detect.data.cache.safe_pickle import check_pickle

    data = {"a": [1, 2.5, "x" * 300, b"y" * 70000, (None, True)], "arr": np.arange(5000.0), "again": None}
    data["again"] = data["a"]  # memoised objects: PUT / MEMOIZE, then GET
    f = tmp_path / "two.pkl"
    f.write_bytes(pickle.dumps("header", protocol=protocol) + pickle.dumps(data, protocol=protocol))
    with open(f, "rb") as fh:
        assert safe_load_pickle(fh) == "header"
        check_pickle(fh)
        assert fh.tell() == len(pickle.dumps("header", protocol=protocol))  # the walk seeks back
        out = safe_load_pickle(fh)
    assert out["again"] is out["a"] and out["arr"].sum() == np.arange(5000.0).sum()
