"""Data layer: VOC XML, YOLO labels, COCO JSON -> cache -> dataset, in rooms:

- :mod:`.formats`: each format's reader and writer (:mod:`.formats.voc`, :mod:`.formats.yolo`,
  :mod:`.formats.coco`), the per-file result they share (:mod:`.formats.result`), and the table
  of formats (:mod:`.formats.table`): how a ``--data`` path is recognised, opened, written;
- :mod:`.cache`: annotations -> the versioned pickle cache (build, columns, header, the safe
  unpickler, the parse pool, the YOLO/COCO importers) and ``detect xml2pkl``;
- :mod:`.convert`: ``detect convert``;
- :mod:`.spec`: ``--data`` -> a cache; :mod:`.dataset`, :mod:`.transforms` ...: cache -> tensors.

``load_cache(path) -> Cache(classes, records, problems)`` is the entry point for everything
downstream; build caches with ``detect xml2pkl`` or :func:`build_cache`.
"""

import importlib

__all__ = ["Cache", "CacheError", "build_cache", "load_cache"]
_HOME = {"Cache": "detect.data.cache.cache_file", "CacheError": "detect.data.cache.cache_file", "load_cache": "detect.data.cache.cache_file",
         "build_cache": "detect.data.cache.xml2pkl"}


def __getattr__(name: str):
    """The names above, imported on first use: importing any ``detect.data`` module runs this
    file, and ``detect xml2pkl``'s up-to-date check must not pay for numpy (PEP 562)."""
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
