#!/usr/bin/env bash
# All GPU figures of benchmarks/device_gpu_check.py in one run on a bare GPU machine, each part
# under a hard time limit, JSON and logs into $OUT (default ./out/gpu_check).
#
# The machine has torch/onnxruntime but not MuJoCo, Warp and the training dependencies; they come
# as py3.12 wheels in .whl/ (warp-lang as .whl/warp.tar.xz.part* split archives of its package
# folder without the CPU compiler, since its wheel alone exceeds the carry limit; parts may also
# wait in /tmp/stash from an earlier call: on the lent machine one call carried .whlA/ holding
# part00 and copied it to /tmp/stash, the next, on the same warm machine, carried .whl/ and
# .devdata/). Data: one clip, its object and the convex-decomposition cache in .devdata/.
#
#   [PARTS="latency env train"] bash benchmarks/device_gpu_check.sh [CLIP]
# (latency needs only torch and onnxruntime, so it can run in a call that carries no wheels)
set -u -o pipefail
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
CLIP=${1:-$PWD/.devdata/data/motions/OMOMO_new/sub2_largetable_000.pt}
SITE=/tmp/site
T_LAT=${T_LAT:-90} T_ENV=${T_ENV:-240} T_TRAIN=${T_TRAIN:-200}
log() { echo "== $(date -u +%T) $*"; }

PARTS=${PARTS:-latency env train}
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
log "setup (parts: $PARTS)"
if ! python3 -c "import mujoco, warp, rsl_rl" 2>/dev/null && { has env || has train; }; then
  mkdir -p "$SITE"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
  parts=$(for p in /tmp/stash/warp.tar.xz.part* .whl/warp.tar.xz.part*; do
    [ -f "$p" ] && echo "$(basename "$p") $p"; done | sort -u -k1,1 | cut -d' ' -f2)
  [ -n "$parts" ] && { cat $parts | xz -d -T0 | tar x -C "$SITE" || echo "warp archive incomplete"; }
  [ -f .whl/warp_distinfo.tar ] && tar xf .whl/warp_distinfo.tar -C "$SITE"
  export PYTHONPATH=$SITE
fi
export PYTHONPATH=$PWD:$PWD/benchmarks:${PYTHONPATH:-}
export INTERMIMIC_DATA=${INTERMIMIC_DATA:-$PWD/.devdata/data} XDG_CACHE_HOME=${XDG_CACHE_HOME:-$PWD/.devdata/cache}
export MUJOCO_GL=egl PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader || true
if has env || has train; then
  python3 -c "import torch, mujoco, warp, mujoco_warp, onnxruntime as o; print('torch', torch.__version__, \
torch.cuda.is_available(), 'mujoco', mujoco.__version__, 'warp', warp.__version__, 'mjw', mujoco_warp.__version__, \
'ort', o.__version__, o.get_available_providers())" || echo 'IMPORTS FAILED: env and train will fail'
fi

if has latency; then
log "latency (limit ${T_LAT}s)"
timeout "$T_LAT" python3 benchmarks/device_gpu_check.py latency --out "$OUT/latency.json" 2>&1 | tee "$OUT/latency.log"
fi
if has env; then
log "env (limit ${T_ENV}s)"
timeout "$T_ENV" python3 benchmarks/device_gpu_check.py env --out "$OUT/env.json" --clip "$CLIP" \
  --budget-s $((T_ENV - 70)) 2>&1 | grep -v "^Module " | tee "$OUT/env.log"
fi
if has train; then
log "train on Warp (limit ${T_TRAIN}s)"
timeout "$T_TRAIN" python3 benchmarks/device_gpu_check.py train --out "$OUT/train.json" --clip "$CLIP" \
  --worlds "${TRAIN_WORLDS:-4096}" --bc-rounds "${TRAIN_BC_ROUNDS:-2}" --minibatch "${TRAIN_MINIBATCH:-8192}" \
  --budget-s $((T_TRAIN - 70)) 2>&1 | grep -v "^Module " | tee "$OUT/train.log"
fi
log done
