"""An annotation file from a stranger -> an lxml tree, or a problem that says what is wrong.

Only a regular file is read (a FIFO blocked a read forever, ``/dev/zero`` filled the memory),
of at most ``max_bytes``, and a symlink only when it points inside the annotation folder.
No DTD entities, no network (XXE, billion laughs). UTF-16 without a byte-order mark (Windows
tools write it) is recognised. A file libxml2 refuses becomes a ``parse_error`` or
``over_limit`` problem whose message says which limit was hit or what the bytes suggest.
:func:`load_tree` is the whole step; the VOC content is read by :mod:`detect.data.formats.voc`.
"""

from __future__ import annotations

import re
import threading
from typing import Optional

from lxml import etree

from detect.readers import read_limited

# No DTD entities, no network: annotation files come from strangers (XXE, billion laughs).
# Whitespace-only text nodes are dropped (every value we read is stripped anyway): ~12% faster.
_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, remove_comments=True, remove_pis=True,
                       remove_blank_text=True, collect_ids=False, huge_tree=False)
_PARSER = etree.XMLParser(**_PARSER_OPTIONS)
_LOCAL = threading.local()  # a feed parser per thread (feeding is stateful)


def load_tree(path: str, root: str, max_bytes: int, problems: list[tuple[str, str]], stat: Optional[list[int]] = None):
    """The parsed root element of the annotation file ``path``, or None with a problem added
    (unreadable, not a regular file, a link out of ``root``, too large, not well-formed XML).
    ``stat``, when given (a list ``[-1, -1]``), gets the file's size and mtime in ns (see
    :func:`read_xml`)."""
    data = read_xml(path, root, max_bytes, problems, stat)
    if data is None:
        return None
    data, guessed = _utf16_bom(data)
    try:
        return parse_xml(data)
    except etree.XMLSyntaxError as e:
        problems.append(_syntax_problem(str(e), data, guessed))
        return None


def read_xml(path: str, root: str, max_bytes: int, problems: list[tuple[str, str]],
             stat_out: Optional[list[int]] = None) -> Optional[bytes]:
    """The bytes of an annotation file, or None with a problem: :func:`detect.readers.read_limited`
    (only a regular file of at most ``max_bytes``; a symlink only when it points inside ``root``),
    the reader every label, list, JSON and YAML file goes through. ``stat_out`` (a list
    ``[-1, -1]``), when given, gets the file's ``[size, mtime_ns]``: a first build takes them from
    here, the ``fstat`` of the file as read, instead of a ``stat`` in the walk."""
    return read_limited(path, root, max_bytes, problems, stat_out, what="annotation file",
                        hint="a genuine file this large: raise --max-xml-bytes", root_what="annotation folder")


def _utf16_bom(data: bytes) -> tuple[bytes, str]:
    """UTF-16 without a byte-order mark or declaration (Windows tools write it) is not
    detected by libxml2: recognise it by its NUL bytes around the first character and add the
    mark. Returns the bytes to parse and the encoding guessed ("" when none)."""
    if len(data) < 4 or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data, ""
    if data[0] and not data[1] and data[2] and not data[3]:  # "<\0a\0": UTF-32 would have "<\0\0\0"
        return b"\xff\xfe" + data, "UTF-16-LE"
    if not data[0] and data[1] and not data[2] and data[3]:
        return b"\xfe\xff" + data, "UTF-16-BE"
    return data, ""


def _syntax_problem(message: str, data: bytes, guessed: str) -> tuple[str, str]:
    """A parse failure as a problem that says which limit was hit, or what the bytes suggest."""
    if depth := re.search(r"Excessive depth in document: (\d+)", message):
        return "over_limit", (f"elements nested deeper than {depth.group(1)} levels, the parser's limit (a guard "
                              "against hostile files); not read")
    if "Text node too long" in message or "huge text node" in message:
        return "over_limit", ("a text value longer than 10,000,000 characters, the parser's limit (a guard against "
                              "hostile files); not read")
    hint = ""
    if guessed:
        hint = f"; read as {guessed} without a byte-order mark, guessed from its NUL bytes"
    elif b"\0" in data[:1024]:
        hint = "; the file holds NUL bytes: if it is UTF-16 or UTF-32 text, save it as UTF-8"
    return "parse_error", f"not well-formed XML ({message}){hint}; fix or delete the file"


def parse_xml(data: bytes):
    """``etree.fromstring(data, _PARSER)``, faster: the same parser (libxml2, same options) fed
    through lxml's feed interface, ~16 instead of 19-23 us of CPU for a 1 KB file. Any failure
    there parses again with ``fromstring``, so a bad file raises the very
    :class:`etree.XMLSyntaxError` (and message) it always did: the feed interface words some
    errors differently ("Entity 'e' not defined" comes out as "no element found"). On 3,100
    fuzzed quirks files both accepted the same files and built the same trees."""
    parser = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = etree.XMLParser(**_PARSER_OPTIONS)
    try:
        parser.feed(data)
        return parser.close()
    except BaseException as e:
        try:  # leave the feed parser ready for the next file, even after a KeyboardInterrupt
            parser.close()
        except Exception:
            pass
        if not isinstance(e, Exception):
            raise
    return etree.fromstring(data, _PARSER)
