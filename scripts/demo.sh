#!/usr/bin/env bash
# Set up .venv and run the main job on the bundled example clip (no dataset needed):
#   train a tiny teacher (smoke budget), export it to ONNX, run it in closed loop over DDS
#   (motion streamer -> policy node -> simulation bridge, lockstep, 5 s), render the result.
# Results land in out/demo (or the folder given as $1):
#   replay/            the reference clip replayed kinematically (video, contact sheet, plots)
#   pipeline/          the smoke training run (checkpoints, learning curve, metrics, report.json)
#   policy.onnx        the teacher with its deployment contract
#   report.json        the closed loop: ticks, missed ticks, latency, E_h / E_o, safe-hold events
#   closed_loop.npz    per-tick E_h / E_o and the simulated trajectory (a clip `intermimic replay` reads)
#   closed_loop/       video of the simulated trajectory (closed_loop/replay.mp4) and plots
#   logs/              the three nodes' logs and the resolved node parameters
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
OUT=${1:-out/demo}
mkdir -p "$OUT"
PY=.venv/bin/python
IM=.venv/bin/intermimic

echo "demo: 1/4 reference clip, replayed kinematically"
$IM replay --example --out "$OUT/replay" --quiet

echo "demo: 2/4 a tiny teacher on the example clip (smoke pipeline), exported to ONNX"
if [ -f training/run_pipeline.py ] && [ -f config/pipeline/smoke.yaml ]; then
  $PY training/run_pipeline.py --config config/pipeline/smoke.yaml --out "$OUT/pipeline"
  # the pipeline's export stage wrote the ONNX file; else export the teacher's checkpoint here
  read -r KIND FILE < <($PY -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(*(("onnx", r["exports"][0]["onnx"]) if r.get("exports") else ("ckpt", r["teachers"][0]["checkpoint"])))' \
    "$OUT/pipeline/report.json")
  if [ "$KIND" = onnx ]; then cp "$FILE" "$OUT/policy.onnx"; else $IM export "$FILE" --out "$OUT/policy.onnx"; fi
else
  echo "demo: no smoke training pipeline here: exporting an UNTRAINED (random-init) teacher instead" >&2
  $IM export --init random --kind teacher --out "$OUT/policy.onnx"
fi

echo "demo: 3/4 closed loop over DDS: motion streamer -> policy node -> simulation bridge (lockstep, 5 s)"
$IM launch sim_hoi --example --policy "$OUT/policy.onnx" --lockstep --duration 5 \
  --report "$OUT/report.json" --record "$OUT/closed_loop.npz" --log-dir "$OUT/logs"

echo "demo: 4/4 video of the closed-loop trajectory"
$IM replay "$OUT/closed_loop.npz" --out "$OUT/closed_loop" --quiet

echo "demo: results in $OUT (report: $OUT/report.json, video: $OUT/closed_loop/replay.mp4)"
