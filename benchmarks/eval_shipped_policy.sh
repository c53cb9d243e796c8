#!/usr/bin/env bash
# Robustness of the shipped example policy: `intermimic eval --example` without and with each
# perturbation kind; one JSON report per setting in benchmarks/results/shipped_policy/.
# Usage: bash benchmarks/eval_shipped_policy.sh [POLICY.onnx]
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=${1:-intermimic_policy/assets/policies/example_teacher.onnx}
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/shipped_policy
mkdir -p "$OUT"
run() {
  local name=$1; shift
  $PY -m intermimic_policy.cli eval --example --policy "$POLICY" --no-progress --json "$OUT/$name.json" "$@" \
    | grep "^policy" | sed "s/^/$name: /"
}
run nominal
run heavier_object --perturb object_mass=1.2
run slippery_object --perturb object_friction=0.8
run heavier_and_slippery --perturb object_mass=1.2 --perturb object_friction=0.8
run slippery_floor --perturb floor_friction=0.8
run action_delay_1 --perturb action_delay=1
run obs_noise_0.01 --perturb obs_noise=0.01
run push_0.3 --perturb push=0.3
