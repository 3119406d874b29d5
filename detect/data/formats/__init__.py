"""Annotation formats: each format's reader (annotation files -> per-image :class:`~.result.FileResult`)
and writer (records -> files, for ``detect convert``), and :mod:`.table`, the one table of
formats (how a ``--data`` path of each is recognised, opened as a source of caches, and written).
A new format is one module here plus one row of :data:`.table.FORMATS`."""
