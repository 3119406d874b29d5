"""The one usage error.

:class:`UsageError` is input the user must fix (a missing file, a bad option or setting, data
or weights that cannot be used), raised wherever it is found. ``detect.cli.main`` is the only
place that turns it into output: ``detect <command>: error: <message>`` on stderr and exit
code 2, the format argparse uses for its own errors. Subclasses say where the problem was found
(``CheckpointError``, ``DatasetError``, ``SpaceError``, ...) so callers can catch one kind.

It is a ``ValueError``: Python callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Input the user must fix; the message says what and how (``detect`` exits 2 with it)."""
