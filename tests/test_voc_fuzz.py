"""Fuzzing the VOC parser and the cache build with the real-world quirks corpus (RUN_SLOW=1).

Every quirks file is mutated 64 ways (seeded): bytes flipped, cut short, tags duplicated or
removed, numbers made huge or non-finite, re-encoded (UTF-16 without a byte-order mark, bytes
that are not the declared encoding), entities (undefined, declared, nested "billion laughs"),
control characters in names, nesting past the parser's depth limit. Nothing may raise; every
mutation that must make a file defective has that file named in the problems; what is cached is
sane (finite boxes inside known images, one-line class names); the pool build agrees with
parsing file by file.
"""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest

from detect.data import build_cache, load_cache
from detect.data.formats.voc import parse_file

MUTANTS_PER_FILE = 64
HUGE = ["1e308", "2147483648", "-1e300", "nan", "inf", "1e39", "99999999999999999999", "-inf"]
NUMERIC = re.compile(rb"<(xmin|ymin|xmax|ymax|width|height)>([^<]*)</\1>")
DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")
ROOT = re.compile(rb"<annotation[^>]*>")


def _flip(data: bytes, rng: random.Random):
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b), False  # may or may not break the file


def _truncate(data: bytes, rng: random.Random):
    end = data.rindex(b"</annotation>")
    return data[: rng.randrange(1, end)], True  # the root is never closed


def _duplicate(data: bytes, rng: random.Random):
    blocks = [m.span() for m in re.finditer(rb"<(object|size|filename|bndbox)>.*?</\1>", data, re.S)]
    if not blocks:
        return data, False
    s, e = rng.choice(blocks)
    return data[:e] + data[s:e] + data[e:], False  # a repeated element is still VOC


def _remove_tag(data: bytes, rng: random.Random):
    tags = [m.span() for m in re.finditer(rb"</?[A-Za-z_][\w.-]*>", data)]
    s, e = rng.choice(tags)
    return data[:s] + data[e:], True  # an unmatched start or end tag


def _huge_number(data: bytes, rng: random.Random):
    parts = [m.span() for m in re.finditer(rb"<part>.*?</part>", data, re.S)]  # their boxes are ignored
    spots = [m for m in NUMERIC.finditer(data) if not any(s <= m.start() < e for s, e in parts)]
    if not spots:
        return data, False
    m = rng.choice(spots)
    # a coordinate out of range drops its object; a <size> out of range is unknown (no images here)
    return data[: m.start(2)] + rng.choice(HUGE).encode() + data[m.end(2):], True


def _utf16(data: bytes, rng: random.Random):
    text = DECL.sub(b"", data).decode("utf-8")
    return text.encode(rng.choice(["utf-16-le", "utf-16-be"])), False  # must read like the original


def _object_name(data: bytes) -> int:
    """Where the first object's class name starts (-1: no object): an <owner> has a <name> too."""
    obj = re.search(rb"<object[^>]*>.*?<name>", data, re.S)
    return obj.end() if obj else -1


def _bad_bytes(data: bytes, rng: random.Random):
    i = ROOT.search(data).end()
    utf8 = not re.search(rb"encoding=.(?!utf-?8)", DECL.match(data).group(0) if DECL.match(data) else b"", re.I)
    return data[:i] + b"\xe9\xff" + data[i:], utf8  # never valid UTF-8


def _entity(data: bytes, rng: random.Random):
    body = DECL.sub(b"", data)
    i = _object_name(body)
    if i < 0:
        return data, False
    kind = rng.choice(["declared", "undefined", "laughs"])
    dtd = {"declared": b'<!DOCTYPE annotation [<!ENTITY e "x">]>',
           "undefined": b"",
           "laughs": b'<!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                     b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY e "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'}[kind]
    return dtd + body[:i] + b"p&e;q" + body[i:], True


def _control(data: bytes, rng: random.Random):
    i = _object_name(data)
    if i < 0:
        return data, False
    return data[:i] + b"a" + rng.choice([b"\t", b"\x01", b"&#9;", b"&#10;b"]) + data[i:], True


def _deep(data: bytes, rng: random.Random):
    i = ROOT.search(data).end()
    return data[:i] + b"<x>" * 300 + b"</x>" * 300 + data[i:], True  # past the parser's depth limit


OPS = [_flip, _truncate, _duplicate, _remove_tag, _huge_number, _utf16, _bad_bytes, _entity, _control, _deep]


@pytest.mark.slow
def test_fuzzed_quirks_corpus(shared_data, tmp_path):
    quirks = shared_data / "voc-xml-quirks"
    if not quirks.is_dir():
        pytest.skip("voc-xml-quirks not present")
    rng = random.Random(2026)
    out = tmp_path / "fuzz"
    out.mkdir()
    must_fail, same_as = set(), {}
    for src in sorted(quirks.glob("*.xml")):
        data = src.read_bytes()
        for k in range(MUTANTS_PER_FILE):
            op = OPS[k % len(OPS)]
            mutated, bad = op(data, rng)
            path = out / f"{src.stem}__{k:02d}{op.__name__}.xml"
            path.write_bytes(mutated)
            if bad:
                must_fail.add(str(path))
            if op is _utf16:
                same_as[str(path)] = src
    files = sorted(str(p) for p in out.glob("*.xml"))
    assert len(files) >= 2000

    direct = {}
    for f in files:  # the parser on its own: never an exception
        r = parse_file(f, root=str(out.resolve()))
        direct[f] = sorted(k for k, _ in r.problems)
        assert all(math.isfinite(v) and abs(v) < 2**31 for v in r.boxes), f
        assert not any(re.search(r"[\x00-\x1f\x7f-\x9f]", n) for n in r.names), f
        if f in same_as:
            assert r.names == parse_file(str(same_as[f])).names, f

    res = build_cache(out, tmp_path / "fuzz.pkl", workers=2, progress=False)  # the pool and the cache
    cache = load_cache(tmp_path / "fuzz.pkl")  # every check of a loaded cache passes
    named: dict[str, list[str]] = {}
    for p in res.problems:
        named.setdefault(p.file, []).append(p.kind)
    missed = sorted(must_fail - set(named))
    assert not missed, f"{len(missed)} defective files not named in the problems, e.g. {missed[:3]}"
    assert {f: sorted(k) for f, k in named.items()} == {f: k for f, k in direct.items() if k}  # pool == direct
    for r in cache.records:
        assert np.isfinite(r.boxes).all() and (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        if r.width:
            assert r.boxes.min(initial=0) >= 0 and (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()
    assert not any(re.search(r"[\x00-\x1f\x7f-\x9f]", c) for c in cache.classes)
    kept = {r.annotation for r in cache.records}
    assert all(f in named for f in files if f not in kept)  # no file left out without a word
