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
#   native   100  the native runner built by CMake against the GPU image's torch, the demo's student exported
#                 for cuda and checked against Python, then timed (--bench); DEMO_RUN names a finished demo
#                 run to export (else check_demo_student.py makes one with a 30 s budget)
#   summary   10  ratios against the targets, GPU-hours of the CIFAR presets
# Sum of caps: 570 s. The longer parts of gpu_session.sh stay for deeper work.
source "$(dirname "$0")/gpu_common.sh"
: > "$LOG"
part install 20 bash -c "$INSTALL"
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
part native 100 bash -c "{ cmake -S . -B /tmp/native-build -G Ninja -DPython3_EXECUTABLE=\$(command -v $PY) && \
cmake --build /tmp/native-build -j \$(nproc) && mkdir -p /tmp/demo-run && cp -r \${DEMO_RUN:-/nonexistent}/. /tmp/demo-run/ ; \
$PY native/check_demo_student.py /tmp/demo-run /tmp/native-build/fastcae-run --device cuda && \
/tmp/native-build/fastcae-run /tmp/demo-run/student.pt2 /tmp/demo-run/digits_test.npy --bench --device cuda | tail -8; \
} > '$OUT/native.txt' 2>&1"
part summary 10 bash -c "$PY benchmarks/gpu_check.py summary '$LOG' | tee '$OUT/summary.md'"
