"""``detect serve`` as the ML backend of a real Label Studio (issue 22): slow, ``RUN_SLOW=1``.

Label Studio cannot share the project's venv (label-studio-sdk pins an older numpy and OpenCV),
so it lives in its own: ``bash tools/label_studio_env.sh`` makes ``.venv-label-studio``
(``$LABEL_STUDIO_VENV`` elsewhere); without it the test skips and says so.

Both servers run on 127.0.0.1 at free ports, Label Studio with its data in ``tmp_path``, a user
and legacy API token made by ``label-studio start --username/--password/--user-token``, and its
reporting off (Sentry, analytics, the PyPI version check). ``_label_studio_session.py``, run
with Label Studio's Python, creates a project through the SDK (``RectangleLabels`` over the
model's classes), uploads a ``detect synth`` shelf, connects ``detect serve`` as the ML backend
and runs "Retrieve predictions"; the test then checks what Label Studio stores and shows: one
prediction with the served ``model_version``, ``rectanglelabels`` regions in percent of the image
from its top-left corner with the config's labels, equal to ``Predictor.predict`` on that image
(the service's default conf 0.25) within a pixel. Every wait is bounded; both servers are killed
(their process groups) at the end. About 1-4 minutes on 2 loaded cores, mostly Label Studio's
first start (its database migrations)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = Path(os.environ.get("LABEL_STUDIO_VENV") or ROOT / ".venv-label-studio")
LS_BIN, LS_PY = LS_VENV / "bin" / "label-studio", LS_VENV / "bin" / "python"
SESSION = Path(__file__).with_name("_label_studio_session.py")
STARTUP_S = {"detect serve": 120.0, "label studio": 600.0}  # Label Studio migrates a new database
SESSION_S = 300.0
SERVE_CONF = 0.25  # detect serve's conf for a request that gives none (ServeConfig.default_conf)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (LS_BIN.is_file() and LS_PY.is_file()),
                       reason=f"no Label Studio venv at {LS_VENV}: make it with `bash tools/label_studio_env.sh`"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.is_file() else ""


@contextlib.contextmanager
def server(name: str, cmd: list[str], env: dict, url: str, log: Path) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group until the block ends; wait (bounded) until ``url``
    answers 200. Its output goes to ``log``, shown when it fails to start."""
    import httpx

    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=log.parent, start_new_session=True)
    try:
        end = time.monotonic() + STARTUP_S[name]
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} before answering {url}:\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=5.0).status_code == 200:
                    break
            if time.monotonic() > end:
                pytest.fail(f"{name} did not answer {url} within {STARTUP_S[name]:.0f} s:\n{tail(log)}")
            time.sleep(1.0)
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
                break


def shelf_photo(folder: Path) -> Path:
    """One shelf photo written by ``detect synth`` (seed 0: 360 x 480, not square)."""
    subprocess.run([sys.executable, "-m", "detect", "synth", str(folder), "--images", "1", "--size", "480",
                    "--seed", "0"], check=True, capture_output=True, timeout=120, env=project_env())
    (photo,) = sorted((folder / "JPEGImages").glob("*.jpg"))
    return photo


def project_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def label_studio_env(data: Path, url: str) -> dict:
    """Label Studio's settings for a private run on this machine (no project path, no reporting)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data), "XDG_DATA_HOME": str(data), "LABEL_STUDIO_HOST": url,
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "SECRET_KEY": secrets.token_hex(32),
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false",
        # the ML backend is on 127.0.0.1: Label Studio refuses loopback backends (and their
        # webhooks) unless told this is a local setup
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
    })
    return env


def served_version(weights: Path) -> str:
    """``detect serve``'s model_version: the weights' stem and the first 8 hex of its SHA-256."""
    return f"{weights.stem}-{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}"


def reference(predictor, image: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``Predictor.predict``'s boxes [K, 4] (x1 y1 x2 y2 pixels) and class names at the service's conf."""
    det = predictor.predict([image])[0]
    keep = np.asarray(det.scores) >= SERVE_CONF
    return np.asarray(det.boxes)[keep], [predictor.classes[i] for i in np.asarray(det.labels)[keep]]


def regions_in_pixels(result: list[dict], w: int, h: int, labels: set[str]) -> tuple[np.ndarray, list[str]]:
    """Check Label Studio's stored regions and give their boxes [N, 4] in pixels and their labels."""
    boxes, names = [], []
    for region in result:
        v = region["value"]
        assert (region["type"], region["from_name"], region["to_name"]) == ("rectanglelabels", "label", "image")
        assert (region["original_width"], region["original_height"]) == (w, h)
        assert len(v["rectanglelabels"]) == 1 and v["rectanglelabels"][0] in labels
        assert 0 <= v["x"] and 0 <= v["y"] and v["x"] + v["width"] <= 100 + 1e-6 and v["y"] + v["height"] <= 100 + 1e-6
        assert 0 < region["score"] <= 1 and v["rotation"] == 0
        # percent of the image from its top-left corner -> pixels
        boxes.append([v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100])
        names.append(v["rectanglelabels"][0])
    return np.array(boxes).reshape(-1, 4), names


def session(tmp_path: Path, photo: Path, classes: list[str]) -> dict:
    """Both servers up, the SDK session run against them; what Label Studio then holds."""
    serve_port, ls_port = free_port(), free_port()
    serve_url, ls_url = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{ls_port}"
    token, data = secrets.token_hex(20), tmp_path / "ls"
    data.mkdir()
    serve_cmd = [sys.executable, "-m", "detect", "serve", "--host", "127.0.0.1", "--port", str(serve_port),
                 "--device", "cpu"]
    ls_cmd = [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(ls_port),
              "--data-dir", str(data), "--username", "detect@example.com",
              "--password", secrets.token_hex(12), "--user-token", token, "--enable-legacy-api-token"]
    logs = tmp_path / "serve.log", tmp_path / "label-studio.log"
    with server("detect serve", serve_cmd, project_env(), serve_url + "/health", logs[0]), \
            server("label studio", ls_cmd, label_studio_env(data, ls_url), ls_url + "/health", logs[1]):
        run = subprocess.run([str(LS_PY), str(SESSION), ls_url, token, serve_url, str(photo), *classes],
                             capture_output=True, text=True, timeout=SESSION_S, cwd=tmp_path,
                             env=label_studio_env(data, ls_url))
    assert run.returncode == 0, (f"the SDK session failed:\n{run.stderr[-4000:]}\n--- label studio:\n"
                                 f"{tail(logs[1])}\n--- detect serve:\n{tail(logs[0])}")
    return json.loads(run.stdout)


def test_label_studio_shows_the_backends_boxes(tmp_path):
    from detect.infer.predict import Predictor
    from detect.infer.weights import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("the shipped weights are missing")
    photo = shelf_photo(tmp_path / "synth")
    image = cv2.imread(str(photo))
    h, w = image.shape[:2]
    assert w != h, "a square photo would hide swapped x/y or width/height"
    predictor = Predictor(DEFAULT_WEIGHTS, device="cpu", conf=0.05, iou=0.45, max_det=1000)
    ref_boxes, ref_labels = reference(predictor, image)
    assert len(ref_labels) > 0, "the shipped weights find products on a synthetic shelf"

    got = session(tmp_path, photo, predictor.classes)

    version = served_version(DEFAULT_WEIGHTS)
    assert got["ml_backend"]["state"] == "CO", got["ml_backend"]  # connected: /health and /setup answered
    assert got["ml_backend"]["model_version"] == version
    assert got["task"]["data"]["image"].startswith("/data/upload/")  # read back from Label Studio with the token
    (pred,) = got["predictions"]
    assert pred["model_version"] == version
    boxes, names = regions_in_pixels(pred["result"], w, h, set(predictor.classes))
    assert len(boxes) == len(ref_boxes), (names, ref_labels)
    # each of Predictor's boxes is one of Label Studio's, with its label, within a pixel
    used = set()
    for box, name in zip(ref_boxes, ref_labels):
        dist = np.abs(boxes - box).max(axis=1)  # [N]
        dist[[n != name or j in used for j, n in enumerate(names)]] = np.inf
        j = int(dist.argmin())
        assert dist[j] <= 1.0, f"Predictor's {name} {box.round(1).tolist()} is not in Label Studio: {pred['result']}"
        used.add(j)
