#!/usr/bin/env bash
# The GPU check's open questions after the first one (benchmarks/results/gpu-h200-2026-12-04.md), in ONE
# device call of at most 9 minutes. Its 2026-12-04 runs answered most of them
# (benchmarks/results/gpu-h200-2026-12-04-followup.md); what it runs now is what they left for the next GPU:
#
#   bash benchmarks/gpu_followup.sh         # writes $OUT (default ./gpu-out)
#
# Foreground parts, capped in seconds, in the order of what a cut-off call should still bring back:
#   install     20  fastcae without dependencies
#   versions    10
#   nccl       150  the demo on NCCL as a world of one whose collectives run (benchmarks/nccl_smoke.py); the
#                   2026-12-04 run had a 30 s budget, which went to compiling: no student step ran
#   runner      40  the CUDA package (made by `export` below) loaded and timed by the native runner
#   load        40  the same package loaded by Python's aoti_load_package in a fresh process
#   export-cli 120  `fastcae export --device cuda --runner` on the NCCL demo's student, end to end (the runner
#                   checks the package; Python's loader segfaulted on CUDA packages with torch 2.11)
#   steps      150  R34 -> R18 steps, eager and CUDA graphs, fp32 and bf16, measured in this one run
# In the background, from the start (they compile on the CPU cores while the nccl part runs):
#   export     170  where a CUDA AOTInductor export stops (benchmarks/export_diagnose.py), one process per case
#   build           the runner built by CMake
# (`python benchmarks/gpu_check.py steps OUT --backends cudagraphs --kernels reference` timed the compiled
# steps on the references instead of the fused ops; answered on 2026-12-04, so no longer run here.)
source "$(dirname "$0")/gpu_common.sh"
: > "$LOG"
part install 20 bash -c "$INSTALL"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
part versions 10 $PY benchmarks/gpu_check.py versions "$LOG"

part export 170 $PY benchmarks/export_diagnose.py "$OUT/export.jsonl" --device cuda --timeout 160 \
  --cases tiny student student-dynamic package --package /tmp/pkg/student.pt2 > "$OUT/export.txt" 2>&1 &
export_pid=$!
(cmake -S . -B /tmp/native-build -G Ninja -DPython3_EXECUTABLE="$(command -v $PY)" > "$OUT/native.txt" 2>&1 && \
 cmake --build /tmp/native-build -j 8 >> "$OUT/native.txt" 2>&1; echo "build rc=$? at ${SECONDS}s" >> "$OUT/native.txt") &
build_pid=$!

part nccl 150 bash -c "$PY benchmarks/nccl_smoke.py /tmp/nccl-demo --budget 90 > '$OUT/nccl.txt' 2>&1"

wait $export_pid $build_pid
$PY -c "import numpy as np; np.save('/tmp/pkg/x.npy', np.random.rand(7, 1, 16, 16).astype('float32'))"
part runner 40 bash -c "/tmp/native-build/fastcae-run /tmp/pkg/student.pt2 /tmp/pkg/x.npy --bench >> '$OUT/native.txt' 2>&1; echo \"runner rc=\$?\" >> '$OUT/native.txt'"
part load 40 $PY benchmarks/export_diagnose.py "$OUT/export.jsonl" --device cuda --timeout 35 --cases load \
  --package /tmp/pkg/student.pt2 >> "$OUT/export.txt" 2>&1

part export-cli 120 bash -c "$PY -m fastcae export --run /tmp/nccl-demo --out /tmp/nccl-demo/student-cuda.pt2 \
  --device cuda --runner /tmp/native-build/fastcae-run >> '$OUT/native.txt' 2>&1; echo \"export-cli rc=\$?\" >> '$OUT/native.txt'"
part steps 150 bash -c "$PY benchmarks/gpu_check.py steps '$LOG' --precisions fp32 bf16 --backends eager cudagraphs > '$OUT/steps.txt' 2>&1"
$PY benchmarks/gpu_check.py summary "$LOG" > "$OUT/summary.md" 2>&1
cat "$OUT/summary.md" "$OUT/export.txt" "$OUT/native.txt" | tail -60; tail -12 "$OUT/nccl.txt"
