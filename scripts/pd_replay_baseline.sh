#!/usr/bin/env bash
# PD-replay baseline (no learning: PD targets = the reference's next joint rotations) on every
# OMOMO_new clip, once with the default skeleton and once with the subject skeleton fitted to the
# clips (HOIEnvConfig.skeleton), then both summaries side by side.
#
#   INTERMIMIC_DATA=/path/to/data scripts/pd_replay_baseline.sh [OUT_DIR] [extra intermimic eval args]
set -euo pipefail
: "${INTERMIMIC_DATA:?set INTERMIMIC_DATA to the shared data folder}"
out="${1:-pd_replay_baseline}"
shift || true
clips="$INTERMIMIC_DATA/motions/OMOMO_new"
mkdir -p "$out"
for skeleton in default subject; do
    echo "== PD replay, $skeleton skeleton: $clips"
    intermimic eval "$clips" --policy pd-replay --skeleton "$skeleton" --json "$out/$skeleton.json" "$@"
done
python - "$out/default.json" "$out/subject.json" <<'PY'
import json, sys
rows = [json.load(open(p)) for p in sys.argv[1:]]
keys = ("clips_evaluated", "attempts", "successes", "success_rate", "mean_duration_s", "E_h_cm", "E_o_cm")
print(f"{'':<16}" + "".join(f"{k:>16}" for k in keys))
for r in rows:
    print(f"{r['skeleton']:<16}" + "".join(f"{r[k]:>16.3f}" if isinstance(r[k], float) else f"{r[k]:>16}" for k in keys))
PY
