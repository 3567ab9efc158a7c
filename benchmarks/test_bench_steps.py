"""The two steps of the loop, per paradigm and backend: one generator step, one student step.

Generator step (``fastcae.steps.Steps.generator_step``): generator -> augment -> teacher with BN hooks [+ student
for the adversarial term] -> losses -> backward -> Adam, at the synthesis batch. The body is the same for
every paradigm; the inputs differ (CEND + fused front for ``cae``, K-to-1 noisy layers for ``nayer``, a
latent plus the meta-gradient accumulation for ``fast``). Student step (``Steps.student_step``): augment -> teacher
(no grad) -> student + projection head -> KD + CNCL -> backward -> SGD, at the student batch.

Backends (``benchmarks/scales.py``): eager reference ops; fused kernels; torch.compile (inductor); compiled
under CUDA graphs. On CPU the shapes are the digits demo's and only eager and compiled run (the Triton
interpreter is for tests, not timing); on a GPU, CIFAR scale with ResNet-34 -> ResNet-18.
``extra_info`` holds images per second at the median. Quote ratios between backends from one run.

Run: ``pytest benchmarks/test_bench_steps.py --benchmark-only``.
"""

import pytest
import torch
from conftest import DEVICE, sync
from scales import SCALE, backend_params, build_run, kernels_for

PARADIGMS = ["cae", "nayer", "fast"]
ROUNDS = 30 if DEVICE == "cuda" else 5


def _warmup(backend: str) -> int:
    # compiled: the first call compiles; CUDA-graph trees warm up, record, then replay from the third call
    return {"eager": 2, "fused": 3}.get(backend, 4)


def _record(benchmark, images: int, **info):
    benchmark.extra_info.update(scale=SCALE.name, images=images, **info)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = round(images / benchmark.stats.stats.median, 1)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_generator_step(benchmark, paradigm, backend):
    with kernels_for(backend):
        run = build_run(paradigm, backend)
        synth = run.synth
        run._set_student_trainable(False)  # as during synthesis
        generator, optimizer, after_backward = synth.step_parts()
        generator.train()
        generator.new_batch(synth.targets, synth.sources)
        adv = run.cfg.adv_weight  # past warm-up: the student's forward is part of the step

        def step():
            run.steps.generator_step(generator, optimizer, synth.targets, synth.sources, adv, after_backward)
            sync()

        benchmark.group = f"generator step {SCALE.name}"
        benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=_warmup(backend), iterations=1)
    assert run.effective_compile_mode == (run.steps.mode if run.steps.compiled else "eager")
    _record(benchmark, SCALE.synth_batch, paradigm=paradigm, backend=backend, compile=run.effective_compile_mode)


@pytest.mark.parametrize("backend", backend_params())
def test_student_step(benchmark, backend):
    with kernels_for(backend):
        run = build_run("cae", backend)
        run._set_student_trainable(True)
        images = torch.rand(SCALE.student_batch, *SCALE.image_shape, device=DEVICE)
        labels = torch.randint(0, SCALE.num_classes, (SCALE.student_batch,), device=DEVICE)

        def step():
            run.steps.student_step(run.optimizer, images, labels)
            sync()

        benchmark.group = f"student step {SCALE.name}"
        benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=_warmup(backend), iterations=1)
    assert run.effective_compile_mode == (run.steps.mode if run.steps.compiled else "eager")
    _record(benchmark, SCALE.student_batch, backend=backend, compile=run.effective_compile_mode,
            teacher=SCALE.teacher, student=SCALE.student)
