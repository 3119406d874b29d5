"""The report of a ``detect tune`` study, written into OUT:

- ``trials.csv`` / ``trials.md``: every trial ranked by its best validation metric (completed
  trials first, then pruned ones, then failed/running), with its parameters, epochs run,
  seconds, state and notes (errors, interruptions);
- ``plots/metric_per_trial.png``, ``plots/params.png`` (each parameter against the metric,
  log x for log-scale parameters), ``plots/loss_curves.png`` (top trials: train loss from each
  trial's run CSV, validation metric per epoch);
- ``best.yaml``: the best completed trial's configuration, which ``detect train --config`` takes.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from detect.config import ExperimentConfig
from detect.tune.space import SearchSpace
from detect.utils import atomic_write, atomic_write_text

_STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3, TrialState.FAIL: 4}
TOP_K = 3


@dataclass
class Report:
    rows: list[dict[str, Any]]
    metric: str
    files: list[Path] = field(default_factory=list)
    best_yaml: Optional[Path] = None


def rounded(x: Any, digits: int = 4) -> Any:
    """``x`` with every float rounded to ``digits`` significant digits (dicts and lists too), for
    log lines and the printed table: lr 0.0031622776601683794 -> 0.003162. Files keep full values."""
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {k: rounded(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(rounded(v, digits) for v in x)
    return x


def trial_metric(t: FrozenTrial) -> Optional[float]:
    """A trial's best validation metric (completed: its value; pruned: best before stopping)."""
    v = t.value if t.state == TrialState.COMPLETE else t.user_attrs.get("best_metric")
    return None if v is None or not math.isfinite(v) else float(v)


def ranked_rows(study: optuna.Study, space: SearchSpace) -> list[dict[str, Any]]:
    """One dict per trial, ranked: state (complete, pruned, others), then the metric."""
    sign = -1.0 if space.direction == "maximize" else 1.0
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}

    def key(t: FrozenTrial) -> tuple:
        m = trial_metric(t)
        return (_STATE_ORDER.get(t.state, 5), m is None, sign * (m or 0.0), t.number)

    rows, rank = [], 0
    for t in sorted(trials, key=key):
        m = trial_metric(t)
        ranked = t.state in (TrialState.COMPLETE, TrialState.PRUNED) and m is not None
        rank += ranked
        notes = [t.user_attrs.get("error", ""), t.user_attrs.get("interrupted", "")]
        if t.number in retried:
            notes.append(f"queued again as trial {retried[t.number]}")
        if "retry_of" in t.user_attrs:
            notes.append(f"rerun of trial {t.user_attrs['retry_of']}")
        row = {"rank": rank if ranked else "", "trial": t.number, "state": t.state.name,
               space.metric: "" if m is None else round(m, 6)}
        row.update({p.name: t.params.get(p.name, "") for p in space.params})
        row.update({"epochs": t.user_attrs.get("epochs_run", ""), "best_epoch": t.user_attrs.get("best_epoch", ""),
                    "seconds": t.user_attrs.get("seconds", ""), "run_dir": t.user_attrs.get("run_dir", ""),
                    "notes": "; ".join(n for n in notes if n)})
        rows.append(row)
    return rows


def write_report(study: optuna.Study, space: SearchSpace, out: str | Path) -> Report:
    """Write the table, plots and best.yaml into ``out``; returns what was written."""
    out = Path(out)
    rows = ranked_rows(study, space)
    report = Report(rows, space.metric)
    cols = list(rows[0]) if rows else ["rank", "trial", "state", space.metric]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "trials.csv", buf.getvalue())
    atomic_write_text(out / "trials.md", _markdown(rows, cols, study, space))
    report.files += [out / "trials.csv", out / "trials.md"]
    report.files += _plots(study, space, rows, out)
    report.best_yaml = write_best_yaml(study, space, out / "best.yaml")
    return report


def write_best_yaml(study: optuna.Study, space: SearchSpace, path: Path) -> Optional[Path]:
    """The best completed trial's training config (base config + its parameters + the tuning
    data and epochs), for ``detect train --config``; None when no trial completed."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trial_metric(t) is not None]
    if not done:
        return None
    best = (max if space.direction == "maximize" else min)(done, key=lambda t: t.value)
    cfg = space.apply(ExperimentConfig.from_dict(study.user_attrs.get("base", {})), dict(best.params))
    cfg.data.data = study.user_attrs.get("data", cfg.data.data)
    cfg.train.epochs = int(study.user_attrs.get("tune", {}).get("epochs", cfg.train.epochs))
    cfg.train.device = "auto"
    cfg.train.resume = False
    cfg.train.out = f"runs/train/{space.study}-best"
    cfg.save_yaml(path)
    return path


def _markdown(rows: list[dict], cols: list[str], study: optuna.Study, space: SearchSpace) -> str:
    n = {s: sum(r["state"] == s.name for r in rows) for s in _STATE_ORDER}
    lines = [
        f"# Study `{space.study}`: {len(rows)} trials, ranked by best val `{space.metric}` ({space.direction})",
        "",
        f"complete {n[TrialState.COMPLETE]}, pruned {n[TrialState.PRUNED]}, failed {n[TrialState.FAIL]}, "
        f"running {n[TrialState.RUNNING]}, waiting {n[TrialState.WAITING]}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _plots(study: optuna.Study, space: SearchSpace, rows: list[dict], out: Path) -> list[Path]:
    """The three PNGs into ``out/plots``; trial run folders are read relative to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    scored = [r for r in rows if r[space.metric] != ""]
    files = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        pts = [(r["trial"], r[space.metric]) for r in scored if r["state"] == state]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, label=state.lower())
    done = sorted((r["trial"], r[space.metric]) for r in scored if r["state"] == "COMPLETE")
    if done:
        agg = max if space.direction == "maximize" else min
        best = [agg(v for _, v in done[: i + 1]) for i in range(len(done))]
        ax.step([n for n, _ in done], best, where="post", color="gray", label="best so far")
    ax.set(xlabel="trial", ylabel=f"best val {space.metric}", title=f"{space.study}: {space.metric} per trial")
    if ax.collections or ax.lines:
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no trial reported the metric", ha="center", va="center", transform=ax.transAxes)
    files.append(_save(fig, out / "plots" / "metric_per_trial.png"))

    k = len(space.params)
    ncol = min(k, 3)
    nrow = math.ceil(k / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, p in zip(axes.flat, space.params):
        xs = [r[p.name] for r in scored]
        ys = [r[space.metric] for r in scored]
        cs = ["C0" if r["state"] == "COMPLETE" else "C3" for r in scored]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if numeric:
            ax.scatter(xs, ys, c=cs)
            if p.log_scale:
                ax.set_xscale("log")
        else:  # categorical: one column per value
            cats = [str(v) for v in p.values] or sorted({str(x) for x in xs})
            ax.scatter([cats.index(str(x)) if str(x) in cats else -1 for x in xs], ys, c=cs)
            ax.set_xticks(range(len(cats)), cats)
        ax.set(xlabel=p.name + (" (log)" if p.log_scale and numeric else ""), ylabel=space.metric)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle(f"{space.study}: parameters vs best val {space.metric} (blue complete, red pruned)")
    files.append(_save(fig, out / "plots" / "params.png"))

    fig, (ax_loss, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for r in [r for r in scored if r["state"] == "COMPLETE"][:TOP_K] or scored[:TOP_K]:
        label = f"#{r['rank']} trial {r['trial']}"
        curve = read_loss_curve(out / r["run_dir"]) if r["run_dir"] else None
        if curve:
            ax_loss.plot(curve[0], curve[1], marker=".", label=label)
        iv = sorted(trials[r["trial"]].intermediate_values.items())
        if iv:
            ax_m.plot(*zip(*iv), marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss", title=f"top {TOP_K} trials: loss")
    ax_loss.ticklabel_format(axis="y", useOffset=False)
    ax_m.set(xlabel="epoch", ylabel=f"val {space.metric}", title=f"top {TOP_K} trials: val {space.metric}")
    for ax in (ax_loss, ax_m):
        if ax.lines:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "no curves recorded", ha="center", va="center", transform=ax.transAxes)
    files.append(_save(fig, out / "plots" / "loss_curves.png"))
    return files


_LOSS_COLUMNS = ("loss", "train/loss", "train_loss", "train/total", "total_loss", "train/total_loss")


def read_loss_curve(run_dir: Path) -> Optional[tuple[list[float], list[float]]]:
    """(epochs, train loss) from a run's per-epoch CSV: a total-loss column if there is one, else
    the sum of the ``train_*loss*`` columns. None when no CSV has one."""
    files = sorted(run_dir.glob("*.csv"), key=lambda p: (p.stem not in ("results", "metrics", "epochs", "log"), p.name))
    for f in files:
        with open(f, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            continue
        cols = list(rows[0])
        total = next((c for c in _LOSS_COLUMNS if c in cols), None)
        parts = [total] if total else [c for c in cols if c.lower().startswith(("train_", "train/")) and "loss" in c.lower()]
        if not parts:
            continue
        xs, ys = [], []
        for i, row in enumerate(rows):
            try:
                y = sum(float(row[c]) for c in parts)
                x = float(row.get("epoch") or i + 1)
            except (TypeError, ValueError):
                continue
            xs.append(x)
            ys.append(y)
        if xs:
            return xs, ys
    return None


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def print_summary(report: Report, out: Path, top: int = 5) -> None:
    """The first ``top`` rows of the ranked table and where the report went."""
    rows = [rounded(r) for r in report.rows[:top]]
    if rows:
        cols = [c for c in rows[0] if c not in ("run_dir", "notes")]
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
        print("  ".join(c.ljust(widths[c]) for c in cols))
        for r in rows:
            print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    print(f"detect tune: {len(report.rows)} trials; table {out / 'trials.md'}, plots {out / 'plots'}")
    if report.best_yaml:
        print(f"detect tune: best config {report.best_yaml} (detect train --config {report.best_yaml})")
    else:
        print("detect tune: no completed trial yet, so no best.yaml")
