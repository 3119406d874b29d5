"""The web page of ``detect serve`` in a real browser: Debian's headless Chromium driven by
Playwright (``pip install playwright``, the ``browser`` extra; the browser comes from apt,
``apt-get install chromium``, never from ``playwright install``). Skipped when either is missing.

Two synthetic shelves are picked through the page's file input; the test checks the drawn
results, the counts table, that the confidence slider re-filters without a new request, and
the JSON and CSV downloads, and saves a screenshot (its path is printed; ``-s`` shows it)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import cv2
import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from detect.serve.app import create_app  # noqa: E402
from detect.serve.service import ServeConfig  # noqa: E402
from _serve_helpers import running  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no chromium on PATH (apt-get install chromium)")


@pytest.fixture(scope="module")
def server():
    from detect.infer.weights import DEFAULT_WEIGHTS

    weights = DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None
    if weights is None:
        pytest.skip("the shipped weights are missing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = create_app(ServeConfig(weights=str(weights), device="cpu", conf=0.05))
    with running(app) as url:
        yield url


def shelves(folder: Path) -> list[Path]:
    from detect.data.synth import render_scene

    paths = []
    for i in range(2):
        p = folder / f"shelf {i}.jpg"
        cv2.imwrite(str(p), render_scene(2026, i, size=480, kind="shelf").image)
        paths.append(p)
    return paths


def test_page_in_chromium(server, tmp_path):
    files = shelves(tmp_path)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            errors, posts = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('classes')", timeout=20000)
            page.set_input_files("#pick", [str(p) for p in files])
            page.wait_for_function("document.querySelectorAll('.result canvas').length === 2", timeout=60000)
            page.wait_for_function("document.getElementById('status').textContent.includes('done')", timeout=60000)
            assert len(posts) == 2 and all("/v1/detect" in u for u in posts)
            total = int(page.inner_text("#total"))
            assert total > 0, "the shipped weights find products on synthetic shelves"
            rows = page.eval_on_selector_all("#counts tbody tr", "rs => rs.map(r => [r.cells[0].textContent, +r.cells[1].textContent])")
            assert sum(n for _, n in rows) == total
            # the canvas shows the photo with boxes drawn over it (not blank)
            painted = page.evaluate("""() => { const c = document.querySelector('.result canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s / (d.length / 4); }""")
            assert painted > 10

            with page.expect_download() as dl:
                page.click("#json")
            shown = json.loads(Path(dl.value.path()).read_text(encoding="utf-8"))
            assert [r["source"] for r in sorted(shown, key=lambda r: r["source"])] == ["shelf 0.jpg", "shelf 1.jpg"]
            assert sum(len(r["detections"]) for r in shown) == total
            with page.expect_download() as dl:
                page.click("#csv")
            table = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text(encoding="utf-8"))))
            assert len(table) == total and set(table[0]) == {"source", "x1", "y1", "x2", "y2", "score", "label", "name"}

            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            # the slider filters in the browser: fewer boxes at a high threshold, no new request
            page.eval_on_selector("#conf", "s => { s.value = 0.95; s.dispatchEvent(new Event('input')); }")
            assert int(page.inner_text("#total")) < total
            assert page.inner_text("#confval") == "0.95"
            page.eval_on_selector("#conf", "s => { s.value = 0.25; s.dispatchEvent(new Event('input')); }")
            assert int(page.inner_text("#total")) == total
            assert len(posts) == 2 and not errors, errors

            bad = tmp_path / "broken.jpg"
            bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
            page.set_input_files("#pick", [str(bad)])
            page.wait_for_selector(".result .error", timeout=20000)
            assert "not a readable image" in page.inner_text(".result .error")
        finally:
            browser.close()
    shot = tmp_path / "page.png"
    out = Path(__file__).resolve().parents[1] / "bench" / "out"
    if out.is_dir():  # a copy where people look, when this checkout has the folder
        shutil.copy(shot, out / "serve_page.png")
    print(f"screenshot: {shot}")
