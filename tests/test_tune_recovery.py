"""``detect tune`` after an interruption: a finished study resumes without training anything
twice, trials orphaned by a kill (RUNNING, never sampled, or failed before being queued again)
are trained again, SIGTERM is deferred around the study's writes, and a SIGKILLed command
finishes its grid when run again. The trainer is test_tune.py's ``fake_train``."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")  # the `tune` extra (in `dev`): a machine without it skips these
from test_tune import FAKE, GRID_2X2, runs_of, write_space, study_of

from detect.config import ExperimentConfig
from detect.errors import UsageError
from detect.tune.search import run_tune
from detect.tune.space import load_space
from detect.tune.worker import make_sampler, open_storage


def test_resume_finishes_rest_without_rerunning(tmp_path):
    out = tmp_path / "tune"
    space = write_space(tmp_path, GRID_2X2)
    assert run_tune(str(tmp_path), space, out, trials=1, epochs=1, device="cpu", trainer=FAKE) == 0
    first = study_of(out).trials[0]
    assert run_tune(str(tmp_path), space, out, trials=4, epochs=1, device="cpu", trainer=FAKE) == 0
    trials = study_of(out).trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4 and len(trials) == 4
    assert [t.params for t in trials].count(first.params) == 1 and trials[0].value == first.value
    assert len(runs_of(out)) == 4  # nothing trained twice
    # a finished study: running it again trains nothing and rewrites the report
    assert run_tune(str(tmp_path), space, out, epochs=1, device="cpu", trainer=FAKE) == 0
    assert len(runs_of(out)) == 4
    # a different space for the same study is refused
    with pytest.raises(UsageError, match=r"different space \(space.params.lr"):
        run_tune(str(tmp_path), write_space(tmp_path, {"lr": [0.1, 0.3]}), out, epochs=1, device="cpu", trainer=FAKE)
    space = write_space(tmp_path, GRID_2X2)
    with pytest.raises(UsageError, match=r"different epochs"):
        run_tune(str(tmp_path), space, out, epochs=2, device="cpu", trainer=FAKE)


def _exit_now() -> None:
    pass


def _started_study_and_dead_owner(tmp_path: Path, space: Path, out: Path) -> tuple[optuna.Study, dict]:
    """A study with one finished trial (grid sampler, as the workers load it) and the ``worker``
    attribute of a process on this machine that is gone (what a SIGKILLed worker leaves)."""
    assert run_tune(str(tmp_path), space, out, trials=1, epochs=1, device="cpu", trainer=FAKE) == 0
    study = optuna.load_study(study_name="space", storage=open_storage(f"sqlite:///{out / 'study.db'}"),
                              sampler=make_sampler("grid", load_space(space), seed=0, grid_seed=0))
    dead = mp.get_context("spawn").Process(target=_exit_now)
    dead.start()
    dead.join()
    return study, {"host": socket.gethostname(), "pid": dead.pid, "index": 0}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_trial_left_running_by_a_kill_is_failed_and_rerun(tmp_path):
    out = tmp_path / "tune"
    space = write_space(tmp_path, GRID_2X2)
    study, owner = _started_study_and_dead_owner(tmp_path, space, out)
    orphan = study.ask()  # what a SIGKILLed worker leaves: RUNNING, owned by a pid that is gone
    orphan.set_user_attr("worker", owner)
    orphan_params = {"lr": orphan.suggest_categorical("lr", [0.1, 0.01]),
                     "momentum": orphan.suggest_categorical("momentum", [0.8, 0.88])}
    assert run_tune(str(tmp_path), space, out, trials=4, epochs=1, device="cpu", trainer=FAKE) == 0
    trials = study_of(out).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 4 and states[orphan.number] == "FAIL"
    assert "gone" in trials[orphan.number].user_attrs["interrupted"]
    rerun = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(rerun) == 1 and rerun[0].params == orphan_params and rerun[0].state.name == "COMPLETE"
    assert sorted((r["lr"], r["momentum"]) for r in runs_of(out)) == [(0.01, 0.8), (0.01, 0.88), (0.1, 0.8), (0.1, 0.88)]
    md = (out / "trials.md").read_text()
    assert f"queued again as trial {rerun[0].number}" in md


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_trials_killed_before_sampling_or_mid_requeue_still_cover_the_grid(tmp_path):
    """Two half-done interruptions: a worker killed right after ``ask`` gave its trial a grid point
    (no parameters sampled yet), and one killed after marking its trial FAIL but before queuing it
    again. The next run trains every grid point exactly once."""
    out = tmp_path / "tune"
    space = write_space(tmp_path, {"lr": [0.1, 0.01, 0.001], "momentum": [0.8, 0.88]})
    study, owner = _started_study_and_dead_owner(tmp_path, space, out)
    unsampled = study.ask()  # has a grid_id, no params
    unsampled.set_user_attr("worker", owner)
    half = study.ask()
    half.set_user_attr("worker", owner)
    half.suggest_categorical("lr", [0.1, 0.01, 0.001])  # one of its two parameters sampled
    study._storage.set_trial_user_attr(half._trial_id, "interrupted", "interrupted (Ctrl-C or SIGTERM)")
    study._storage.set_trial_state_values(half._trial_id, optuna.trial.TrialState.FAIL)  # killed here
    assert run_tune(str(tmp_path), space, out, epochs=1, device="cpu", trainer=FAKE) == 0
    trials = study_of(out).trials
    done = [(t.params["lr"], t.params["momentum"]) for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == len(set(done)) == 6, [(t.number, t.state.name, t.params, t.system_attrs) for t in trials]
    for orphan in (unsampled, half):
        rerun = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
        assert len(rerun) == 1 and rerun[0].state.name == "COMPLETE"
        assert rerun[0].system_attrs["grid_id"] == trials[orphan.number].system_attrs["grid_id"]
    assert sorted((r["lr"], r["momentum"]) for r in runs_of(out)) == sorted(done)


def test_signals_deferred_holds_repeated_sigterm_from_any_thread():
    """Two SIGTERMs during the block (sent from another thread, which the kernel may pick to take
    them) run no handler inside it; the block ends, then one KeyboardInterrupt."""
    import signal
    import threading

    from detect.tune.worker import _raise_interrupt, signals_deferred

    def kill_twice() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

    finished = []
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            with signals_deferred():
                thread = threading.Thread(target=kill_twice)
                thread.start()
                thread.join()
                for _ in range(20):  # bytecode ticks: where Python runs pending handlers
                    time.sleep(0.005)
                finished.append(True)
        assert finished == [True]
        assert signal.getsignal(signal.SIGTERM) is _raise_interrupt
    finally:
        signal.signal(signal.SIGTERM, old)


def _proc_state(pid) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        return f"state {stat[2]} wchan {Path(f'/proc/{pid}/wchan').read_text()}"
    except (OSError, TypeError):
        return "gone"


@pytest.mark.slow
def test_sigkill_then_resume_finishes_without_rerunning(tmp_path):
    """SIGKILL `detect tune` (2 workers) after its first finished trial; the workers die with it
    (their trials are queued again); the same command then finishes the grid."""
    import signal
    import subprocess
    import sys

    ExperimentConfig().save_yaml(tmp_path / "base.yaml")
    out = tmp_path / "tune"
    space = write_space(tmp_path, {"lr": [0.1, 0.01, 0.001], "momentum": [0.8, 0.88]}, pruner="none")
    code = (f"import sys; from detect.tune.search import run_tune; sys.exit(run_tune({str(tmp_path)!r}, {str(space)!r}, "
            f"{str(out)!r}, workers=2, epochs=3, config={str(tmp_path / 'base.yaml')!r}, device='cpu', trainer={FAKE!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent,
                            env={**os.environ, "FAKE_TRAIN_DELAY": "0.4"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        # RUNS.log: a trial started, so the study exists (opening the db earlier races its creation)
        if (out / "RUNS.log").exists() and any(t.state.name == "COMPLETE" for t in study_of(out).trials):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60  # the workers get SIGTERM from the kernel (PR_SET_PDEATHSIG) and queue their trials
    while time.time() < deadline and any(t.state.name == "RUNNING" for t in study_of(out).trials):
        time.sleep(1.0)  # poll gently: SQLite readers delay the workers' writes
    # Normally the dying workers queue their trials themselves; on a loaded machine one can die
    # before its write lands, leaving a RUNNING trial whose process is gone: the restart below
    # must recover those too. A RUNNING trial whose worker still lives would be a real leak.
    stuck = [(t.number, t.user_attrs.get("worker"), _proc_state(t.user_attrs.get("worker", {}).get("pid")))
             for t in study_of(out).trials if t.state.name == "RUNNING"]
    assert all(state == "gone" for *_, state in stuck), stuck
    before = {t.number: t.params for t in study_of(out).trials if t.state.name == "COMPLETE"}
    assert 1 <= len(before) < 6
    assert run_tune(str(tmp_path), space, out, workers=2, epochs=3, config=str(tmp_path / "base.yaml"), device="cpu",
                    trainer=FAKE) == 0
    trials = study_of(out).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 6, [(t.number, t.state.name, t.params, t.user_attrs) for t in trials]
    assert len({(t.params["lr"], t.params["momentum"]) for t in done}) == 6
    assert all(trials[n].params == p and trials[n].state.name == "COMPLETE" for n, p in before.items())
    assert not [t for t in trials if t.state.name == "RUNNING"]
    runs = [(r["lr"], r["momentum"]) for r in runs_of(out)]
    for p in before.values():  # a finished trial is never trained again
        assert runs.count((p["lr"], p["momentum"])) == 1
