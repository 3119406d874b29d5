"""The web page at ``GET /``: one self-contained HTML file (``page.html``: no CDN, no build
step) that uploads photos to ``POST /v1/detect`` at the server's lowest threshold, draws the
boxes with names and scores, counts products per class, re-filters by a confidence slider in
the browser (no new request) and downloads the shown detections as JSON or CSV."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def page_html() -> str:
    return resources.files("detect.serve").joinpath("page.html").read_text(encoding="utf-8")
