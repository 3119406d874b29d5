"""``detect xml2pkl``: its options and handler (the build: :func:`detect.data.cache.xml2pkl.build_cache`).

Standard library only at the top: ``detect xml2pkl`` on an up-to-date cache costs about its
stat calls (bench/xml2pkl.py times the whole process)."""

from __future__ import annotations

import argparse

from detect.checks import COUNT, NONNEG


def add_xml2pkl_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect xml2pkl``."""
    p.add_argument("ann_dir", help="folder searched recursively for *.xml")
    p.add_argument("--images", help="image folder (VOC JPEGImages/, per-class images/<class>/, or beside the XML); "
                   "given, records whose image is missing are reported and left out; omitted, images are looked up "
                   "beside the XML and in a sibling JPEGImages/ or images/ folder, and records are kept without one")
    p.add_argument("--classes", help="class file, one name a line; unknown names become problems")
    p.add_argument("--split", help="file of image ids (stem or <class>/<stem>) to keep")
    p.add_argument("-o", "--output", required=True, help="cache file to write (.pkl)")
    p.add_argument("--workers", type=NONNEG, default=0, help="parallel parsers, this process included (0: one per core)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any problem was found")
    p.add_argument("--max-xml-bytes", type=COUNT, help="larger annotation files are reported, not read (default: 16 MiB)")
    p.add_argument("--verify-images", action="store_true", help="decode every image fully (in parallel), not only its "
                   "header: truncated or corrupt ones are reported and left out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_xml2pkl(args: argparse.Namespace) -> int:
    """``detect xml2pkl ANN_DIR [--images DIR] [--classes FILE] [--split FILE] -o CACHE``.
    Exit 0: written (problems are reported, not fatal); 1: ``--strict`` and problems found;
    2: usage error (missing folder or file, unwritable output)."""
    from detect.data.cache.build import summarize
    from detect.data.cache.xml2pkl import build_cache
    from detect.data.limits import MAX_XML_BYTES

    max_xml_bytes = getattr(args, "max_xml_bytes", None)
    result = build_cache(
        args.ann_dir, args.output, images=args.images, classes=args.classes, split=args.split,
        workers=args.workers, progress=not getattr(args, "no_progress", False),
        max_xml_bytes=MAX_XML_BYTES if max_xml_bytes is None else max_xml_bytes,
        verify_images=getattr(args, "verify_images", False),
    )
    summarize(result)
    return 1 if args.strict and result.summary["problems"] else 0
