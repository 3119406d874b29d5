"""Finding the image an annotation describes, and reading its size cheaply.

Layouts understood (any mix of them):
- VOC: ``Annotations/<id>.xml`` + ``JPEGImages/<id>.jpg``;
- per-class folders: ``annotations/<class>/<STEM>.xml`` + ``images/<class>/<STEM>.jpg``;
- images beside their XML (labelImg's default).

Images are matched by *stem*, never by the XML's recorded extension or absolute path: datasets
are routinely re-encoded (PNG -> JPEG) or moved after labelling, so ``<filename>FISH0041.png``
finds ``FISH0041.jpg`` and a Windows ``<path>`` from the labeller's machine is only a hint.
Only files found under the image roots are ever opened: ``<path>`` is never followed
(``../../outside/photo.jpg`` or ``/etc/...`` in a stranger's annotation must not be read).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterable, NamedTuple, Optional, Sequence

from detect.utils import open_regular, stderr_fd_captured

# What cv2.imread decodes: the one list for matching annotations to images and for `detect predict`.
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pbm",
                        ".pgm", ".ppm", ".pnm", ".sr", ".ras", ".exr", ".hdr", ".pic"})
# Extensions stripped from a name hint before matching by stem ("000162.xml" is a labeller bug).
_HINT_EXTS = IMAGE_EXTS | {".xml", ".gif"}

if TYPE_CHECKING:  # numpy is imported where images are decoded: listing files needs none of it
    import numpy as np


class FileStat(NamedTuple):
    """A file's identity for change detection: absolute path, size in bytes, mtime in ns."""

    path: str
    size: int
    mtime_ns: int


class Listing(NamedTuple):
    """Files found by :func:`walk_files`, as parallel lists (cheap to build for 100k files)."""

    paths: list[str]  # absolute
    rels: list[str]  # relative to the root, "/"-separated
    sizes: list[int]
    mtimes: list[int]  # ns

    def stats(self) -> list[FileStat]:
        return [FileStat(*t) for t in zip(self.paths, self.sizes, self.mtimes)]


def walk_files(root: str | Path, *ext_groups: Iterable[str], stat: Sequence[bool] = ()) -> list[Listing]:
    """Files under ``root`` whose lower-case suffix is in an extension group, one
    :class:`Listing` per group, in a deterministic order (sorted names, depth first).
    Hidden folders (``.git``...) and symlinked folders are not entered (no loops); unreadable
    folders are skipped. This runs over every file on every re-run, so it is lean: one
    ``stat`` per matching file and no per-file objects beyond the four list entries.

    ``stat``: per group, whether to ``stat`` its files (default: all). A group walked without
    leaves ``sizes`` and ``mtimes`` empty and keeps files whatever their state (a broken link
    too): ~6x cheaper, for a first build, whose parser stats each file as it reads it."""
    root = os.path.abspath(root)
    groups = [tuple(e for ext in exts for e in (ext, ext.upper())) for exts in ext_groups]
    with_stat = [bool(stat[g]) if g < len(stat) else True for g in range(len(groups))]
    out = [Listing([], [], [], []) for _ in groups]
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            name = e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    if name[0] != ".":
                        subdirs.append((e.path, f"{rel}{name}/"))
                    continue
                for g, suffixes in enumerate(groups):
                    if name.endswith(suffixes) or name.lower().endswith(suffixes):
                        listing = out[g]
                        if with_stat[g]:
                            st = e.stat()
                            listing.sizes.append(st.st_size)
                            listing.mtimes.append(st.st_mtime_ns)
                        listing.paths.append(e.path)
                        listing.rels.append(rel + name)
                        break
            except OSError:  # vanished or unreadable: not ours to report
                continue
        stack.extend(reversed(subdirs))
    return out


def hint_stems(xml_stem: str, filename: str, frame: str, path: str) -> list[str]:
    """Candidate image stems for an annotation, most trusted first.

    The XML's own stem comes first, as in every VOC tool (torchvision, detectron2, mmdet read
    ``JPEGImages/<id>.jpg`` for ``Annotations/<id>.xml``); then ``<filename>`` (with or without
    extension, Windows or POSIX separators), URPC's ``<frame>``, and the last part of ``<path>``.
    """
    out: list[str] = []
    for hint in (xml_stem, filename, frame, path):
        if not hint:
            continue
        base = hint.replace("\\", "/").rsplit("/", 1)[-1].strip()
        stem, ext = os.path.splitext(base)
        if ext.lower() in _HINT_EXTS:
            base = stem
        if base and base not in out:
            out.append(base)
    return out


class ImageIndex:
    """Image files under one or more root folders, looked up by stem.

    Attributes:
        roots: absolute root folders, in the order given.
        files: every image found, sorted by path (also the image part of a cache fingerprint).

    A plain class, not a dataclass: this module is on the path of ``detect xml2pkl``'s re-run,
    and importing ``dataclasses`` (with ``inspect``) cost ~9 ms of it.
    """

    def __init__(self, roots: list[str]) -> None:
        """An empty index of ``roots``; :meth:`scan` fills one."""
        self.roots = roots
        self.files: list[FileStat] = []
        self._rel_dirs: list[str] = []
        self._by_stem: dict[str, list[int]] = {}
        self._by_lower: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"ImageIndex(roots={self.roots!r}, files=<{len(self.files)} images>)"

    @classmethod
    def scan(cls, roots: Sequence[str | Path], listed: Optional[dict[str, Listing]] = None) -> "ImageIndex":
        """Index every image under ``roots`` (missing roots are skipped). ``listed`` maps a
        root to its images already found by :func:`walk_files` (not walked again)."""
        index = cls([os.path.abspath(r) for r in roots])
        seen: set[str] = set()
        found = []
        for root in index.roots:
            files = listed[root] if listed and root in listed else walk_files(root, IMAGE_EXTS)[0]
            for st, rel in zip(files.stats(), files.rels):
                if st.path not in seen:
                    seen.add(st.path)
                    found.append((st, os.path.dirname(rel)))
        found.sort(key=lambda t: t[0].path)
        for st, rel_dir in found:
            index._add(st, rel_dir)
        return index

    def _add(self, st: FileStat, rel_dir: str) -> None:
        i = len(self.files)
        self.files.append(st)
        self._rel_dirs.append(rel_dir)
        stem = os.path.splitext(os.path.basename(st.path))[0]
        self._by_stem.setdefault(stem, []).append(i)
        self._by_lower.setdefault(stem.lower(), []).append(i)

    def find(self, xml_path: str, xml_rel_dir: str, filename: str = "", frame: str = "", path: str = "") -> Optional[FileStat]:
        """The image for an annotation, or None.

        Args:
            xml_path: absolute path of the XML file.
            xml_rel_dir: its folder relative to the annotation root ("fish" for
                ``annotations/fish/FISH0041.xml``), matched against image folders.
            filename, frame, path: the XML's ``<filename>``, ``<frame>``, ``<path>`` as written
                (see :func:`hint_stems`); only their file names are used, so nothing outside
                the roots is found (see :func:`path_hint_target` to explain a miss).
        """
        if not self.files:  # an annotation-only folder: nothing to split or look up per file
            return None
        xml_dir, base = os.path.split(xml_path)
        hits = self._by_stem.get(os.path.splitext(base)[0])  # the common case, checked first
        if hits:
            return self.files[self._best(hits, xml_dir, xml_rel_dir)]
        stems = hint_stems(os.path.splitext(base)[0], filename, frame, path)
        for table, key in ((self._by_stem, str), (self._by_lower, str.lower)):
            for stem in stems:
                hits = table.get(key(stem))
                if hits:
                    return self.files[self._best(hits, xml_dir, xml_rel_dir)]
        return None

    def _best(self, hits: list[int], xml_dir: str, xml_rel_dir: str) -> int:
        """Among images sharing a stem prefer the one beside the XML, then the one in the
        same relative folder (per-class layout), then the first by path (deterministic)."""
        if len(hits) == 1:
            return hits[0]
        for i in hits:
            if os.path.dirname(self.files[i].path) == xml_dir:
                return i
        for i in hits:
            if self._rel_dirs[i] == xml_rel_dir:
                return i
        return hits[0]


def path_hint_target(xml_path: str, path: str) -> str:
    """The file an XML's ``<path>`` names on this machine (relative values from the XML's
    folder), when something exists there, else "". Only looked up (never opened) to tell the
    user why such a file was not used; a Windows path cannot exist on POSIX and is skipped."""
    if not path or (os.sep == "/" and "\\" in path):
        return ""
    p = os.path.abspath(path if os.path.isabs(path) else os.path.join(os.path.dirname(xml_path), path))
    try:
        return p if os.path.lexists(p) else ""
    except ValueError:  # an embedded NUL
        return ""


def default_image_roots(ann_dir: str | Path) -> list[str]:
    """Where to look for images when no ``--images`` folder is given: beside the XML files,
    and the sibling folder of the usual layouts (``Annotations`` -> ``JPEGImages``,
    ``annotations`` -> ``images``) when it exists."""
    ann_dir = Path(ann_dir).resolve()
    roots = [str(ann_dir)]
    for sibling in ("JPEGImages", "images", "Images"):
        cand = ann_dir.parent / sibling
        if cand.is_dir() and cand != ann_dir:
            roots.append(str(cand))
    return roots


def read_image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` of an image, read from its header only (PIL opens lazily: a few
    hundred bytes, about 50x cheaper than decoding). Sizes are as stored, before any EXIF
    rotation, the convention of VOC labelling tools. Raises OSError (or a PIL error) for a
    file that is not a readable image."""
    from PIL import Image

    with os.fdopen(open_regular(path), "rb") as f, Image.open(f) as im:  # a FIFO blocked PIL's open() forever
        w, h = im.size
    return int(w), int(h)


# Pillow's default MAX_IMAGE_PIXELS (about 89.5 megapixels, 8K x 8K and some): `detect predict`
# refuses larger images unless told otherwise (a 1.2 MB PNG of 20000 x 20000 decoded to 3.55 GB).
MAX_PIXELS = 89_478_485


def header_pixels(path: str) -> Optional[tuple[int, str]]:
    """``(pixels, "WxH")`` of an image from its header, before anything is decoded; None when
    Pillow cannot parse the header (a format it does not know, such as EXR, or a broken file:
    the decoder judges those). Above twice its own limit Pillow refuses even the header and
    gives only the pixel count (then ``(pixels, "")``). Raises OSError when the
    file cannot be opened, and :class:`~detect.utils.NotRegularFileError` for a FIFO or device."""
    with os.fdopen(open_regular(path), "rb") as f:
        return header_pixels_of(f)


def header_pixels_of(f: BinaryIO) -> Optional[tuple[int, str]]:
    """:func:`header_pixels` of an open binary file (``io.BytesIO(upload)``: an image received
    by ``detect serve``), read from its current position."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own limit
            with Image.open(f) as im:
                w, h = im.size
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or MAX_PIXELS) + 1
        return pixels, ""
    except Exception:  # Pillow raises many kinds for headers it cannot parse; OpenCV may still decode them
        return None
    return int(w) * int(h), f"{w}x{h}"


def decode_image(data: np.ndarray) -> tuple[Optional[np.ndarray], str]:
    """``cv2.imdecode(data, IMREAD_UNCHANGED)`` (None when it fails) and what the decoder
    printed meanwhile, on one line ("" when nothing): libjpeg's "Corrupt JPEG data: ..." and
    "libpng error: ..." name no file, so the caller must."""
    import cv2

    with stderr_fd_captured() as said:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return img, "; ".join(line.strip() for text in said for line in text.splitlines() if line.strip())


def verify_image(path: str, size: tuple[int, int]) -> tuple[str, str]:
    """Decode a whole image (``--verify-images``), as training will. Returns ``("", "")`` when
    it decodes silently to ``size`` (w, h); else a problem ``(kind, what)``: ``corrupt_image``
    when it fails, differs in size or the decoder complains, ``image_warning`` when the only
    complaint is a libpng warning (an odd colour profile: the pixels are fine)."""
    import numpy as np

    try:
        with os.fdopen(open_regular(path), "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
    except OSError as e:
        return "corrupt_image", f"cannot be read ({e.strerror or e})"
    img, said = decode_image(data)
    if img is None:
        return "corrupt_image", "cannot be decoded" + (f" (the decoder says: {said})" if said else "")
    if (img.shape[1], img.shape[0]) != tuple(size):
        return "corrupt_image", f"decodes to {img.shape[1]}x{img.shape[0]} pixels but its header says {size[0]}x{size[1]}"
    if said and all(line.strip().startswith("libpng warning") for line in said.split("; ")):
        return "image_warning", f"decodes with a warning (the decoder says: {said})"
    if said:
        return "corrupt_image", f"decodes with errors (the decoder says: {said})"
    return "", ""
