#!/usr/bin/env bash
# Set up .venv and run the main job on the bundled example clip (no dataset needed):
#   1. replay the reference clip (reach, grip, lift a 2.5 kg box 25 cm, hold, put it down; 5 s);
#   2. show the training pipeline on a short budget (smoke config, a few minutes of CPU);
#   3. run the SHIPPED policy (intermimic_policy/assets/policies/example_teacher.onnx, trained by
#      config/pipeline/example.yaml; its contract records how) in closed loop over DDS
#      (motion streamer -> policy node -> simulation bridge, lockstep) for the whole clip;
#   4. render the simulated trajectory.
# Results land in out/demo (or the folder given as $1):
#   replay/            the reference clip replayed kinematically (video, contact sheet, plots)
#   pipeline/          the smoke training run (checkpoint, learning curve, metrics, report.json)
#   policy.onnx        the policy the closed loop ran, with its deployment contract
#   report.json        the closed loop: success, duration, object lift, ticks, latency, E_h / E_o, safe holds
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
SHIPPED=intermimic_policy/assets/policies/example_teacher.onnx

echo "demo: 1/4 reference clip, replayed kinematically"
$IM replay --example --out "$OUT/replay" --quiet

echo "demo: 2/4 the training pipeline on a short budget (config/pipeline/smoke.yaml; the shipped"
echo "      policy came from config/pipeline/example.yaml: ~8 min on 2 busy CPU cores)"
$PY training/run_pipeline.py --config config/pipeline/smoke.yaml --out "$OUT/pipeline" --no-progress

if [ -f "$SHIPPED" ]; then
  cp "$SHIPPED" "$OUT/policy.onnx"
  echo "demo: 3/4 closed loop of the shipped policy over DDS (lockstep, the whole clip); its provenance:"
  $PY -c 'import json, sys
from intermimic_policy.runtime.base import read_policy_file
print(json.dumps(read_policy_file(sys.argv[1]).contract.provenance, indent=2))' "$OUT/policy.onnx" || true
else
  echo "demo: no shipped policy ($SHIPPED): running the smoke teacher instead" >&2
  FILE=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["exports"][0]["onnx"])' "$OUT/pipeline/report.json")
  cp "$FILE" "$OUT/policy.onnx"
  echo "demo: 3/4 closed loop of the smoke teacher over DDS (lockstep, the whole clip)"
fi
# the whole clip: from frame 0 to its last frame (150 frames at 30 Hz)
DURATION=$($PY -c "print(f\"{149 / 30.0:.4f}\")")
$IM launch sim_hoi --example --policy "$OUT/policy.onnx" --lockstep --duration "$DURATION" --quiet \
  --report "$OUT/report.json" --record "$OUT/closed_loop.npz" --log-dir "$OUT/logs"

echo "demo: 4/4 video of the closed-loop trajectory"
$IM replay "$OUT/closed_loop.npz" --out "$OUT/closed_loop" --quiet

$PY - "$OUT/report.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
ok = str(r.get("success")).lower()
print(f"demo: success {ok}: {r.get('duration_s'):.2f} of {r.get('clip_duration_s'):.2f} s, "
      f"object lift {r.get('object_lift_cm'):.1f} cm (reference {r.get('reference_lift_cm'):.1f} cm), "
      f"E_h {r.get('E_h_cm'):.2f} cm, E_o {r.get('E_o_cm'):.2f} cm, missed ticks {r.get('missed_ticks')}")
PYEOF
echo "demo: results in $OUT (report: $OUT/report.json, video: $OUT/closed_loop/replay.mp4)"
