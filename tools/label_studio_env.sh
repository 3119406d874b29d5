#!/usr/bin/env bash
# A separate virtual environment holding Label Studio, for tests/test_label_studio_real.py.
#
#   bash tools/label_studio_env.sh            # create/refresh .venv-label-studio from the lock
#   bash tools/label_studio_env.sh --lock     # re-resolve label-studio==$LS_VERSION, rewrite the lock
#
# Why its own venv: label-studio 1.23.2 pins label-studio-sdk 2.1.2, which needs numpy < 2.3 and
# opencv-python-headless < 4.13 (older than the project's), and its resolver falls back to building
# old pandas from source in the project's venv. Never install it into .venv or add it to an extra.
#
# Why 1.23.2: the newest release on PyPI (December 2026); with CPython 3.11 on x86_64 Linux every
# dependency is a binary wheel except five pure-Python source-only packages (attr 0.3.1,
# drf-flex-fields, drf-generators, ordered-set, django-ranged-fileresponse), built here with the
# locked setuptools/wheel and no build isolation: no compiler, nothing unpinned.
# Deterministic: tools/label_studio_requirements.txt pins every package with its SHA-256
# (pip --require-hashes --no-deps), made by --lock from pip's own resolution report.
#
# Environment: LABEL_STUDIO_VENV (default .venv-label-studio in the repository), PYTHON (default
# python3; the lock is for CPython 3.11 on x86_64 Linux, else run --lock first), LS_VERSION.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LABEL_STUDIO_VENV:-$ROOT/.venv-label-studio}"
PYTHON="${PYTHON:-python3}"
LS_VERSION="${LS_VERSION:-1.23.2}"
LOCK="$ROOT/tools/label_studio_requirements.txt"
# source-only on PyPI, pure Python (no compiler): the only packages allowed to build from source
SDISTS="attr,drf-flex-fields,drf-generators,ordered-set,django-ranged-fileresponse"

die() { echo "label_studio_env: $*" >&2; exit 1; }

[ "$#" -le 1 ] || die "usage: $0 [--lock]"
MODE="${1:-install}"
case "$MODE" in install|--lock) ;; *) die "usage: $0 [--lock]" ;; esac

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || die "cannot create $VENV with $PYTHON"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [ "$MODE" = "--lock" ]; then
    report="$(mktemp)"
    trap 'rm -f "$report"' EXIT
    "${PIP[@]}" install --dry-run --ignore-installed --prefer-binary --quiet --report "$report" \
        "label-studio==$LS_VERSION" || die "label-studio==$LS_VERSION does not resolve"
    "$VENV/bin/python" - "$report" "$LOCK" "$LS_VERSION" "$SDISTS" <<'EOF'
import json, re, sys

report, lock, version, sdists = sys.argv[1:]
allowed = {re.sub(r"[-_.]+", "-", s).lower() for s in sdists.split(",")}
r = json.load(open(report))
env = r["environment"]
lines = [f"# label-studio=={version} for CPython {env['python_version']} on {env['sys_platform']} "
         f"{env['platform_machine']}: made by tools/label_studio_env.sh --lock (pip's resolution report)"]
bad = []
for item in sorted(r["install"], key=lambda i: i["metadata"]["name"].lower()):
    name, ver = item["metadata"]["name"], item["metadata"]["version"]
    url = item["download_info"]["url"]
    if not url.endswith(".whl") and re.sub(r"[-_.]+", "-", name).lower() not in allowed:
        bad.append(f"{name} {ver} ({url})")
    lines.append(f"{name}=={ver} --hash=sha256:{item['download_info']['archive_info']['hashes']['sha256']}")
if bad:
    sys.exit("label_studio_env: source-only packages outside the pure-Python list: " + "; ".join(bad))
open(lock, "w").write("\n".join(lines) + "\n")
print(f"label_studio_env: wrote {lock} ({len(lines) - 1} packages)")
EOF
fi

[ -f "$LOCK" ] || die "$LOCK missing: run $0 --lock"
want="$(head -1 "$LOCK" | sed -n 's/.* for CPython \([0-9.]*\) on .*/\1/p')"
have="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$want" = "$have" ] || die "the lock is for Python $want, $VENV has $have: run $0 --lock (or PYTHON=python$want)"

# 1. the build tools the source-only packages need, 2. everything else, without build isolation
grep -E '^(setuptools|wheel)==' "$LOCK" > "$VENV/build-tools.txt"
"${PIP[@]}" install --quiet --require-hashes --no-deps --only-binary=:all: -r "$VENV/build-tools.txt"
"${PIP[@]}" install --quiet --require-hashes --no-deps --only-binary=:all: --no-binary="$SDISTS" \
    --no-build-isolation -r "$LOCK"
"${PIP[@]}" check
# (not `label-studio --version`: it sets up a database under ~/.local/share and asks PyPI for news)
v="$("$VENV/bin/python" -c 'import label_studio, label_studio_sdk; print(label_studio.__version__)')" ||
    die "label_studio does not import in $VENV"
echo "label_studio_env: label-studio $v in $VENV"
