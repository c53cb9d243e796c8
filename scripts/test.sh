#!/usr/bin/env bash
# Set up .venv and run the whole test suite: lint, type check, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -ra "$@"
