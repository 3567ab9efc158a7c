#!/usr/bin/env bash
# The GPU checks, one entry point. On the GPU machine, from any directory:
#
#   PYTHON=python3 bash benchmarks/gpu/run.sh PART [PART...]    # writes under $OUT (default: gpu-out/ at the root)
#   bash benchmarks/gpu/run.sh --list                           # the parts and their caps, nothing run
#
# The standing GPU rule: a device call runs ONE prepared script (this one, with the parts named), every part
# under its own time cap so that a slow part cannot eat the others, every part writing its results as they come
# so that a call cut off still returns what it measured, and the machine is given back after the last call.
# The caps of the parts named in one call may add up to $CALL_SECONDS at most (default 580: a device call is
# 600 s at most); a call over it stops before running anything. The parts run in the order named (name first
# what a cut-off call should still bring back); `env` runs first in every call, named or not.
#
# Each part appends {"part", "cap", "seconds", "rc"} to $OUT/parts.jsonl (rc 124: cut off by its cap); the
# Python parts append their measurements to $OUT/check.jsonl (benchmarks/gpu/check.py). Both are appended to,
# so two calls into one $OUT add up.
#
# Parts, cap in seconds:
#   env              30  fastcae installed without dependencies (the GPU image brings its own torch and triton,
#                        and no network); gpu.csv (nvidia-smi); device and versions into check.jsonl
#   tests           170  tests/kernels compiled on the GPU (no interpreter) -> tests.txt
#   loop-tests      240  tests/test_steps.py, test_fused_end_to_end.py, test_profiling.py on the GPU
#                        (the compiled loop, CUDA graphs, NVML) -> loop-tests.txt
#   ops              60  each fused op, forward + backward, against eager and torch.compile at CIFAR shapes;
#                        bn_stats_loss against its bytes-moved floor
#   steps           120  student (512) and generator (400) steps, ResNet-34 -> ResNet-18, eager / compiled /
#                        CUDA graphs, fp32 and bf16; whether CUDA graphs were really captured
#   profile          90  a 60 s NVML-profiled cae run (random ResNet-34 teacher: throughput only)
#                        -> profile-cifar10-r34-r18.json, profile.txt
#   profile-long    480  the same for 420 s past a 20-epoch warm-up (steady epochs) -> profile-long-*.json
#   native          100  the native runner built by CMake against the image's torch; the demo's student
#                        exported for cuda, checked against Python and timed (--bench); DEMO_RUN names a
#                        finished demo run to export (else native/check_demo_student.py makes one, 30 s)
#   fidelity        150  MobileNetV3 (torchvision) -> plain CNN, $FIDELITY_BUDGET s (60), seed 0, the default
#                        plan (its teacher is trained first, about 30 s) -> fidelity.json, fidelity.txt
#   fidelity-lr      95  the same with the generator at lr_g 0.01 (the CPU default, unmeasured on a GPU)
#   fidelity-eager   95  the same with compile=False (compiling under CUDA graphs inside the budget may cost a
#                        60 s run more than it gains)
#   bench-kernels   480  pytest-benchmark: the fused ops and the pool (benchmarks/test_bench_{logit_loss,
#                        bn_stats_loss,supcon_loss,cend_linear,pool}.py) -> bench-kernels.json / .md
#   bench-steps     480  pytest-benchmark: the two steps per backend, GPU-hours (test_bench_steps.py)
#   bench-paradigms 480  pytest-benchmark: synthesis cost per kept image, time to accuracy
#   bench-epoch     480  pytest-benchmark: one CIFAR-scale epoch against the prior design
#   bench-distributed 90 pytest-benchmark: data-parallel throughput at the machine's GPU count
#   bench-deploy    150  pytest-benchmark: teacher against student at inference, the digits pair, the exported
#                        form checked by the native runner (built here first if `native` has not run)
#   natural         470  benchmarks/gpu/natural.sh (fastcae on the natural tier, 300 s, and the steps' MFU)
#                        -> natural/ (its own parts.jsonl); carry .gpu-carry (benchmarks/gpu/prepare_natural.sh)
#   natural-nayer   430  natural.sh's second call: NAYER's official code on the same GPU and budget
#   summary          10  the targets against what check.jsonl holds, GPU-hours of the CIFAR presets, the
#                        fidelity table and each bench-*.json's table -> summary.md
# Groups: check = tests ops steps profile native summary (a session's first call: 580 s of caps with env).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

declare -A CAP=(
  [env]=30 [tests]=170 [loop-tests]=240 [ops]=60 [steps]=120 [profile]=90 [profile-long]=480 [native]=100
  [fidelity]=150 [fidelity-lr]=95 [fidelity-eager]=95 [bench-kernels]=480 [bench-steps]=480
  [bench-paradigms]=480 [bench-epoch]=480 [bench-distributed]=90 [bench-deploy]=150 [natural]=470
  [natural-nayer]=430 [summary]=10
)
ORDER="env tests loop-tests ops steps profile profile-long native fidelity fidelity-lr fidelity-eager bench-kernels
bench-steps bench-paradigms bench-epoch bench-distributed bench-deploy natural natural-nayer summary"
declare -A GROUP=([check]="tests ops steps profile native summary")

usage() { echo "usage: bash benchmarks/gpu/run.sh PART [PART...] | --list"; echo "parts (cap in s):"
          for p in $ORDER; do printf '  %-18s %4s\n' "$p" "${CAP[$p]}"; done
          for g in "${!GROUP[@]}"; do echo "group $g = ${GROUP[$g]}"; done; }
[ $# -gt 0 ] || { usage >&2; exit 2; }
[ "$1" = --list ] || [ "$1" = -h ] || [ "$1" = --help ] && { usage; exit 0; }

# The parts named (groups expanded), env first and once, checked before anything runs.
parts=(env)
for arg in "$@"; do
  for p in ${GROUP[$arg]:-$arg}; do
    if [ -z "${CAP[$p]:-}" ]; then echo "unknown part: $p" >&2; usage >&2; exit 2; fi
    [[ " ${parts[*]} " == *" $p "* ]] || parts+=("$p")
  done
done
total=0; for p in "${parts[@]}"; do total=$((total + CAP[$p])); done
if [ "$total" -gt "${CALL_SECONDS:-580}" ]; then
  echo "the caps of ${parts[*]} add up to $total s, over ${CALL_SECONDS:-580} s: split them over two calls" >&2
  exit 2
fi

export OUT=${OUT:-gpu-out} PY=${PYTHON:-python}
mkdir -p "$OUT"
# The repository on the path first, so that `python -m benchmarks.X` and native/ import this checkout. The
# kernels sit at the top (kernels/) and only an install maps them to fastcae.kernels (pyproject's package-dir),
# so the path alone is not enough: env installs (editable, no dependencies) unless fastcae.kernels already
# imports from outside the repository.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BUILD=${NATIVE_BUILD:-/tmp/native-build} FIDELITY_BUDGET=${FIDELITY_BUDGET:-60}

part_env() {
  (cd / && $PY -c 'import fastcae.kernels' 2>/dev/null) || $PY -m pip install -q --no-deps --no-build-isolation -e . \
    > /dev/null
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
  $PY -m benchmarks.gpu.check versions "$OUT/check.jsonl"
}
part_tests() {
  $PY -m pytest -q -p no:cacheprovider tests/kernels --ignore=tests/kernels/test_check.py > "$OUT/tests.txt" 2>&1
  local rc=$? summary
  summary=$(grep -E "passed|failed|error" "$OUT/tests.txt" | tail -1)
  echo "{\"part\": \"tests\", \"summary\": \"${summary//\"/}\"}" >> "$OUT/check.jsonl"
  return $rc
}
part_loop_tests() {
  $PY -m pytest -q -p no:cacheprovider tests/test_steps.py tests/test_fused_end_to_end.py tests/test_profiling.py \
    > "$OUT/loop-tests.txt" 2>&1
}
part_ops() { $PY -m benchmarks.gpu.check ops "$OUT/check.jsonl"; }
part_steps() { $PY -m benchmarks.gpu.check steps "$OUT/check.jsonl"; }
profile() {  # NAME [--set K=V ...]: throughput only, a randomly initialised teacher costs what a trained one does
  local name=$1; shift
  $PY -c "import torch; from fastcae import create_model; \
torch.save(create_model('resnet34', num_classes=10).state_dict(), '/tmp/r34.pt')" &&
  $PY -m fastcae profile --preset cifar10-resnet34-resnet18 --teacher /tmp/r34.pt --out "/tmp/$name-run" \
    --report "$OUT/$name-cifar10-r34-r18.json" --no-progress --set text_encoder=random "$@" > "$OUT/$name.txt" 2>&1
}
part_profile() { profile profile --set max_seconds=60; }
part_profile_long() {
  profile profile-long --set epochs=24 --set warmup_epochs=20 --set warmup_synth_batches=2 --set max_seconds=420
}
build_native() {  # idempotent: a second call only checks that the runner is up to date
  local ninja=(); command -v ninja > /dev/null && ninja=(-G Ninja)
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" "${ninja[@]}" -DPython3_EXECUTABLE="$(command -v "$PY")"
  cmake --build "$BUILD" -j "$(nproc)"
}
part_native() {
  {
    build_native || return 1
    mkdir -p /tmp/demo-run
    [ -n "${DEMO_RUN:-}" ] && cp -r "$DEMO_RUN/." /tmp/demo-run/
    $PY native/check_demo_student.py /tmp/demo-run "$BUILD/fastcae-run" --device cuda &&
    "$BUILD/fastcae-run" /tmp/demo-run/student.pt2 /tmp/demo-run/digits_test.npy --bench --device cuda
  } >> "$OUT/native.txt" 2>&1
}
fidelity() {  # ARM [--set K=V]: every arm appends its run to fidelity.json
  local arm=$1; shift
  echo "== fidelity $arm" >> "$OUT/fidelity.txt"
  $PY -m benchmarks.fidelity.run --no-baseline --cases mbv3-grey32 --budgets "$FIDELITY_BUDGET" --seeds 0 \
    --out "$OUT/fidelity.json" "$@" >> "$OUT/fidelity.txt" 2>&1
}
part_fidelity() { fidelity default; }
part_fidelity_lr() { fidelity lr --set lr_g=0.01; }
part_fidelity_eager() { fidelity eager --set compile=false; }
bench() {  # NAME PYTEST-ARGS...: one pytest-benchmark run -> bench-NAME.json, its table -> bench-NAME.md
  local name=$1; shift
  $PY -m pytest "$@" --benchmark-only -q -p no:cacheprovider -p no:logging -rs \
    --benchmark-json "$OUT/bench-$name.json" > "$OUT/bench-$name.txt" 2>&1
  local rc=$?
  [ -s "$OUT/bench-$name.json" ] && $PY benchmarks/summarize.py "$OUT/bench-$name.json" > "$OUT/bench-$name.md"
  return $rc
}
part_bench_kernels() {
  bench kernels benchmarks/test_bench_logit_loss.py benchmarks/test_bench_bn_stats_loss.py \
    benchmarks/test_bench_supcon_loss.py benchmarks/test_bench_cend_linear.py benchmarks/test_bench_pool.py
}
part_bench_steps() { bench steps benchmarks/test_bench_steps.py; }
part_bench_paradigms() { bench paradigms benchmarks/test_bench_paradigms.py; }
part_bench_epoch() { bench epoch benchmarks/test_bench_epoch.py; }
part_bench_distributed() { bench distributed benchmarks/test_bench_distributed.py; }
part_bench_deploy() {
  build_native >> "$OUT/native.txt" 2>&1
  export FASTCAE_RUNNER="$BUILD/fastcae-run"
  bench deploy benchmarks/test_bench_deploy.py -k digits
}
part_natural() { OUT="$OUT/natural" PARTS="install fastcae mfu" bash benchmarks/gpu/natural.sh; }
part_natural_nayer() { OUT="$OUT/natural" PARTS="install nayer" bash benchmarks/gpu/natural.sh; }
part_summary() {
  {
    [ -s "$OUT/check.jsonl" ] && $PY -m benchmarks.gpu.check summary "$OUT/check.jsonl"
    [ -s "$OUT/fidelity.json" ] && $PY -m benchmarks.fidelity.run --table "$OUT/fidelity.json"
    for f in "$OUT"/bench-*.md; do [ -s "$f" ] && { echo; echo "## $(basename "$f" .md)"; cat "$f"; }; done
  } > "$OUT/summary.md" 2>&1
  cat "$OUT/summary.md"
}

export -f profile build_native fidelity bench $(compgen -A function part_)
for p in "${parts[@]}"; do
  t0=$SECONDS
  timeout --kill-after=5 "${CAP[$p]}" bash -c "part_${p//-/_}"
  rc=$?
  echo "{\"part\": \"$p\", \"cap\": ${CAP[$p]}, \"seconds\": $((SECONDS - t0)), \"rc\": $rc}" >> "$OUT/parts.jsonl"
done
cat "$OUT/parts.jsonl"
