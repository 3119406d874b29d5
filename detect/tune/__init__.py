"""The hyperparameter search (``detect tune``): :mod:`.space` (search-space files), :mod:`.search`
(the study and its workers' plan), :mod:`.worker` (one worker process running trials) and
:mod:`.report` (ranked table, plots, ``best.yaml``). Optuna is imported by those modules only."""

# Settings `detect tune` takes as options, spelled as `detect train` spells them (from the option
# table in detect/config.py); they change the base config of every trial.
TRAIN_OPTIONS = ("preprocess.imgsz", "train.batch", "data.workers")
