"""The hyperparameter search (``detect tune``): :mod:`.space` (search-space files), :mod:`.search`
(the study and its workers' plan), :mod:`.worker` (one worker process running trials) and
:mod:`.report` (ranked table, plots, ``best.yaml``). Optuna is imported by those modules only."""
