#!/usr/bin/env bash
# Set up .venv and run the main job on the bundled example clip; results land in out/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
OUT=${1:-out/demo}
.venv/bin/intermimic replay --example --out "$OUT"
echo "demo: results in $OUT"
