"""One process of the data-parallel throughput benchmark (benchmarks/test_bench_distributed.py launches it
with ``torchrun -m benchmarks.distributed_worker`` at 1..N processes, from the repository root): the benchmark
scale's run (``scales.build_run``, global batches), timed.

Every process synthesises its share of ``--synth-batches`` global batches (cae, adversarial term on), then
takes ``--student-steps`` data-parallel student steps (gradients averaged) on its share of each global
student batch; a barrier closes each phase, so the time is the slowest process's. Rank 0 writes images per
second (global) to ``--out``.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.scales import CPU_SCALE, DEVICE, SCALE, build_run, kernels_for
from fastcae import distributed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--synth-batches", type=int, default=3)
    p.add_argument("--student-steps", type=int, default=30)
    args = p.parse_args()
    world = distributed.join(DEVICE)
    device = f"cuda:{world.local_rank}" if DEVICE == "cuda" else "cpu"
    backend = "cudagraphs" if DEVICE == "cuda" else "eager"  # what distill runs by default
    with kernels_for(backend):
        run = build_run("cae", backend, SCALE, world=world, device=device)
        adv = run.cfg.adv_weight
        run.pool.push(*_kept(run.synth.synthesize(adv)))  # first calls (compiles), not timed
        run._set_student_trainable(True)
        for _ in range(3):
            run.steps.student_step(run.optimizer, *run.pool.sample(run.student_batch)[:2])
        timings = {}
        world.barrier()
        t0 = time.perf_counter()
        for _ in range(args.synth_batches):
            run._set_student_trainable(False)
            run.pool.push(*_kept(run.synth.synthesize(adv)))
        _sync(device)
        world.barrier()
        timings["synthesis"] = (time.perf_counter() - t0, args.synth_batches * run.cfg.synth_batch_size)
        run._set_student_trainable(True)
        t0 = time.perf_counter()
        for _ in range(args.student_steps):
            run.steps.student_step(run.optimizer, *run.pool.sample(run.student_batch)[:2])
        _sync(device)
        world.barrier()
        timings["student"] = (time.perf_counter() - t0, args.student_steps * run.cfg.student_batch_size)
    if world.main:
        scale = "digits16" if SCALE is CPU_SCALE else SCALE.name
        report = {"processes": world.size, "device": DEVICE, "scale": scale, "threads": torch.get_num_threads(),
                  "compile_mode": run.effective_compile_mode,
                  **{f"{k}_images_per_s": n / t for k, (t, n) in timings.items()},
                  **{f"{k}_seconds": t for k, (t, _) in timings.items()}}
        Path(args.out).write_text(json.dumps(report, indent=1))


def _kept(batch):
    return batch.images, batch.labels, batch.sources


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
