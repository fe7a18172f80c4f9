#!/usr/bin/env bash
# One-command setup on a fresh Debian machine (Python 3.10/3.11, no GPU needed):
#   1. the Debian GL libraries for headless MuJoCo rendering (EGL via Mesa, OSMesa fallback),
#   2. a virtual environment at .venv with the pinned requirements and clad_lite (editable).
# Idempotent: a second run checks, finds nothing to do, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")"

GL_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libosmesa6 libglib2.0-0)
missing=()
for package in "${GL_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "[setup] installing Debian GL libraries: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "[setup] need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
        SUDO=sudo
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "[setup] Debian GL libraries present"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info[:2] in ((3, 10), (3, 11)), sys.version' || {
        echo "[setup] LIBERO's pinned physics (mujoco 2.3.7, numpy 1.26.4) needs Python 3.10 or 3.11; set PYTHON=" >&2; exit 1; }
    echo "[setup] creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi

# reinstall only when the pins or the package metadata changed
stamp=.venv/.clad_lite_requirements
wanted=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "[setup] installing pinned requirements into .venv (a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
    echo "$wanted" > "$stamp"
else
    echo "[setup] .venv is up to date"
fi
echo "[setup] done: activate with 'source .venv/bin/activate', check with '.venv/bin/python -m clad_lite info'"
