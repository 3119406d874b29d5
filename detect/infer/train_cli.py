"""``detect train`` with ``detect val``'s evaluation: a val split holding photos larger than the
model needs (store shelves) is scored every epoch, and in the run's final report, through
:class:`~detect.infer.predict.Predictor`'s sliced inference at the product size the run learned
(``preprocess.object_size``), so ``best.pt`` is the epoch that scores best the way a user's
``detect val`` and ``detect predict`` read those photos. Splits the model reads whole, and
``--slice off``, go through the batched loader as before.

Engine never imports infer (docs/ARCHITECTURE.md): this command lives here and hands
:func:`~detect.engine.train_cli.cmd_train` the collector of :mod:`detect.infer.val_cli`.
"""

from __future__ import annotations

import argparse

from detect.engine.train_cli import add_train_options as _engine_train_options
from detect.engine.train_cli import cmd_train as _engine_cmd_train
from detect.infer.common_cli import add_slicing_options
from detect.infer.val_cli import sliced_collector


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The options of ``detect train``: the config's, then ``detect val``'s slicing options for the val split."""
    _engine_train_options(p)
    add_slicing_options(p.add_argument_group(
        "validation of large photos", "val photos larger than the model needs are sliced as detect val does "
        "(every epoch and best.pt's report; not stored in the run: give them again with --resume)"))


def cmd_train(args: argparse.Namespace) -> int:
    """``detect train`` (see :func:`detect.engine.train_cli.cmd_train`), large val photos sliced."""
    return _engine_cmd_train(args, collect_fn=sliced_collector(args, live=True))
