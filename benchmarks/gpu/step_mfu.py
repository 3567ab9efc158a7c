"""Model FLOP utilisation of the two steps on the natural-images pair: FLOPs counted, time measured, peak known.

    python -m benchmarks.gpu.step_mfu --out mfu.json [--peak-tflops 989]

The pair is the natural-images case (a CIFAR ResNet-56 teacher, a ResNet-20 student, 3x32x32, 10 classes) at
NAYER's batches (synthesis 400, student 512) on a GPU, at 64 / 128 on a CPU. FLOPs: one eager step under
``torch.utils.flop_counter.FlopCounterMode`` (forward and backward; convolutions and matmuls, which is what the
peak counts). Time: the median of 20 steps of the run's default mode (CUDA graphs and bf16 on a GPU), after 5
warm-up steps that include the compiles. MFU = FLOPs / median seconds / peak; the peak is the card's dense
bf16 rate (H100 and H200 SXM: 989 TFLOP/s), or ``--peak-tflops``. Weights are random: the cost of a step does
not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.scales import DEVICE, Scale, build_run, generator_step, student_step
from fastcae.datasets import DATASETS
from fastcae.utils import versions

DENSE_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # SXM parts, dense (no sparsity)


def natural_scale() -> Scale:
    gpu = DEVICE == "cuda"
    info = DATASETS["cifar10"]
    return Scale("natural", info.image_shape, 10, "cifar10_resnet56", "cifar10_resnet20", 400 if gpu else 64,
                 512 if gpu else 128, 64 if gpu else 16, info.mean, info.std)


def count_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def median_seconds(step, warmup: int = 5, repeats: int = 20) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()  # the step callables synchronise
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="mfu.json")
    p.add_argument("--peak-tflops", type=float, default=None, help="default: the card's dense bf16 rate")
    args = p.parse_args(argv)
    scale = natural_scale()
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in DENSE_BF16_TFLOPS.items() if k in name), None)
    out = {"device": name, "versions": versions(), "scale": scale.__dict__, "peak_tflops": peak, "steps": {}}
    compile_mode = None if DEVICE == "cuda" else False  # the run's default: CUDA graphs on a GPU, eager on a CPU
    for label in ("student", "generator"):
        precision = "bf16" if DEVICE == "cuda" else "fp32"  # what distill() resolves on each
        plain = build_run("cae", "eager", scale, compile=False, precision=precision)
        fast = build_run("cae", "eager", scale, compile=compile_mode, precision=precision)
        make = (lambda r: student_step(r, scale.student_batch, scale.num_classes)) if label == "student" \
            else generator_step
        flops = count_flops(make(plain))
        seconds = median_seconds(make(fast))
        achieved = flops / seconds / 1e12
        out["steps"][label] = {"flops": flops, "median_seconds": seconds, "tflops": round(achieved, 2),
                               "mfu": round(achieved / peak, 4) if peak else None,
                               "batch": scale.student_batch if label == "student" else scale.synth_batch,
                               "mode": fast.effective_compile_mode, "precision": fast.cfg.precision}
        print(f"{label}: {flops / 1e9:.1f} GFLOP in {1000 * seconds:.1f} ms = {achieved:.1f} TFLOP/s"
              + (f", MFU {100 * achieved / peak:.1f}% of {peak:g}" if peak else ""), flush=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
