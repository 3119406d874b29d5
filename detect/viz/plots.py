"""PNG plots of results: precision-recall curves, confusion matrix, training curves.

Only results go in (numpy arrays, a CSV file); nothing here knows a model or a dataset.
Figures are drawn with matplotlib's object API on an Agg canvas, so no global backend is
switched and no display is needed, and every PNG is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from detect.utils import atomic_write_bytes


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, png_path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ap: Mapping[str, float],
    png_path: str | Path,
    title: str = "Precision-recall (IoU 0.5)",
) -> Path:
    """One thin curve per class and the mean interpolated curve in bold.

    Args:
        curves: class name -> (recall float[D], precision float[D]) in rank order.
        ap: class name -> AP shown in the legend (NaN classes are left out of the plot).
    """
    fig = _figure(8, 6)
    axis = fig.add_subplot(1, 1, 1)
    grid = np.linspace(0, 1, 101)
    interp = []
    names = [n for n in curves if np.isfinite(ap.get(n, float("nan")))]
    for name in names:
        rec, prec = (np.asarray(x, np.float64) for x in curves[name])
        if rec.size:
            env = np.maximum.accumulate(prec[::-1])[::-1]  # interpolated precision
            idx = np.searchsorted(rec, grid, side="left")
            interp.append(np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0.0))
            x, y = np.concatenate(([0.0], rec)), np.concatenate(([env[0]], env))
        else:
            interp.append(np.zeros_like(grid))
            x, y = np.array([0.0, 1.0]), np.array([0.0, 0.0])
        label = f"{name} {ap[name]:.3f}" if len(names) <= 20 else None
        axis.plot(x, y, linewidth=1, alpha=0.6, label=label, drawstyle="steps-post")
    if interp:
        mean_ap = float(np.nanmean([ap[n] for n in names]))
        axis.plot(grid, np.mean(interp, 0), linewidth=3, color="blue", label=f"all classes {mean_ap:.3f} mAP@0.5")
    axis.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axis.grid(alpha=0.3)
    if names:
        axis.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    return _save(fig, png_path)


def plot_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], png_path: str | Path, normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Draw an int[C + 1, C + 1] matrix (rows true, columns predicted, last = background),
    normalised per true class (row) when ``normalize``; counts are written in the cells when
    there are at most 30 classes."""
    matrix = np.asarray(matrix)
    labels = list(names) + ["background"]
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not fit {len(names)} classes + background")
    values = matrix.astype(np.float64)
    if normalize:
        values = values / np.maximum(values.sum(1, keepdims=True), 1)
    n = len(labels)
    side = min(4 + 0.45 * n, 24)
    fig = _figure(side + 1.5, side)
    axis = fig.add_subplot(1, 1, 1)
    im = axis.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=axis, fraction=0.046, pad=0.04)
    axis.set_xticks(range(n), labels, rotation=90, fontsize=8)
    axis.set_yticks(range(n), labels, fontsize=8)
    axis.set(xlabel="Predicted", ylabel="True", title=title + (" (row-normalised)" if normalize else ""))
    if n <= 31:
        hi = values.max() if values.size else 0
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    text = f"{values[i, j]:.2f}" if normalize else str(int(matrix[i, j]))
                    color = "white" if values[i, j] > 0.5 * hi else "black"
                    axis.text(j, i, text, ha="center", va="center", fontsize=6, color=color)
    return _save(fig, png_path)


def plot_curves(csv_path: str | Path, png_path: str | Path, x: str = "epoch") -> Path:
    """Training curves from a per-epoch CSV: one panel per numeric column, against ``x`` (the
    row number when the CSV has no such column). Columns whose names contain "loss" come first.
    Empty cells and non-numbers are skipped, so a run that added a column later still plots."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path}: no rows to plot")

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else float("nan")
        except ValueError:
            return float("nan")

    cols = [c for c in rows[0] if c != x]
    series = {c: np.array([num(r.get(c)) for r in rows]) for c in cols}
    series = {c: v for c, v in series.items() if np.isfinite(v).any()}
    if not series:
        raise ValueError(f"{csv_path}: no numeric columns besides {x!r}")
    xs = np.array([num(r.get(x)) for r in rows]) if x in rows[0] else np.arange(1, len(rows) + 1, dtype=float)
    names = sorted(series, key=lambda c: ("loss" not in c.lower(), list(series).index(c)))
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(3.5 * ncols, 2.8 * nrows)
    for i, name in enumerate(names):
        axis = fig.add_subplot(nrows, ncols, i + 1)
        y = series[name]
        ok = np.isfinite(y) & np.isfinite(xs)
        axis.plot(xs[ok], y[ok], marker="o", markersize=3, linewidth=1.5)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel(x if x in rows[0] else "row", fontsize=8)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, png_path)
