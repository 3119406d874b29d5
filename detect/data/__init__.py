"""Data layer: VOC XML, YOLO labels, COCO JSON -> cache (:mod:`.voc`, :mod:`.yolo`, :mod:`.coco`,
:mod:`.xml2pkl`, :mod:`.import_cache`, :mod:`.cache`; :mod:`.spec` for ``--data``) -> dataset.

``load_cache(path) -> Cache(classes, records, problems)`` is the entry point for everything
downstream; build caches with ``detect xml2pkl`` or :func:`build_cache`.
"""

import importlib

__all__ = ["Cache", "CacheError", "build_cache", "load_cache"]
_HOME = {"Cache": "detect.data.cache", "CacheError": "detect.data.cache", "load_cache": "detect.data.cache",
         "build_cache": "detect.data.xml2pkl"}


def __getattr__(name: str):
    """The names above, imported on first use: importing any ``detect.data`` module runs this
    file, and ``detect xml2pkl``'s up-to-date check must not pay for numpy (PEP 562)."""
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
