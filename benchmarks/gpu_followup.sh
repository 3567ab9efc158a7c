#!/usr/bin/env bash
# The questions the GPU runs so far left open, in ONE device call of about 8 minutes at most. The 2026-12-04
# H200 runs (benchmarks/results/gpu-h200-2026-12-04*.md) and the 2026-12-05 H100 run
# (benchmarks/results/gpu-h100-2026-12-05.md: the CUDA export through the native runner, the demo's student
# steps on NCCL, the steps per precision) answered the earlier ones; the script that ran there is this file's
# version of commit 73b1cda. What it runs now:
#
#   PYTHON=python3 bash benchmarks/gpu_followup.sh     # writes $OUT (default ./gpu-out)
#
# Parts, capped in seconds, in the order of what a cut-off call should still bring back:
#   install      20  fastcae without dependencies
#   versions     10
#   fidelity    150  MobileNetV3 (torchvision) -> plain CNN, 60 s budget, seed 0, the default plan: the first
#                    fidelity run on a GPU (its teacher is trained there first, about 30 s)
#   fidelity-lr  95  the same with the generator at lr_g 0.01 (the CPU default since 2026-12-05; unmeasured on a
#                    GPU, which keeps 0.004)
#   fidelity-eager 95 the same with compile=False: on a GPU the steps compile under CUDA graphs inside the
#                    budget (the demo's first epoch took ~40 s there), which may cost a 60 s run more than it gains
#   distributed  90  the data-parallel benchmark at 1 GPU (pytest benchmarks/test_bench_distributed.py)
#   deploy      120  teacher against student at inference on the GPU, the digits pair (test_bench_deploy.py -k
#                    digits), the exported form checked by the runner built in the background
# Each fidelity run's record holds its compile mode and the time at the end of each epoch.
source "$(dirname "$0")/gpu_common.sh"
: > "$LOG"
BUDGET=${FIDELITY_BUDGET:-60}  # a CPU dry run of this script sets a shorter one
part install 20 bash -c "$INSTALL"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
part versions 10 $PY benchmarks/gpu_check.py versions "$LOG"

(cmake -S . -B /tmp/native-build -DPython3_EXECUTABLE="$(command -v $PY)" > "$OUT/native.txt" 2>&1 && \
 cmake --build /tmp/native-build -j 4 >> "$OUT/native.txt" 2>&1
 echo "build rc=$? at ${SECONDS}s" >> "$OUT/native.txt") &
build_pid=$!

fidelity() {  # ARM CAP [--set K=V]
  local arm=$1 cap=$2; shift 2
  part "fidelity-$arm" "$cap" $PY -m benchmarks.fidelity.run --no-baseline --cases mbv3-grey32 --budgets "$BUDGET" \
    --seeds 0 --out "$OUT/fidelity.json" "$@" >> "$OUT/fidelity.txt" 2>&1
}
fidelity default 150
fidelity lr 95 --set lr_g=0.01
fidelity eager 95 --set compile=false

part distributed 90 $PY -m pytest benchmarks/test_bench_distributed.py --benchmark-only -q -p no:cacheprovider \
  --benchmark-json "$OUT/distributed.json" > "$OUT/distributed.txt" 2>&1

wait $build_pid
part deploy 120 env FASTCAE_RUNNER=/tmp/native-build/fastcae-run $PY -m pytest benchmarks/test_bench_deploy.py \
  --benchmark-only -q -p no:cacheprovider -k digits -rs --benchmark-json "$OUT/deploy.json" \
  >> "$OUT/distributed.txt" 2>&1

{ $PY -m benchmarks.fidelity.run --table "$OUT/fidelity.json"
  for f in distributed deploy; do [ -s "$OUT/$f.json" ] && $PY benchmarks/summarize.py "$OUT/$f.json"; done
} > "$OUT/summary.md" 2>&1
cat "$OUT/summary.md"; tail -n 5 "$OUT/native.txt" "$OUT/distributed.txt"; cat "$LOG"
