"""One post-warm-up epoch, fastcae's loop against the prior design, side by side in one run.

An epoch is ``SYNTH_BATCHES`` synthesis batches (``cae``, 10 generator steps each) then ``STUDENT_STEPS``
student steps. GPU: the paper's CIFAR-10 epoch, 2 batches of 400 and 400 steps of 512, ResNet-34 -> ResNet-18.
CPU: the digits shape, 2 batches of 64 and 20 steps of 64 (a sanity check, minutes not hours).

- ``prior``: the prior systems' engineering on the same models, losses and optimisers
  (``benchmarks/prior_design.py``): eager reference ops, kept images written as PNGs and re-decoded by a
  DataLoader each epoch (4 workers on a GPU machine, none on the 2-core CPU), a host sync every step.
- ``fastcae-<backend>``: ``DistillRun.run_epoch``: the in-memory pool, batched device augmentation, losses
  read every ``log_every`` steps, with the backend's ops and compile mode (``benchmarks/scales.py``).

The first epoch of each (compiles, fills caches and pools) is the warm-up round. ``extra_info`` holds student
images per second; quote "fastcae is Nx faster than the prior design" from medians of one run.

Run: ``pytest benchmarks/test_bench_epoch.py --benchmark-only``.
"""

import pytest

from benchmarks.prior_design import PNGPool, prior_epoch
from benchmarks.scales import DEVICE, SCALE, backend_params, build_run, kernels_for, sync

SYNTH_BATCHES, STUDENT_STEPS = (2, 400) if DEVICE == "cuda" else (2, 20)
ROUNDS = 3
WORKERS = 4 if DEVICE == "cuda" else 0

DESIGNS = [pytest.param("prior", id="prior")] + [
    pytest.param(f"fastcae-{p.values[0]}", id=f"fastcae-{p.values[0]}", marks=p.marks) for p in backend_params()
]


@pytest.mark.parametrize("design", DESIGNS)
def test_epoch(benchmark, design, tmp_path):
    backend = "eager" if design == "prior" else design.removeprefix("fastcae-")
    with kernels_for(backend):
        run = build_run("cae", backend, warmup_epochs=0, epochs=10_000, g_life=10_000,
                        synth_batches=SYNTH_BATCHES, student_steps=STUDENT_STEPS,
                        pool_capacity=20 * SCALE.synth_batch)
        if design == "prior":
            png = PNGPool(tmp_path / "png", SCALE.image_shape)

            def epoch():
                prior_epoch(run, png, SYNTH_BATCHES, STUDENT_STEPS, WORKERS)
                sync()
        else:

            def epoch():
                record = run.run_epoch()
                sync()
                return record

        benchmark.group = f"epoch {SCALE.name}"
        benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    images = STUDENT_STEPS * SCALE.student_batch
    benchmark.extra_info.update(scale=SCALE.name, design=design, synth_batches=SYNTH_BATCHES,
                                synth_batch=SCALE.synth_batch, student_steps=STUDENT_STEPS,
                                student_batch=SCALE.student_batch, student_images=images,
                                compile="eager" if design == "prior" else run.effective_compile_mode,
                                loader_workers=WORKERS if design == "prior" else None)
    if benchmark.stats:
        benchmark.extra_info["student_images_per_s"] = round(images / benchmark.stats.stats.median, 1)
