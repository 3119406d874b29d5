"""The files of a ``detect audit`` run: ``audit.json``, CSV tables and one self-contained
``report.html`` (the annotated photos embedded as base64 JPEG, inline CSS, no script, no
server, no network: it opens from the file system and can be mailed as one file).

Files (in the save folder):
- ``audit.json``: ``{"images": [AuditResult.to_dict() ...], "videos": [VideoAudit.to_dict() ...], "failed": [...]}``
- ``facings.csv``: source, row, product, facings, units, width
- ``share.csv``: source, product, facings, width, by_facings, by_width
- ``gaps.csv``: source, row, x1, y1, x2, y2, facings, left, right
- ``compliance.csv`` (with a planogram): source, shelf, position, product, expected, observed, status, found
- ``unique.csv`` (videos): source, product, unique (the photo tables are written when photos were audited)
- ``report.html``
Rows are numbered 1 from the top of the photo, like planogram shelves.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from detect.utils import atomic_write_text

EMBED_SIDE = 1600  # longest side of the embedded photos (a 12-MP photo stays a few hundred kB)

TABLES = {  # file -> header; the rows come from _rows below
    "facings.csv": ("source", "row", "product", "facings", "units", "width"),
    "share.csv": ("source", "product", "facings", "width", "by_facings", "by_width"),
    "gaps.csv": ("source", "row", "x1", "y1", "x2", "y2", "facings", "left", "right"),
    "compliance.csv": ("source", "shelf", "position", "product", "expected", "observed", "status", "found"),
    "unique.csv": ("source", "product", "unique"),
}


def _rows(table: str, d: dict) -> list[list]:
    """Rows of one CSV table for one image's (or video's) ``to_dict()``."""
    src = d["source"]
    if table == "facings.csv":
        return [[src, f["row"], f["product"], f["facings"], f["units"], f["width"]] for f in d.get("facings", [])]
    if table == "share.csv":
        return [[src, s["product"], s["facings"], s["width"], s["by_facings"], s["by_width"]] for s in d.get("share_of_shelf", [])]
    if table == "gaps.csv":
        return [[src, g["row"], *g["box"], g["facings"], g["left"] or "", g["right"] or ""] for g in d.get("gaps", [])]
    if table == "compliance.csv":
        c = d.get("compliance") or {"positions": []}
        return [[src, p["shelf"], p["position"], p["product"], p["expected"], p["observed"], p["status"], ";".join(p["found"])]
                for p in c["positions"]]
    if table == "unique.csv":
        return [[src, name, n] for name, n in d.get("unique", {}).items()]
    raise KeyError(table)


def write_tables(save_dir: Path, images: Sequence[dict], videos: Sequence[dict]) -> list[Path]:
    """Write the CSV tables of what was audited (the photo tables with photos, compliance with a
    planogram, unique with videos); returns their paths."""
    out = []
    for table, header in TABLES.items():
        rows = [r for d in list(images) + list(videos) for r in _rows(table, d)]
        wanted = bool(videos) if table == "unique.csv" else bool(images)
        if not wanted or (not rows and table == "compliance.csv"):
            continue
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(rows)
        atomic_write_text(save_dir / table, buf.getvalue())
        out.append(save_dir / table)
    return out


def write_json(path: Path, images: Sequence[dict], videos: Sequence[dict], failed: Sequence[str], extra: Optional[dict] = None) -> Path:
    doc = {"images": list(images), "videos": list(videos), "failed": list(failed), **(extra or {})}
    atomic_write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def embed_jpeg(image: np.ndarray, side: int = EMBED_SIDE, quality: int = 85) -> str:
    """A ``data:image/jpeg;base64,...`` URL of a BGR image, shrunk by a whole factor until its
    longer side is at most ``side``. Halving uses OpenCV's area resize (its fast path); larger
    factors bilinear (a 12-MP photo in 9 ms where an area resize took 79 ms, a tenth of a whole
    predict run; the annotations' lines are drawn thick enough for it)."""
    f = -(-max(image.shape[:2]) // side)  # ceil
    if f > 1:
        image = cv2.resize(image, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA if f == 2 else cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("OpenCV could not encode the report image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.2em;
margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1em}table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#f2f2f2}td.n{text-align:right}
img{max-width:100%;height:auto;border:1px solid #ccc}.ok{color:#176317}.missing,.misplaced,.wrong_facings{color:#b00000;font-weight:600}
.score{font-size:1.3em}"""


def _table(cls: str, header: Sequence[str], rows: Iterable[Sequence], status_col: Optional[int] = None) -> str:
    """An HTML table with ``class=cls``; numbers right-aligned; a status column gets its class."""
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
    n = 0
    for r in rows:
        cells = []
        for k, v in enumerate(r):
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            c = ' class="n"' if num else (f' class="{html.escape(str(v))}"' if k == status_col else "")
            cells.append(f"<td{c}>{html.escape(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
        n += 1
    if n == 0:
        out.append(f'<tr><td colspan="{len(header)}">none</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1 and v != 0 else f"{v:.1f}"
    return str(v)


def image_section(d: dict, picture: Optional[str]) -> str:
    """The HTML of one photo's audit (``d``: ``AuditResult.to_dict()``; ``picture``: data URL)."""
    e = html.escape
    parts = [f'<section class="image"><h2>{e(d["source"])}</h2>',
             f"<p>{d['width']} x {d['height']} px; {d['products']} products in {len(d['rows'])} rows; "
             f"{len(d['gaps'])} gaps ({d['empty_facings']} empty facings)</p>"]
    comp = d.get("compliance")
    if comp is not None:
        parts.append(f'<p class="score">planogram compliance: <b>{comp["score"] * 100:.1f}%</b> ('
                     + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in comp["counts"].items()) + ")</p>")
    if picture:
        parts.append(f'<img alt="annotated photo" src="{picture}">')
    parts.append("<h3>Rows</h3>" + _table("rows", ("row", "products", "left base (x, y)", "right base (x, y)", "height", "products left to right"),
                 ([r["row"], r["products"], f"{r['base'][0][0]:.0f}, {r['base'][0][1]:.0f}", f"{r['base'][1][0]:.0f}, {r['base'][1][1]:.0f}",
                   r["height"], ("(empty row)" if r["empty"] else " ".join(r["sequence"]))] for r in d["rows"])))
    parts.append("<h3>Facings</h3>" + _table("facings", ("row", "product", "facings", "units", "width px"),
                 ([f["row"], f["product"], f["facings"], f["units"], f["width"]] for f in d["facings"])))
    parts.append("<h3>Share of shelf</h3>" + _table("share", ("product", "facings", "by facings", "width px", "by width"),
                 ([s["product"], s["facings"], f"{s['by_facings'] * 100:.1f}%", s["width"], f"{s['by_width'] * 100:.1f}%"]
                  for s in d["share_of_shelf"])))
    parts.append("<h3>Gaps</h3>" + _table("gaps", ("row", "empty facings", "box (x1, y1, x2, y2)", "left of it", "right of it"),
                 ([g["row"], g["facings"], ", ".join(f"{v:.0f}" for v in g["box"]), g["left"] or "(shelf edge)",
                   g["right"] or "(shelf edge)"] for g in d["gaps"])))
    if comp is not None:
        parts.append("<h3>Planogram</h3>" + _table("compliance", ("shelf", "position", "product", "expected", "observed", "status", "found there"),
                     ([p["shelf"], p["position"], p["product"], p["expected"], p["observed"], p["status"], ", ".join(p["found"])]
                      for p in comp["positions"]), status_col=5))
    parts.append("</section>")
    return "".join(parts)


def video_section(d: dict, picture: Optional[str]) -> str:
    """The HTML of one video's unique-product count (``d``: ``VideoAudit.to_dict()``)."""
    e = html.escape
    parts = [f'<section class="video"><h2>{e(d["source"])}</h2>',
             f"<p>{d['frames']} frames; {d['total']} unique products (tracked with {e(d['tracker'])}); "
             f"annotated video: {e(d.get('video') or '(not saved)')}</p>"]
    if picture:
        parts.append(f'<img alt="a frame of the video" src="{picture}">')
    parts.append("<h3>Unique products</h3>" + _table("unique", ("product", "unique"), list(d["unique"].items())))
    parts.append("</section>")
    return "".join(parts)


def write_html(path: Path, sections: Sequence[str], title: str, note: str = "") -> Path:
    """One self-contained HTML file from the sections."""
    e = html.escape
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
           f"<style>{CSS}</style></head><body><h1>{e(title)}</h1><p>{e(note)}</p>" + "".join(sections) + "</body></html>\n")
    atomic_write_text(path, doc)
    return path
