"""What a training run leaves in RUN_DIR besides checkpoints: ``results.csv`` (one row per
epoch, rewritten atomically), TensorBoard events when ``tensorboard`` is installed, and
``results.png`` (loss and mAP curves), both rewritten after every epoch so an interrupted run
has them too. Only rank 0 writes; elsewhere every method is a no-op."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from detect.utils import atomic_write_text

METRIC_KEYS = ("voc_ap50", "voc07_ap50", "coco_ap", "coco_ap50", "coco_ap75")


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of ``rows``; columns in order of first appearance, missing or non-finite -> ''."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in cols})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def format_row(row: dict[str, Any], epochs: int) -> str:
    """One line per epoch: losses, lr, val metrics, skipped steps, time, throughput."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    parts += [f"{k} {v:.4f}" for k, v in row.items() if k.startswith("train_") and isinstance(v, float)]
    parts.append(f"lr {row['lr']:.3g}")
    parts += [f"{k} {row[k]:.4f}" for k in ("voc_ap50", "coco_ap") if isinstance(row.get(k), float)]
    if row.get("skipped"):
        parts.append(f"skipped {row['skipped']} (non-finite loss {row.get('nonfinite_loss', 0)})")
    if row.get("unreadable"):
        parts.append(f"unreadable {row['unreadable']}")
    parts.append(f"{row['time']:.1f}s {row['images_per_s']:.0f} img/s")
    if isinstance(row.get("data_wait"), float):  # the loader's share: high means the loader, not the step, limits the speed
        parts.append(f"data wait {100 * row['data_wait']:.0f}%")
    return "  ".join(parts)


class RunLog:
    """CSV + optional TensorBoard + final plot for one run folder (rank 0 only)."""

    def __init__(self, out: Path, enabled: bool = True):
        self.out = Path(out)
        self.enabled = enabled
        self.csv = self.out / "results.csv"
        self.tb: Optional[Any] = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                self.tb = None

    def print(self, msg: str, err: bool = False) -> None:
        if self.enabled:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    def epoch(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rewrite the CSV and ``results.png`` with all ``rows`` and log the last one to TensorBoard."""
        if not self.enabled or not rows:
            return
        atomic_write_text(self.csv, rows_to_csv(rows))
        self.plot()
        if self.tb is not None:
            row = rows[-1]
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k.replace("train_", "train/").replace("voc_", "val/voc_").replace("coco_", "val/coco_"),
                                       v, row["epoch"])
            self.tb.flush()

    def close(self) -> Optional[Path]:
        """Close TensorBoard; returns the path of ``results.png`` (None when not written)."""
        if not self.enabled:
            return None
        if self.tb is not None:
            self.tb.close()
        png = self.out / "results.png"
        return png if png.is_file() else self.plot()  # epoch() drew the last row already

    def plot(self) -> Optional[Path]:
        """Plot the curves of the CSV to ``results.png``; returns its path (None when not written)."""
        if not self.enabled or not self.csv.is_file():
            return None
        try:
            from detect.viz.plots import plot_curves

            return Path(plot_curves(self.csv, self.out / "results.png"))
        except (ImportError, ValueError, OSError) as e:  # a plot must never fail a finished run
            self.print(f"warning: could not plot {self.csv}: {e}", err=True)
            return None
