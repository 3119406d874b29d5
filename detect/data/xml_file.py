"""An annotation file from a stranger -> an lxml tree, or a problem that says what is wrong.

Only a regular file is read (a FIFO blocked a read forever, ``/dev/zero`` filled the memory),
of at most ``max_bytes``, and a symlink only when it points inside the annotation folder.
No DTD entities, no network (XXE, billion laughs). UTF-16 without a byte-order mark (Windows
tools write it) is recognised. A file libxml2 refuses becomes a ``parse_error`` or
``over_limit`` problem whose message says which limit was hit or what the bytes suggest.
:func:`load_tree` is the whole step; the VOC content is read by :mod:`detect.data.voc`.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from typing import Optional

from lxml import etree

from detect.utils import NotRegularFileError, is_within, open_regular

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


def _read_bytes(fd: int, limit: int, block: int = 1 << 16) -> bytes:
    """At most ``limit`` + 1 bytes of an open file (one more than allowed tells "too large");
    raw ``os.read`` is ~3x cheaper than ``open().read()`` per file."""
    data = os.read(fd, min(block, limit + 1))
    if len(data) < block:
        return data
    parts, n = [data], len(data)
    while n <= limit and (chunk := os.read(fd, min(block, limit + 1 - n))):
        parts.append(chunk)
        n += len(chunk)
    return b"".join(parts)


_FAST_OPEN = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)


def read_xml(path: str, root: str, max_bytes: int, problems: list[tuple[str, str]],
             stat_out: Optional[list[int]] = None) -> Optional[bytes]:
    """The bytes of an annotation file, or None with a problem: only a regular file (a FIFO
    blocked a read forever, ``/dev/zero`` filled the memory) of at most ``max_bytes``, and, when
    ``root`` (a real path) is given, a symlink only when it points inside ``root``.

    The usual file (``lstat``: a regular file, not a link) costs ``lstat``, ``open``
    (``O_NOFOLLOW``: a link swapped in meanwhile is not followed), one ``fstat`` (still regular,
    and its size), ``read`` and ``close``; anything else (a link, a special file, an error) takes
    :func:`_read_xml_checked`, which says what is wrong.

    ``stat_out`` (a list ``[-1, -1]``), when given, gets the file's ``[size, mtime_ns]`` as
    ``os.stat`` gives them (a link's target; left -1 when it cannot be stat-ed): a first build
    takes them from here, the ``fstat`` of the file as read, instead of a ``stat`` in the walk."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return _read_xml_checked(path, root, max_bytes, problems, stat_out)
        fd = os.open(path, _FAST_OPEN)
    except (OSError, ValueError):  # missing, unreadable, swapped for a link...: the careful path names it
        return _read_xml_checked(path, root, max_bytes, problems, stat_out)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since the lstat
            os.close(fd)
            fd = -1
            return _read_xml_checked(path, root, max_bytes, problems, stat_out)
        if stat_out is not None:
            stat_out[0], stat_out[1] = st.st_size, st.st_mtime_ns
        size = st.st_size
        data = _read_bytes(fd, max_bytes) if size <= max_bytes else b""
    except OSError as e:
        problems.append(("read_error", f"cannot read the file ({e.strerror or e})"))
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    return _check_size(size, data, max_bytes, problems)


def _read_xml_checked(path: str, root: str, max_bytes: int, problems: list[tuple[str, str]],
                      stat_out: Optional[list[int]] = None) -> Optional[bytes]:
    """:func:`read_xml` for a symlink, a special file or a failing ``lstat``/``open``."""
    if stat_out is not None:
        try:
            st = os.stat(path)  # what the walk's stat gives: a link's target, a FIFO's own
            stat_out[0], stat_out[1] = st.st_size, st.st_mtime_ns
        except (OSError, ValueError):
            pass
    try:
        if root and os.path.islink(path) and not is_within(path, root):
            problems.append(("link_outside", f"symlink to {os.path.realpath(path)}, outside the annotation folder {root}; not read"))
            return None
        fd = open_regular(path)
    except NotRegularFileError as e:
        problems.append(("special_file", f"{e.kind}, not a regular file; not read"))
        return None
    except OSError as e:
        problems.append(("read_error", f"cannot read the file ({e.strerror or e})"))
        return None
    try:
        size = os.fstat(fd).st_size
        data = _read_bytes(fd, max_bytes) if size <= max_bytes else b""
    except OSError as e:
        problems.append(("read_error", f"cannot read the file ({e.strerror or e})"))
        return None
    finally:
        os.close(fd)
    return _check_size(size, data, max_bytes, problems)


def _check_size(size: int, data: bytes, max_bytes: int, problems: list[tuple[str, str]]) -> Optional[bytes]:
    if size > max_bytes or len(data) > max_bytes:  # also a file that grew while read
        problems.append(("too_large", f"{max(size, len(data)):,} bytes, over the limit of {max_bytes:,} bytes for one annotation "
                                      "file; not read (a genuine file this large: raise --max-xml-bytes)"))
        return None
    return data


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
