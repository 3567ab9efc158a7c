#!/usr/bin/env bash
# The GPU check: what a session that draws a GPU runs first, in ONE device call of at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # writes $OUT (default ./gpu-out): check.jsonl, tests.txt,
#                                           # profile-*.json/md, summary.md
#
# Parts, each capped (seconds) so that a slow part cannot eat the others, each writing as it goes so a cut-off
# run still returns what it measured:
#   install   20  fastcae without dependencies (the GPU image brings its own torch and triton)
#   tests    170  the kernel tests, compiled on the GPU (no interpreter), with triton's version recorded
#   ops       60  each fused op, forward + backward, against eager and torch.compile; bn_stats_loss to its floor
#   steps    120  student (512) and generator (400) steps, ResNet-34 -> ResNet-18, eager / compiled / CUDA
#                 graphs, fp32 and bf16; whether CUDA graphs were really captured
#   profile   90  a 60-second NVML-profiled cae run with the throughput report
#   summary   10  ratios against the targets, GPU-hours of the CIFAR presets
# Sum of caps: 470 s. The longer parts of gpu_session.sh stay for deeper work.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
LOG="$OUT/check.jsonl"
: > "$LOG"
part() { local name=$1 cap=$2; shift 2; local t0=$SECONDS; timeout --kill-after=5 "$cap" "$@"; local rc=$?
         echo "{\"part\": \"timing\", \"name\": \"$name\", \"seconds\": $((SECONDS - t0)), \"rc\": $rc}" >> "$LOG"; }

part install 20 bash -c "$PY -c 'import fastcae' 2>/dev/null || $PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
part versions 10 $PY benchmarks/gpu_check.py versions "$LOG"
part tests 170 bash -c "$PY -m pytest -q -p no:cacheprovider tests/kernels --ignore=tests/kernels/test_check.py > '$OUT/tests.txt' 2>&1"
summary=$(grep -E "passed|failed|error" "$OUT/tests.txt" | tail -1)
echo "{\"part\": \"tests\", \"summary\": \"${summary//\"/}\"}" >> "$LOG"
part ops 60 $PY benchmarks/gpu_check.py ops "$LOG"
part steps 120 $PY benchmarks/gpu_check.py steps "$LOG"
part profile 90 bash -c "$PY -c \"import torch; from fastcae import create_model; \
torch.save(create_model('resnet34', num_classes=10).state_dict(), '/tmp/r34.pt')\" && \
$PY -m fastcae profile --preset cifar10-resnet34-resnet18 --teacher /tmp/r34.pt --out /tmp/profile-run \
  --report '$OUT/profile-cifar10-r34-r18.json' --no-progress --set max_seconds=60 --set text_encoder=random \
  > '$OUT/profile.txt' 2>&1"
part summary 10 bash -c "$PY benchmarks/gpu_check.py summary '$LOG' | tee '$OUT/summary.md'"
