"""Reading a stranger's annotation file (detect/data/formats/xml_file.py), through parse_file: only
regular files inside the annotation folder, of a bounded size; no entities; UTF-16 without a
byte-order mark; files libxml2 refuses named with the limit or the likely encoding; the feed
parser gives the same trees and messages as fromstring. What the tree means is test_voc_parser.py."""

from __future__ import annotations

import os

import pytest
from test_voc_parser import kinds, parse_voc, voc

from detect.data.formats.voc import parse_file


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"\x00" * 512, "parse_error"),
        (b"", "parse_error"),
        (b"<annotation><object><name>x</name></annotation>", "parse_error"),
        (b"<annotations><image/></annotations>", "not_voc"),
    ],
)
def test_unusable_files_are_reported(tmp_path, data, kind):
    f = tmp_path / "bad.xml"
    f.write_bytes(data)
    record, problems = parse_voc(f, ["x"])
    assert record is None and kinds(problems) == [kind] and problems[0].file == str(f)


def test_encoding_charrefs_crlf_declaration(tmp_path):
    f = tmp_path / "a.xml"
    text = '<?xml version="1.0" encoding="UTF-8"?>\r\n' + voc(objs=[("caf&#233; cr&#232;me", (1, 1, 5, 5)), ("茶", (1, 1, 5, 5))]).replace("><", ">\r\n<")
    f.write_bytes(text.encode("utf-8"))
    assert parse_file(str(f)).names == ["café crème", "茶"]
    g = tmp_path / "b.xml"
    g.write_bytes('<?xml version="1.0" encoding="ISO-8859-1"?>'.encode() + voc(objs=[("café", (1, 1, 5, 5))]).encode("latin-1"))
    assert parse_file(str(g)).names == ["café"]


def test_external_entities_are_not_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    f = tmp_path / "a.xml"
    f.write_text(f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>' + voc(objs=[("&x;", (1, 1, 5, 5))]))
    r = parse_file(str(f))
    assert "TOPSECRET" not in "".join(r.names)


def test_large_file_read_whole(tmp_path):
    f = tmp_path / "big.xml"
    objs = [("cup", (1, 1, 5 + i % 50, 5 + i % 40)) for i in range(3000)]  # > 64 KiB
    f.write_text(voc(size=(100, 50), objs=objs))
    assert f.stat().st_size > 1 << 17
    assert len(parse_file(str(f)).names) == 3000


def test_special_files_and_links_leaving_the_folder_are_not_read(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    os.mkfifo(ann / "fifo.xml")  # a plain read blocked forever
    os.symlink("/dev/zero", ann / "zero.xml")  # read until memory ran out
    outside = tmp_path / "elsewhere.xml"
    outside.write_text(voc())
    os.symlink(outside, ann / "leaves.xml")
    (ann / "real.xml").write_text(voc())
    os.symlink(ann / "real.xml", ann / "inside.xml")  # a link within the folder is fine
    root = str(ann.resolve())
    for name, kind, words in [("fifo.xml", "special_file", "a FIFO (named pipe), not a regular file"),
                              ("zero.xml", "link_outside", "symlink to /dev/zero, outside the annotation folder"),
                              ("leaves.xml", "link_outside", f"symlink to {outside}, outside the annotation folder")]:
        r = parse_file(str(ann / name), root=root)
        assert not r.ok and kinds(r.problems) == [kind] and words in r.problems[0][1], r.problems
    assert parse_file(str(ann / "zero.xml")).problems[0][0] == "special_file"  # no folder given: still not read
    r = parse_file(str(ann / "inside.xml"), root=root)
    assert r.ok and r.names == ["cup"] and r.problems == []


def test_xml_size_cap_names_the_limit_and_the_option(tmp_path):
    f = tmp_path / "big.xml"
    f.write_text(voc(objs=[("cup", (1, 1, 5, 5))] * 200))
    size = f.stat().st_size
    r = parse_file(str(f), max_bytes=size - 1)
    assert not r.ok and kinds(r.problems) == ["too_large"]
    assert f"{size:,} bytes" in r.problems[0][1] and f"{size - 1:,}" in r.problems[0][1] and "--max-xml-bytes" in r.problems[0][1]
    assert len(parse_file(str(f), max_bytes=size).names) == 200


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_or_declaration_is_read(tmp_path, codec):
    """Rejected before with 'Char 0x0 out of allowed range' (LE) or 'Document is empty' (BE)."""
    f = tmp_path / "a.xml"
    f.write_bytes(("\n" + voc(objs=[("café", (1, 1, 5, 5))])).encode(codec))
    r = parse_file(str(f))
    assert r.ok and r.names == ["café"] and r.problems == []


def test_encoding_and_parser_limits_are_named(tmp_path):
    f = tmp_path / "a.xml"
    f.write_bytes(voc().encode("utf-32-le"))  # libxml2 detects UTF-32 by itself
    assert parse_file(str(f)).names == ["cup"]
    f.write_bytes(voc().encode("utf-8")[:30] + "<object>".encode("utf-16-le"))  # mixed: the NULs are named
    r = parse_file(str(f))
    assert kinds(r.problems) == ["parse_error"] and "NUL bytes" in r.problems[0][1] and "UTF-8" in r.problems[0][1]
    f.write_text("<annotation>" + "<a>" * 300 + "</a>" * 300 + "</annotation>")
    r = parse_file(str(f))
    assert kinds(r.problems) == ["over_limit"] and "nested deeper than 256" in r.problems[0][1]
    assert "XML_PARSE_HUGE" not in r.problems[0][1]  # an option of libxml2 the user cannot set
    f.write_text(voc(fn="x" * 10_000_001))
    r = parse_file(str(f))
    assert kinds(r.problems) == ["over_limit"] and "longer than 10,000,000" in r.problems[0][1]


def test_parse_xml_is_fromstring_with_the_same_messages(tmp_path):
    """parse_xml feeds lxml's push parser (cheaper per file) and parses a failing file again
    with fromstring: same trees, and every error worded as before (fed, an undefined entity
    came out as "no element found")."""
    from lxml import etree

    from detect.data.formats import xml_file as vocmod

    good = voc(objs=[("cup", (1, 1, 5, 5)), ("tea", (2, 2, 9, 9))]).encode()
    docs = [good, good.decode().encode("utf-16"), b"", b"<a>", b"<annotation>&e;</annotation>", b"<annotation>\xff</annotation>",
            b'<!DOCTYPE annotation [<!ENTITY e "x">]><annotation><name>p&e;q</name></annotation>',
            b"<annotation>" + b"<a>" * 300 + b"</a>" * 300 + b"</annotation>", good[: len(good) // 2]]
    for data in docs:
        try:
            want = etree.tostring(etree.fromstring(data, vocmod._PARSER))
        except etree.XMLSyntaxError as e:
            want = str(e)
        try:
            got = etree.tostring(vocmod.parse_xml(data))
        except etree.XMLSyntaxError as e:
            got = str(e)
        assert got == want, data[:40]
    vocmod._LOCAL.parser.feed(b"<annotation><object>")  # left mid-document (an interrupted feed)
    assert etree.tostring(vocmod.parse_xml(good)) == etree.tostring(etree.fromstring(good, vocmod._PARSER))
    r = parse_file(str(tmp_path / "gone.xml"))  # the usual file's quick read: a failure says what it always said
    assert not r.ok and kinds(r.problems) == ["read_error"] and "No such file or directory" in r.problems[0][1]
