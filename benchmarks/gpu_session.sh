#!/usr/bin/env bash
# Everything a session with a GPU should run, in parts that each fit one 10-minute device call, writing what
# to keep under $OUT (default: ./gpu-out). Run from the repository root on the GPU machine:
#
#   bash benchmarks/gpu_session.sh tests     # kernels compiled (no interpreter), compiled loop, CUDA graphs
#   bash benchmarks/gpu_session.sh kernels   # the fused ops against eager and compiled, and the pool
#   bash benchmarks/gpu_session.sh steps     # generator and student steps per backend (+ GPU-hours estimate)
#   bash benchmarks/gpu_session.sh paradigm  # synthesis cost per kept image, time to accuracy
#   bash benchmarks/gpu_session.sh epoch     # one CIFAR-scale epoch against the prior design
#   bash benchmarks/gpu_session.sh profile   # NVML report of a CIFAR-scale run (ResNet-34 -> ResNet-18)
#
# The device image has its own torch/triton: fastcae is installed without dependencies if it is missing
# (gpu_common.sh).
source "$(dirname "$0")/gpu_common.sh"
part=${1:?"which part: tests | kernels | steps | paradigm | epoch | profile"}
stamp=$(date +%Y-%m-%d)
gpu=$($PY -c "import torch; print(torch.cuda.get_device_name(0))" | tr ' /' '__')

bash -c "$INSTALL"

case "$part" in
  tests)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
    $PY -m pytest -q -p no:cacheprovider tests/kernels tests/test_steps.py tests/test_fused_end_to_end.py \
        tests/test_profiling.py 2>&1 | tail -40 > "$OUT/tests.txt"
    tail -3 "$OUT/tests.txt"
    ;;
  kernels|steps|paradigm|epoch)
    case "$part" in
      kernels) files="benchmarks/test_bench_logit_loss.py benchmarks/test_bench_bn_stats_loss.py
                      benchmarks/test_bench_supcon_loss.py benchmarks/test_bench_cend_linear.py benchmarks/test_bench_pool.py" ;;
      steps) files="benchmarks/test_bench_steps.py" ;;
      paradigm) files="benchmarks/test_bench_paradigms.py" ;;
      epoch) files="benchmarks/test_bench_epoch.py" ;;
    esac
    out="$OUT/${gpu}-${stamp}-${part}.json"
    # shellcheck disable=SC2086
    $PY -m pytest $files --benchmark-only -q -p no:logging --benchmark-json "$out" 2>&1 | tail -5
    $PY benchmarks/summarize.py "$out" | tee "${out%.json}.md"
    ;;
  profile)
    # throughput only: a randomly initialised teacher costs what a trained one does
    $PY -c "import torch; from fastcae import create_model; \
torch.save(create_model('resnet34', num_classes=10).state_dict(), '/tmp/r34.pt')"
    $PY -m fastcae profile --preset cifar10-resnet34-resnet18 --teacher /tmp/r34.pt --out /tmp/profile-run \
        --report "$OUT/profile-cifar10-r34-r18.json" --no-progress \
        --set epochs=24 --set warmup_epochs=20 --set warmup_synth_batches=2 --set max_seconds=420 \
        --set text_encoder=random 2>&1 | tail -30
    ;;
  *)
    echo "unknown part $part: tests | kernels | steps | paradigm | epoch | profile" >&2
    exit 2
    ;;
esac
