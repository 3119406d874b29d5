"""Data layer: VOC XML, YOLO labels, COCO JSON -> cache (:mod:`.voc`, :mod:`.yolo`, :mod:`.coco`,
:mod:`.xml2pkl`, :mod:`.import_cache`, :mod:`.cache`; :mod:`.spec` for ``--data``) -> dataset.

``load_cache(path) -> Cache(classes, records, problems)`` is the entry point for everything
downstream; build caches with ``detect xml2pkl`` or :func:`build_cache`.
"""

from detect.data.cache import Cache, CacheError, load_cache
from detect.data.xml2pkl import build_cache

__all__ = ["Cache", "CacheError", "build_cache", "load_cache"]
