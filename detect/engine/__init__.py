"""Training, evaluation, checkpoints and selective-search proposal caches: :mod:`.train` (the
driver, with :mod:`.loop`, :mod:`.loader`, :mod:`.optim`, :mod:`.ema`, :mod:`.distributed`,
:mod:`.runlog`, :mod:`.cpu_alloc`), :mod:`.evaluate` + :mod:`.metrics`, :mod:`.checkpoint`
and :mod:`.proposals` (``detect proposals``)."""
