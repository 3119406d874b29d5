"""The pictures an evaluation and a training run leave behind, from results already computed.

``detect val`` and the end of ``detect train`` (on ``best.pt``) write the same set into a folder:

    pr_curve.png                     precision-recall per class and the mean (IoU 0.5)
    confusion_matrix.png             counts (rows: true class, columns: predicted; last: background)
    confusion_matrix_normalized.png  each true class's row sums to 1
    per_class_ap.png                 AP50 per class, worst first, with the mean
    errors.png                       TIDE-style dAP per error type (detect.engine.error_breakdown)
    val_mosaic.png                   val images: ground truth (left) next to predictions (right)

and a training run writes ``train_batch.png`` at its start: the first augmented batch with its
boxes, to check the augmentation and the labels before spending hours on them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

VAL_OUTPUTS = ("val.json", "pr_curve.png", "confusion_matrix.png", "confusion_matrix_normalized.png", "per_class_ap.png",
               "errors.png", "val_mosaic.png")  # what an evaluation writes into its folder (the output checks)
MOSAIC_IMAGES = 8  # val images in val_mosaic.png (each shown twice: truth, prediction)
MOSAIC_CONF = 0.25  # predictions drawn at or above this score (the confusion matrix's threshold)


def write_val_plots(
    folder: str | Path, metrics: dict[str, Any], details: dict[str, Any], classes: Sequence[str],
    errors: Optional[dict[str, Any]] = None, records: Optional[Sequence[Any]] = None,
    dets: Optional[Sequence[dict]] = None, gts: Optional[Sequence[dict]] = None,
) -> dict[str, str]:
    """Write the evaluation pictures into ``folder``; returns name -> path of what was written.

    ``records`` (with ``image`` paths), ``dets`` and ``gts`` (original-image pixels, as
    :func:`detect.engine.evaluate.collect` returns them) add the mosaic; ``errors`` adds errors.png.
    """
    from detect.viz.plots import plot_confusion_matrices, plot_per_class_ap, plot_pr_curves

    folder = Path(folder)
    ap = {n: v["ap50"] for n, v in metrics["per_class"].items()}
    out = {"pr_curve": plot_pr_curves(details["curves"], ap, folder / "pr_curve.png")}
    out["confusion_matrix"], out["confusion_matrix_normalized"] = plot_confusion_matrices(
        details["confusion_matrix"], classes, folder)
    out["per_class_ap"] = plot_per_class_ap(ap, folder / "per_class_ap.png")
    if errors is not None:
        out["errors"] = plot_errors(errors, folder / "errors.png")
    if records is not None and dets is not None and gts is not None and len(records):
        try:  # a picture to look at, never a reason to fail an evaluation
            out["val_mosaic"] = val_mosaic(records, dets, gts, classes, folder / "val_mosaic.png")
        except (OSError, ValueError, ImportError) as e:
            print(f"warning: no val_mosaic.png: {e}", file=sys.stderr)
    return {k: str(v) for k, v in out.items()}


def plot_errors(errors: dict[str, Any], png_path: str | Path) -> Path:
    """Bars of the AP50 each error type costs (its dAP when fixed), with the counts."""
    from detect.engine.error_breakdown import ERROR_TYPES
    from detect.viz.plots import _figure, _save

    fig = _figure(7, 3.2)
    axis = fig.add_subplot(1, 1, 1)
    vals = [max(0.0, float(errors["dap"][t] or 0.0)) for t in ERROR_TYPES]
    axis.bar(range(len(vals)), vals, color="tab:red")
    axis.set_xticks(range(len(vals)), [f"{t}\n({errors['counts'][t]})" for t in ERROR_TYPES])
    for i, v in enumerate(vals):
        axis.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    axis.set(ylabel="AP50 gained when fixed", title=f"Where the AP50 goes (AP50 {errors['ap50']:.3f}, lost {errors['lost']:.3f})")
    axis.set_ylim(0, max(vals + [0.05]) * 1.2)
    return _save(fig, png_path)


def val_mosaic(records: Sequence[Any], dets: Sequence[dict], gts: Sequence[dict], classes: Sequence[str],
               png_path: str | Path, n: int = MOSAIC_IMAGES, conf: float = MOSAIC_CONF) -> Path:
    """The first ``n`` images readable: ground truth next to predictions (score >= ``conf``)."""
    from detect.data.dataset import ImageReadError, read_image_rgb
    from detect.viz.draw import draw_detections
    from detect.viz.plots import image_mosaic

    tiles, captions = [], []
    for rec, det, gt in zip(records, dets, gts):
        if len(tiles) >= 2 * n:
            break
        try:
            bgr = cv2.cvtColor(read_image_rgb(rec.image), cv2.COLOR_RGB2BGR)
        except ImageReadError:
            continue
        g = np.asarray(gt["labels"]).reshape(-1)
        tiles.append(draw_detections(bgr, gt["boxes"], np.ones(len(g)), g, classes, show_score=False))
        keep = np.asarray(det["scores"]) >= conf
        tiles.append(draw_detections(bgr, np.asarray(det["boxes"])[keep], np.asarray(det["scores"])[keep],
                                     np.asarray(det["labels"])[keep], classes))
        captions += [f"{Path(rec.image).name}: truth", f"predicted (>= {conf:g})"]
    if not tiles:
        raise ValueError("no readable val image for the mosaic")
    return image_mosaic(tiles, png_path, columns=4, tile=320, captions=captions)


def train_batch_mosaic(images: Any, targets: Sequence[dict], classes: Sequence[str], png_path: str | Path,
                       n: int = 16) -> Path:
    """The first ``n`` images of a training batch (Tensor[B, 3, S, S] RGB, float in [0, 1] as the
    model gets them, or uint8 as the loader gives them) with their boxes and class names, as the model is taught them."""
    from detect.data.dataset import float_images
    from detect.viz.draw import draw_detections
    from detect.viz.plots import image_mosaic

    tiles = []
    for img, t in zip(float_images(images[:n]), targets[:n]):
        rgb = (img.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)  # (3, S, S) -> (S, S, 3)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        labels = t["labels"].cpu().numpy().reshape(-1)
        tiles.append(draw_detections(bgr, t["boxes"].cpu().numpy().reshape(-1, 4), np.ones(len(labels)), labels, classes,
                                     show_score=False))
    return image_mosaic(tiles, png_path, columns=4, tile=max(128, min(320, tiles[0].shape[0])))
