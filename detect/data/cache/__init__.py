"""The annotation cache: one versioned pickle per split (:mod:`.cache_file`: the format,
:func:`~.cache_file.load_cache`; :mod:`.header`: its header level, standard library only), built
incrementally from any format (:mod:`.build`: the stages every format shares; :mod:`.xml2pkl`:
VOC, with :mod:`.parse_pool`; :mod:`.importers`: YOLO, COCO and per-image formats) in
:mod:`.columns` form, read back only through :mod:`.safe_pickle`."""
