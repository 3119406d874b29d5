"""``detect tune``: hyperparameter search with Optuna (grid, random or TPE), pruning, parallel
workers, and a study that survives interruption.

The study lives in a storage shared by every worker: ``OUT/study.db`` (SQLite) by default, or
``--storage`` (``postgresql://...``, ``journal:PATH``) so processes on several machines join one
study (same space file = same study name). ``--trials N`` is the study's total: running the
command again after a kill, or with a larger N, continues the study and never reruns finished
trials; trials left RUNNING by a killed worker on this machine are marked FAIL and their
parameters queued again. Workers on one machine are separate processes, each pinned to one GPU
(round robin) or to an equal share of the CPU cores. Each trial trains into ``OUT/trials/<n>``;
the end writes the ranked table, plots and ``best.yaml`` (see :mod:`detect.tune.report`).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna

from detect.config import ExperimentConfig
from detect.errors import UsageError
from detect.tune.space import SearchSpace, load_space
from detect.utils import cpu_count
from detect.tune.worker import (
    WorkerJob,
    _raise_interrupt,
    counted_trials,
    interrupt_trial,
    open_storage,
    remaining,
    requeue,
    worker_main,
)

DEFAULT_TRIALS = 20  # random/TPE when --trials is not given (grid: the grid size)
_MACHINE_LOCAL = {("train", "device"), ("train", "out"), ("train", "resume"), ("data", "workers"), ("data", "data")}


def run_tune(
    data: str,
    space: str | Path,
    out: str | Path,
    trials: Optional[int] = None,
    workers: int = 1,
    epochs: int = 5,
    sampler: Optional[str] = None,
    storage: Optional[str] = None,
    config: Optional[str | ExperimentConfig] = None,
    device: str = "auto",
    trainer: str = "detect.engine.train:train",
) -> int:
    """Run (or continue) a study until it holds ``trials`` started trials, then write the report.
    Returns 0 when every trial completed or was pruned, 1 when some failed or none completed,
    130 when interrupted. Raises :class:`~detect.errors.UsageError` (:class:`SpaceError` for the
    space file) on usage errors."""
    from detect.tune.report import print_summary, write_report

    sp = load_space(space)
    if workers < 1 or epochs < 1 or (trials is not None and trials < 1):
        raise UsageError("--workers, --epochs and --trials must be >= 1")
    if not Path(data).exists() and "://" not in data:
        raise UsageError(f"--data {data}: not found")
    sampler = sampler or sp.sampler or ("grid" if sp.griddable else "tpe")
    if sampler == "grid":
        sp.grid_space()  # raises SpaceError naming a range without num
        n_trials = min(trials or sp.grid_size(), sp.grid_size())
        if trials and trials > n_trials:
            print(f"detect tune: the grid has {n_trials} points; running {n_trials} trials, not {trials}")
    else:
        n_trials = trials or DEFAULT_TRIALS
    base = base_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage_url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        study = optuna.create_study(storage=open_storage(storage_url), study_name=sp.study,
                                    direction=sp.direction, load_if_exists=True)
    except ValueError as e:
        raise UsageError(f"--storage {storage_url}: {e}") from None
    _check_same_study(study, sp, base, epochs, storage_url)
    study.set_user_attr("data", str(data))
    requeued = recover_orphans(study)
    if requeued:
        print(f"detect tune: queued again {len(requeued)} trial(s) left running by a stopped worker: {requeued}")
    done = len(counted_trials(study.get_trials(deepcopy=False)))
    print(f"detect tune: study {sp.study!r} in {storage_url}: {done}/{n_trials} trials started, "
          f"sampler={sampler}, workers={workers}, epochs={epochs}", flush=True)

    seed0 = base.train.seed + len(study.trials)  # a restart samples new points, reproducibly
    plans = plan_workers(device, workers)
    jobs = [
        WorkerJob(storage=storage_url, study=sp.study, space=sp, base=base.to_dict(),
                  data=str(data), epochs=epochs, out=str(out), sampler=sampler, n_trials=n_trials,
                  seed=seed0 + 7919 * i, grid_seed=base.train.seed, index=i, device=dev, cuda_visible=vis, threads=thr, trainer=trainer)
        for i, (dev, vis, thr) in enumerate(plans)
    ]
    status, rounds = "ok", 0
    while status == "ok" and rounds < 3 and remaining(study, n_trials) > 0:
        # another round only when a worker that stopped late (after our workers ended) queued
        # its interrupted trial again
        status, rounds = _run_jobs(jobs), rounds + 1

    study = optuna.load_study(study_name=sp.study, storage=open_storage(storage_url))
    report = write_report(study, sp, out)
    print_summary(report, out)
    if status == "interrupted":
        print("detect tune: interrupted; run the same command again to continue the study", file=sys.stderr)
        return 130
    states = [t.state for t in counted_trials(study.get_trials(deepcopy=False))]
    failed = sum(s == optuna.trial.TrialState.FAIL for s in states)
    if failed:
        print(f"detect tune: {failed} trial(s) failed; see the error column of {out / 'trials.md'}", file=sys.stderr)
    return 1 if status == "error" or failed or optuna.trial.TrialState.COMPLETE not in states else 0


def base_config(config: Optional[str | ExperimentConfig]) -> ExperimentConfig:
    """The base train config: the defaults, a YAML file, or a config given as it is."""
    if isinstance(config, ExperimentConfig):
        return config
    return ExperimentConfig() if config is None else ExperimentConfig.load_yaml(config)


def _check_same_study(study: optuna.Study, sp: SearchSpace, base: ExperimentConfig, epochs: int, url: str) -> None:
    """A study keeps its space, base config and epochs: mixing them would rank unlike trials."""
    cfg = base.to_dict()
    for section, key in _MACHINE_LOCAL:
        cfg[section].pop(key, None)
    sig = json.loads(json.dumps({"space": sp.signature(), "base": cfg, "epochs": epochs}))
    old = study.user_attrs.get("tune")
    if old is None:
        study.set_user_attr("tune", sig)
        study.set_user_attr("base", base.to_dict())
        return
    a, b = _flatten(old), _flatten(sig)
    # settings added to the config since the study began (absent from one side) are not a change
    changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    changed += sorted(k for k in a.keys() ^ b.keys() if not k.startswith("base."))
    if changed:
        what = sorted({k.split(".")[0] for k in changed})
        raise UsageError(
            f"study {sp.study!r} in {url} was started with a different {' and '.join(what)} "
            f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}); continue it with the same "
            f"--space/--config/--epochs, or use a new --out (or another 'study:' name in {sp.path})"
        )


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(study: optuna.Study) -> list[int]:
    """Trials RUNNING in a worker of this machine that no longer exists (the command was killed)
    become FAIL and their parameters are queued again; on RDB storages, trials of other machines
    whose heartbeat stopped are handled the same way. Returns the numbers queued again."""
    host = socket.gethostname()

    def orphaned(t: optuna.trial.FrozenTrial) -> bool:  # its worker ran on this machine and is gone
        owner = t.user_attrs.get("worker") or {}
        return owner.get("host") == host and not _pid_alive(int(owner.get("pid", 0)) or -1)

    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if orphaned(t):
            interrupt_trial(study, t, f"worker pid {t.user_attrs['worker'].get('pid')} on {host} was gone")
            out.append(t.number)
    # A worker killed between marking its interrupted trial FAIL and queuing it again would leave
    # that point out for good: queue it now.
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL and "interrupted" in t.user_attrs and t.number not in retried and orphaned(t):
            requeue(study, t)
            out.append(t.number)
    storage = study._storage
    if hasattr(storage, "is_heartbeat_enabled") and storage.is_heartbeat_enabled():
        before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # calls requeue for each
        out += sorted({t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))} - before)
    return out


def plan_workers(device: str, workers: int) -> list[tuple[str, Optional[str], int]]:
    """(device for the trial config, CUDA_VISIBLE_DEVICES or None, torch threads) per worker.

    GPUs (``auto`` with CUDA, ``cuda``, ``cuda:1`` or ``cuda:0,1``): worker i sees only GPU
    ``gpus[i % len(gpus)]`` and trains on ``cuda``; several workers share a GPU only when there
    are more workers than GPUs. CPU: each worker gets ``cores // workers`` threads."""
    cores = cpu_count()
    threads = max(1, cores // workers)
    gpus = _gpu_ids(device)
    if not gpus:
        return [("cpu" if device in ("auto", "", None) else device, None, threads if workers > 1 else 0)] * workers
    if workers == 1:
        return [(device if device.startswith("cuda:") and "," not in device else f"cuda:{gpus[0]}", None, 0)]
    if workers > len(gpus):
        print(f"detect tune: {workers} workers share {len(gpus)} GPU(s)", file=sys.stderr)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",")] if visible else [str(g) for g in range(max(gpus) + 1)]
    return [("cuda", names[gpus[i % len(gpus)]], threads) for i in range(workers)]


def _gpu_ids(device: str) -> list[int]:
    if device == "cpu":
        return []
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device in ("auto", "", None):
        return list(range(n))
    spec = device[len("cuda"):].lstrip(":") if device.startswith("cuda") else device
    if n == 0:
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if not spec:
        return list(range(n))
    try:
        ids = [int(s) for s in spec.split(",")]
    except ValueError:
        raise UsageError(f"--device {device}: use auto, cpu, cuda, cuda:I or cuda:I,J") from None
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise UsageError(f"--device {device}: GPU(s) {bad} do not exist ({n} visible)")
    return ids


def _run_jobs(jobs: list[WorkerJob]) -> str:
    """Run the workers (in this process when there is one): "ok", "interrupted" or "error"."""
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if len(jobs) == 1 and jobs[0].cuda_visible is None:
            from detect.tune.worker import worker_loop

            job = jobs[0]
            if job.threads:
                import torch

                torch.set_num_threads(job.threads)
            try:
                worker_loop(job)
            except KeyboardInterrupt:
                return "interrupted"
            except RuntimeError as e:  # the worker gave up (repeated identical failures)
                print(f"detect tune: {e}", file=sys.stderr)
                return "error"
            return "ok"
        ctx = mp.get_context("spawn")  # fresh interpreters: safe with CUDA, own CUDA_VISIBLE_DEVICES
        procs = []
        for job in jobs:
            job.parent_pid = os.getpid()
            procs.append(ctx.Process(target=worker_main, args=(job,), name=f"tune-worker-{job.index}"))
            procs[-1].start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            for p in procs:  # Ctrl-C reached them too; SIGTERM covers `kill`
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(30)
            return "interrupted"
        if any(p.exitcode == 130 for p in procs):
            return "interrupted"
        bad = [p.name for p in procs if p.exitcode != 0]
        if bad:
            print(f"detect tune: worker(s) {bad} stopped with an error; see the log above", file=sys.stderr)
            return "error"
        return "ok"
    finally:
        signal.signal(signal.SIGTERM, old)
