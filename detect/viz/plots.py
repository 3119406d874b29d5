"""PNG plots of results: precision-recall curves, confusion matrix, training curves.

Only results go in (numpy arrays, a CSV file); nothing here knows a model or a dataset.
Figures are drawn with matplotlib's object API on an Agg canvas, so no global backend is
switched and no display is needed, and every PNG is written atomically.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from detect.utils import atomic_write_bytes


def _label_fonts(fn):
    """Run a plot function with matplotlib's font list extended by the label font of
    :mod:`detect.viz.draw` (Noto Sans CJK when installed), so class names in any script are
    drawn as glyphs, not boxes with a 'Glyph missing' warning. Only inside the call
    (``rc_context``): the caller's matplotlib settings are left alone."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        extra = _extra_family()
        if extra is None:
            return fn(*args, **kwargs)
        with matplotlib.rc_context({"font.family": [*matplotlib.rcParams["font.family"], extra]}):
            return fn(*args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=None)
def _extra_family() -> str | None:
    """The family name of the label font, registered with matplotlib (None: none found, or
    matplotlib cannot read it)."""
    from matplotlib import font_manager

    from detect.viz.draw import font_path

    path = font_path()
    if path is None:
        return None
    try:
        font_manager.fontManager.addfont(path)
        return font_manager.FontProperties(fname=path).get_name()
    except Exception:  # an unusual font file: plots fall back to matplotlib's own fonts
        return None


MAX_LABEL = 40  # characters of a class name on a plot's axis or legend


def short_label(name: str, n: int = MAX_LABEL) -> str:
    """A class name as a plot shows it: at most ``n`` characters (a 20,000-character name made
    the confusion matrix's text layout allocate until ``std::bad_alloc``), control characters
    as ``?``."""
    name = "".join(c if c.isprintable() else "?" for c in str(name)[: n + 1])
    return name if len(name) <= n else name[: n - 1] + "…"


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


@_label_fonts
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
        label = f"{short_label(name)} {ap[name]:.3f}" if len(names) <= 20 else None
        axis.plot(x, y, linewidth=1, alpha=0.6, label=label, drawstyle="steps-post")
    if interp:
        mean_ap = float(np.nanmean([ap[n] for n in names]))
        axis.plot(grid, np.mean(interp, 0), linewidth=3, color="blue", label=f"all classes {mean_ap:.3f} mAP@0.5")
    axis.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axis.grid(alpha=0.3)
    if names:
        axis.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    return _save(fig, png_path)


@_label_fonts
def plot_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], png_path: str | Path, normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Draw an int[C + 1, C + 1] matrix (rows true, columns predicted, last = background),
    normalised per true class (row) when ``normalize``; counts are written in the cells when
    there are at most 30 classes."""
    matrix = np.asarray(matrix)
    labels = [short_label(n) for n in names] + ["background"]
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
    cell_pt = side / n * 72  # a cell's side in points: numbers and labels sized to read at a glance
    fs = int(min(12, max(6, cell_pt * 0.27)))
    axis.set_xticks(range(n), labels, rotation=90, fontsize=max(fs, 9))
    axis.set_yticks(range(n), labels, fontsize=max(fs, 9))
    axis.set(xlabel="Predicted", ylabel="True", title=title + (" (row-normalised)" if normalize else ""))
    if n <= 31:
        hi = values.max() if values.size else 0
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    text = f"{values[i, j]:.2f}" if normalize else str(int(matrix[i, j]))
                    color = "white" if values[i, j] > 0.5 * hi else "black"
                    axis.text(j, i, text, ha="center", va="center", fontsize=fs, color=color)
    return _save(fig, png_path)


SKIP_CURVES = ("time", "data_wait")  # wall time per epoch and the loader's share: speed, not training curves
COUNTERS = ("skipped", "nonfinite_loss")  # shown only when they are not all zero


def _informative(name: str, values: np.ndarray) -> bool:
    """A panel is worth drawing: some value, not a counter that stayed 0, and (after the first
    row) not the same value in every row."""
    v = values[np.isfinite(values)]
    if v.size == 0 or (name in COUNTERS and not v.any()):
        return False
    return len(values) == 1 or np.unique(v).size > 1


@_label_fonts
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

    cols = [c for c in rows[0] if c != x and c not in SKIP_CURVES]
    series = {c: np.array([num(r.get(c)) for r in rows]) for c in cols}
    series = {c: v for c, v in series.items() if _informative(c, v)}
    if not series:
        raise ValueError(f"{csv_path}: no numeric columns besides {x!r}")
    xs = np.array([num(r.get(x)) for r in rows]) if x in rows[0] else np.arange(1, len(rows) + 1, dtype=float)
    order = lambda c: (0 if c.startswith(("voc", "coco")) else 1 if "loss" in c.lower() else 2, list(series).index(c))  # noqa: E731
    names = sorted(series, key=order)
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


@_label_fonts
def plot_per_class_ap(ap: Mapping[str, float], png_path: str | Path, title: str = "AP50 per class") -> Path:
    """Horizontal bars of each class's AP (NaN classes left out), worst at the top, with the
    mean as a line: the classes to look at first stand out."""
    items = sorted(((n, float(v)) for n, v in ap.items() if v is not None and np.isfinite(v)), key=lambda t: t[1])
    fig = _figure(7, max(2.5, 0.3 * len(items) + 1.2))
    axis = fig.add_subplot(1, 1, 1)
    if items:
        names, vals = zip(*items)
        axis.barh(range(len(vals)), vals, color=[_ap_colour(v) for v in vals])
        axis.set_yticks(range(len(vals)), [short_label(n) for n in names], fontsize=9)
        for i, v in enumerate(vals):
            axis.text(min(v + 0.01, 0.93), i, f"{v:.3f}", va="center", fontsize=8)
        mean = float(np.mean(vals))
        axis.axvline(mean, color="black", linestyle="--", linewidth=1)
        axis.set_title(f"{title} (mean {mean:.3f})")
    else:
        axis.set_title(f"{title}: no class with ground truth")
    axis.set(xlim=(0, 1), xlabel="AP50")
    axis.invert_yaxis()
    return _save(fig, png_path)


def _ap_colour(v: float) -> tuple[float, float, float]:
    """Red (0) through yellow to green (1)."""
    v = min(max(v, 0.0), 1.0)
    return (min(1.0, 2 * (1 - v)), min(1.0, 2 * v), 0.2)


def plot_confusion_matrices(matrix: np.ndarray, names: Sequence[str], folder: str | Path) -> tuple[Path, Path]:
    """``confusion_matrix.png`` (counts) and ``confusion_matrix_normalized.png`` (each true
    class's row sums to 1) in ``folder``."""
    folder = Path(folder)
    return (plot_confusion_matrix(matrix, names, folder / "confusion_matrix.png", normalize=False),
            plot_confusion_matrix(matrix, names, folder / "confusion_matrix_normalized.png", normalize=True))


def image_mosaic(tiles: Sequence[np.ndarray], png_path: str | Path, columns: int = 4, tile: int = 320,
                 captions: Sequence[str] | None = None) -> Path:
    """Lay uint8 BGR images out on a grid (each fitted into ``tile`` x ``tile``, aspect kept,
    grey padding), with an optional caption drawn on each, and write one PNG."""
    import cv2

    from detect.viz.draw import draw_label

    if not tiles:
        raise ValueError("image_mosaic: no images")
    rows = math.ceil(len(tiles) / columns)
    cols = min(columns, len(tiles))
    canvas = np.full((rows * tile, cols * tile, 3), 114, np.uint8)
    for k, img in enumerate(tiles):
        h, w = img.shape[:2]
        s = tile / max(h, w)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        y, x = r * tile, c * tile
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        if captions is not None and k < len(captions) and captions[k]:
            draw_label(canvas, captions[k], x + 2, y + 2, (40, 40, 40), 14, above=False)
        cv2.rectangle(canvas, (x, y), (x + tile - 1, y + tile - 1), (255, 255, 255), 1)
    ok, buf = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError(f"could not encode {png_path}")
    atomic_write_bytes(png_path, buf.tobytes())
    return Path(png_path)
