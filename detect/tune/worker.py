"""One ``detect tune`` worker: take trials from the shared Optuna study and train them.

Several workers (processes, possibly on several machines) share one study through its storage.
Each worker loops: under a file lock in OUT, count the trials started so far and ``ask`` a new
one while fewer than ``n_trials``; sample its parameters, train it into ``OUT/trials/<number>``
while reporting the validation metric each epoch to the pruner, and ``tell`` the result.
A worker stopped by Ctrl-C or SIGTERM marks its running trial FAIL and queues the same
parameters again, so a restarted study runs them without repeating finished ones.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import optuna
from optuna.trial import TrialState

from detect.config import ExperimentConfig
from detect.tune.report import rounded
from detect.tune.space import SearchSpace

STARTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MAX_SAME_FAILURES = 3  # a worker stops when this many trials in a row fail with one error (bad data...)


@dataclass
class WorkerJob:
    """Everything a worker process needs (plain dataclasses, so it pickles for ``spawn``)."""

    storage: str
    study: str
    space: SearchSpace
    base: dict  # ExperimentConfig.to_dict() of the base config
    data: str
    epochs: int
    out: str
    sampler: str
    n_trials: int
    seed: int
    grid_seed: int = 0
    index: int = 0
    device: str = "auto"  # the device each trial's config gets
    cuda_visible: Optional[str] = None  # CUDA_VISIBLE_DEVICES for this worker's process
    threads: int = 0  # torch threads; 0 = leave as is
    trainer: str = "detect.engine.train:train"
    parent_pid: Optional[int] = None  # stop when this process is gone


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: ``sqlite:///path``, ``postgresql://...`` (any SQLAlchemy
    URL), or a journal file (``journal:PATH`` or a path ending in .journal/.log). SQLite waits
    up to 2 minutes for a lock held by another worker; RDB storages keep a heartbeat so trials of
    a crashed machine are failed (and queued again) after 10 minutes of silence."""
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal:"):] if url.startswith("journal:") else url
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise ValueError(f"storage {url!r}: use an SQLAlchemy URL (sqlite:///f.db, postgresql://...) or journal:PATH")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=600, heartbeat_stale_trial_callback=requeue
        )


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a WAITING copy of an interrupted trial, marked ``retry_of``: its parameters, and with
    the grid sampler its grid point (the ``grid_id``/``search_space`` system attrs, as Optuna's
    ``RetryFailedTrialCallback`` does). A trial stopped after ``ask`` gave it a grid point but before
    it sampled its parameters has empty ``params``: queued with those alone, the copy would get no
    grid point (GridSampler fails it), while the interrupted trial still marks its point visited,
    so that point would never be trained."""
    system_attrs: dict[str, Any] = {"fixed_params": dict(trial.params)}
    system_attrs.update({k: trial.system_attrs[k] for k in ("grid_id", "search_space") if k in trial.system_attrs})
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=system_attrs,
                                              user_attrs={"retry_of": trial.number}))


def interrupt_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """Mark a RUNNING trial FAIL (``interrupted``) and queue it again (:func:`requeue`)."""
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "interrupted", why)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    requeue(study, trial)


def counted_trials(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that use up the budget: started ones, minus interrupted ones queued again."""
    replaced = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return [t for t in trials if t.state in STARTED and t.number not in replaced]


def remaining(study: optuna.Study, n_trials: int) -> int:
    """Trials still to start: the budget left, or at least the queued (WAITING) ones, which
    replace interrupted trials already counted."""
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return max(n_trials - len(counted_trials(trials)), waiting)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _GridSampler(optuna.samplers.GridSampler):
    """``GridSampler`` without its ``study.stop()`` once the grid is covered (which raises
    outside ``optimize``); :func:`worker_loop` stops at the trial count itself."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState, values: Any) -> None:
        pass


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then act on the first one that came (main
    thread; elsewhere a no-op). The Python handlers are swapped for ones that only record:
    masking with ``pthread_sigmask`` does not hold a signal the C-level handler already noted
    (Python runs it at its next check, inside the block), nor one the kernel hands to another
    thread. A worker whose parent is killed gets SIGTERM twice, milliseconds apart (once as the
    parent dies, once as it is reparented): the second must not cut short its re-queuing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got:
            handler = old[got[0]]
            if callable(handler):
                handler(got[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(got[0])


def make_sampler(name: str, space: SearchSpace, seed: int, grid_seed: int = 0) -> optuna.samplers.BaseSampler:
    """Random/TPE get a per-worker ``seed``; the grid sampler numbers its shuffled grid with
    ``grid_seed``, which must be the same in every worker and every restart of a study."""
    if name == "grid":
        return _GridSampler(space.grid_space(), seed=grid_seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # multivariate and constant_liar are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    spec = space.pruner
    if spec.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.min_epochs)
    if spec.type == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, spec.min_epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


def find_metric(metrics: dict, name: str) -> Optional[float]:
    """``metrics[name]`` or a prefixed form (``val/voc_ap50``, ``val_voc_ap50``); None if absent
    or not a finite number. Keys starting with ``best`` are ignored (they are not per-epoch)."""
    keys = [name] + [k for k in metrics if k.endswith(("/" + name, "_" + name, "." + name)) and not k.startswith("best")]
    for k in keys:
        v = metrics.get(k)
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            return v
    return None


class EpochReporter:
    """The trainer's ``on_epoch_end(epoch, metrics) -> stop`` hook: reports the metric to the
    pruner at step = epochs completed, keeps the best value, and asks to stop a pruned trial."""

    def __init__(self, trial: optuna.Trial, metric: str, maximize: bool, parent_pid: Optional[int] = None):
        self.trial, self.metric, self.maximize, self.parent_pid = trial, metric, maximize, parent_pid
        self.epochs = 0
        self.best: Optional[float] = None
        self.best_epoch = 0
        self.pruned = False

    def __call__(self, epoch: int, metrics: dict) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            raise KeyboardInterrupt("detect tune (the parent process) is gone")
        self.epochs += 1
        value = find_metric(metrics or {}, self.metric)
        if value is None:
            return False
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best, self.best_epoch = value, self.epochs
        self.trial.report(value, self.epochs)
        self.pruned = self.trial.should_prune()
        return self.pruned


def load_trainer(spec: str) -> Callable[..., dict]:
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def trial_config(job: WorkerJob, space: SearchSpace, params: dict, run_dir: Optional[Path]) -> ExperimentConfig:
    """The config one trial trains: base config + sampled parameters + the tuning budget."""
    cfg = space.apply(ExperimentConfig.from_dict(job.base), params)
    cfg.data.data = job.data
    cfg.train.epochs = job.epochs
    cfg.train.device = job.device
    cfg.train.resume = False
    if run_dir is not None:
        cfg.train.out = str(run_dir)
    return cfg


def run_trial(study: optuna.Study, trial: optuna.Trial, job: WorkerJob, space: SearchSpace, train_fn: Callable) -> TrialState:
    """Sample, train and tell one trial; returns its final state. Exceptions from training make the
    trial FAIL (message in its ``error`` attribute, traceback in its run folder); KeyboardInterrupt
    (Ctrl-C, SIGTERM) propagates to :func:`worker_loop`, which queues the trial again. Either
    way the trial folder keeps only ``best.pt`` of its checkpoints."""
    run_dir = Path(job.out) / "trials" / str(trial.number)
    try:
        return _train_and_tell(study, trial, job, space, train_fn, run_dir)
    finally:
        keep_only_best(run_dir)


def keep_only_best(run_dir: Path) -> list[Path]:
    """Delete a finished trial's checkpoints but ``best.pt`` (``last.pt`` with its optimizer
    state was 61 MB a trial; a trial is never resumed, an interrupted one reruns from scratch).
    Returns what was deleted."""
    gone = []
    for f in run_dir.glob("*.pt") if run_dir.is_dir() else ():
        if f.name != "best.pt":
            f.unlink(missing_ok=True)
            gone.append(f)
    return gone


def _train_and_tell(study: optuna.Study, trial: optuna.Trial, job: WorkerJob, space: SearchSpace, train_fn: Callable,
                    run_dir: Path) -> TrialState:
    reporter = EpochReporter(trial, space.metric, space.direction == "maximize", job.parent_pid)
    t0 = time.time()
    try:
        params = {p.name: p.suggest(trial) for p in space.params}
        cfg = trial_config(job, space, params, run_dir)
        trial.set_user_attr("run_dir", str(run_dir.relative_to(job.out)))  # relative to OUT: portable
        print(f"[worker {job.index}] trial {trial.number} start {json.dumps(rounded(params))}", flush=True)
        kwargs: dict[str, Any] = {"on_epoch_end": reporter}
        if "progress" in inspect.signature(train_fn).parameters:
            kwargs["progress"] = False  # several workers' bars would interleave
        result = train_fn(cfg, **kwargs) or {}
    except Exception as e:  # a trial's own failure (bad setting, OOM, diverged): record, go on
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
        trial.set_user_attr("seconds", round(time.time() - t0, 2))
        trial.set_user_attr("epochs_run", reporter.epochs)
        study.tell(trial, state=TrialState.FAIL)
        print(f"[worker {job.index}] trial {trial.number} FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return TrialState.FAIL
    best = reporter.best
    if best is None:  # trainer gave no per-epoch metric: fall back to its final metrics
        best = find_metric(result, "best_" + space.metric)
        if best is None and space.metric == "voc_ap50":
            best = find_metric(result, "best_map")  # detect.engine.train's name for it
    trial.set_user_attr("seconds", round(time.time() - t0, 2))
    trial.set_user_attr("epochs_run", reporter.epochs)
    trial.set_user_attr("best_epoch", reporter.best_epoch)
    if best is not None:
        trial.set_user_attr("best_metric", best)
    if reporter.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        state = TrialState.PRUNED
    elif best is None:
        trial.set_user_attr("error", f"the trainer reported no {space.metric!r} metric")
        study.tell(trial, state=TrialState.FAIL)
        state = TrialState.FAIL
    else:
        study.tell(trial, best)
        state = TrialState.COMPLETE
    print(f"[worker {job.index}] trial {trial.number} {state.name} {space.metric}={rounded(best)} "
          f"epochs={reporter.epochs} {time.time() - t0:.1f}s", flush=True)
    return state


def _heartbeat(study: optuna.Study, trial_id: int) -> Callable[[], None]:
    """Start recording heartbeats for a trial (RDB storages with heartbeats); returns a stopper."""
    import threading

    storage = study._storage
    if not (hasattr(storage, "is_heartbeat_enabled") and storage.is_heartbeat_enabled()):
        return lambda: None
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(storage.get_heartbeat_interval() or 60)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    return lambda: (stop.set(), thread.join(5))


def worker_loop(job: WorkerJob) -> None:
    """Take and run trials until the study has ``job.n_trials`` counted trials."""
    space = job.space
    storage = open_storage(job.storage)
    study = optuna.load_study(study_name=job.study, storage=storage,
                              sampler=make_sampler(job.sampler, space, job.seed, job.grid_seed), pruner=make_pruner(space))
    train_fn = load_trainer(job.trainer)
    lock = Path(job.out) / ".tune.lock"
    errors: list[Optional[str]] = []  # errors of this worker's consecutive failed trials
    while True:
        trial = None
        try:
            # signals wait until the new trial names its owner, so a restart can always recover it
            with file_lock(lock), signals_deferred():
                if remaining(study, job.n_trials) <= 0:
                    return
                with warnings.catch_warnings():  # heartbeats are recorded by _heartbeat below
                    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                    trial = study.ask()
                trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "index": job.index})
            stop_beat = _heartbeat(study, trial._trial_id)
            try:
                state = run_trial(study, trial, job, space, train_fn)
            finally:
                stop_beat()
        except KeyboardInterrupt:
            if trial is not None:
                with signals_deferred():  # a second Ctrl-C must not leave the trial half re-queued
                    frozen = study._storage.get_trial(trial._trial_id)
                    if frozen.state == TrialState.RUNNING:
                        interrupt_trial(study, frozen, "interrupted (Ctrl-C or SIGTERM)")
            raise
        errors = errors + [study._storage.get_trial(trial._trial_id).user_attrs.get("error")] if state == TrialState.FAIL else []
        if len(errors) >= MAX_SAME_FAILURES and len(set(errors[-MAX_SAME_FAILURES:])) == 1:
            raise RuntimeError(f"worker {job.index}: the last {MAX_SAME_FAILURES} trials failed with the same error, "
                               f"stopping rather than failing every trial: {errors[-1]}")


def worker_main(job: WorkerJob) -> None:
    """Entry point of a spawned worker process: pin the GPU and threads, turn SIGTERM (and the
    parent's death, on Linux) into KeyboardInterrupt, then run :func:`worker_loop`."""
    from detect.engine.cpu_alloc import keep_heap_for_training

    keep_heap_for_training()  # as `detect train` does, before torch allocates anything
    if job.cuda_visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = job.cuda_visible
    _die_with_parent()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if job.parent_pid is not None and os.getppid() != job.parent_pid:
        return  # the parent died before this worker started
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    try:
        worker_loop(job)
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:  # gave up after repeated identical failures
        print(f"detect tune: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _die_with_parent() -> None:
    """Linux: ask the kernel to send SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass
