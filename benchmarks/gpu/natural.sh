#!/usr/bin/env bash
# The natural-images GPU check: a public CIFAR-10 ResNet-56 distilled into a fresh ResNet-20 by fastcae with
# only a 5-minute budget (compiling included), the model FLOP utilisation of the two steps, then NAYER's
# official code on the same GPU for the same 5 minutes. Two 5-minute runs do not fit one device call (600 s at
# most), so it runs as TWO calls back to back on the warm machine, about 7.5 + 6.5 minutes:
#
#   bash benchmarks/gpu/prepare_natural.sh           # here, once: fills .gpu-carry/ (git-ignored)
#   device run, carry [".gpu-carry"]:  PYTHON=python3 bash benchmarks/gpu/natural.sh                # writes $OUT
#   device run, carry [".gpu-carry"]:  PYTHON=python3 PARTS="install nayer" bash benchmarks/gpu/natural.sh
#
# Parts, capped in seconds, in the order of what a cut-off call should still bring back; every part writes
# its results as they come:
#   install     20  fastcae without dependencies (the GPU image brings torch and triton)
#   fastcae    360  fidelity run.py --tier natural, 300 s budget, seed 0: the planner's schedule on the GPU (its
#                   step costs measured there; CUDA graphs and bf16 by default); accuracy after every epoch on
#                   1,000 test images (the curve), all 10,000 at the end; the profile report (NVML utilisation
#                   and power per phase, synthesis included) beside it
#   mfu         60  benchmarks/gpu/step_mfu.py: FLOPs of one student and one generator step (FlopCounterMode)
#                   over their CUDA-event medians, against the card's bf16 dense peak
#   nayer      390  benchmarks.peers.nayer --budget 300: NAYER at commit c6bedcd, unmodified, through the shim;
#                   calibrated on this GPU at its recipe's batches (400 / 512), schedule fitted to 300 s (its
#                   calibration and the teacher's check come on top, uncounted)
# PARTS (default "install fastcae mfu") picks which run.
# On a CPU it dry-runs with BUDGET=60 PEERS=/tmp/fastcae-peers (the parts' logic, not their numbers; PEERS: an
# existing peers root whose site/ already holds NAYER's dependencies for this Python).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
LOG="$OUT/parts.jsonl"
: > "$LOG"
part() { local name=$1 cap=$2; shift 2; local t0=$SECONDS; timeout --kill-after=5 "$cap" "$@"; local rc=$?
         echo "{\"part\": \"$name\", \"seconds\": $((SECONDS - t0)), \"rc\": $rc}" >> "$LOG"; }
CARRY=${CARRY:-.gpu-carry}
BUDGET=${BUDGET:-300}
PARTS=${PARTS:-install fastcae mfu}
want() { [[ " $PARTS " == *" $1 "* ]]; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PEERS=${PEERS:-/tmp/peers}
export FASTCAE_SHARED_DATA="$PWD/$CARRY/data" FASTCAE_PEERS_WHEELS="$PWD/$CARRY/wheels"
want install && part install 20 bash -c "(cd / && $PY -c 'import fastcae.kernels' 2>/dev/null) || $PY -m pip install -q --no-deps \
  --no-build-isolation -e . > /dev/null"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
$PY -c "import torch, triton, sys; print(sys.version.split()[0], torch.__version__, triton.__version__)" \
  > "$OUT/versions.txt" 2>&1
want fastcae && part fastcae $((BUDGET + 60)) $PY -m benchmarks.fidelity.run --tier natural \
  --cases cifar10-resnet56-resnet20 --budgets "$BUDGET" --seeds 0 --no-baseline --out "$OUT/natural.json" \
  --profile "$OUT" > "$OUT/fastcae.txt" 2>&1
want mfu && part mfu 60 $PY -m benchmarks.gpu.step_mfu --out "$OUT/mfu.json" > "$OUT/mfu.txt" 2>&1
want nayer && part nayer $((BUDGET + 90)) $PY -m benchmarks.peers.nayer --budget "$BUDGET" --seed 0 \
  --nayer-source "$PWD/$CARRY/nayer.git" --nayer-dir "$PEERS/nayer-gpu" --deps-dir "$PEERS/site" \
  --work-dir "$PEERS/work" --results "$OUT/nayer.json" > "$OUT/nayer.txt" 2>&1
cat "$LOG"
