#!/usr/bin/env bash
# Install retail-detect into ./.venv (created if absent), with the test and export extras.
#
# Why a script and not a bare `pip install`: albumentations pulls in opencv-python-headless,
# and selective search needs opencv-contrib-python-headless; both wheels write the same
# `cv2` folder, and the last one installed wins. Reinstalling contrib last makes the order
# deterministic (tests/test_ximgproc.py fails when cv2.ximgproc is missing).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
cv=$("$VENV/bin/python" -m pip show opencv-python-headless 2>/dev/null | sed -n 's/^Version: //p')
"$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "opencv-contrib-python-headless${cv:+==$cv}" \
  || "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps opencv-contrib-python-headless
"$VENV/bin/python" -c "import cv2, torch, albumentations; assert hasattr(cv2, 'ximgproc'), 'cv2.ximgproc missing'; print('retail-detect installed: torch', torch.__version__, '| OpenCV', cv2.__version__, '(contrib) | albumentations', albumentations.__version__)"
