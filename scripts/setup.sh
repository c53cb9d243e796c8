#!/usr/bin/env bash
# Create .venv at the repo root and install intermimic with everything its tests use.
# Safe to re-run: a finished install is detected by its stamp and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Debian's python3 ships without venv/ensurepip: install it when we can.
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "setup: $PY lacks venv; install python3-venv (sudo apt-get install python3-venv)" >&2; exit 1
  fi
fi

# Offscreen rendering (EGL or OSMesa) for videos; optional: without GL only plots are written.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! ldconfig -p 2>/dev/null | grep -qE 'libEGL_mesa\.so|libOSMesa\.so'; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 >/dev/null) \
      || echo "setup: could not install GL libraries; videos will be skipped (plots still written)" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.intermimic-installed
want=$(cat pyproject.toml setup.py | sha1sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch pulls gigabytes of CUDA wheels.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[dev,warp,retarget,smplx]"
  echo "$want" > "$stamp"
fi
