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

from benchmarks.scales import (
    DEVICE,
    SCALE,
    backend_params,
    build_run,
    generator_step,
    kernels_for,
    record_images,
    student_step,
)

PARADIGMS = ["cae", "nayer", "fast"]
ROUNDS = 30 if DEVICE == "cuda" else 5


def _warmup(backend: str) -> int:
    # compiled: the first call compiles; CUDA-graph trees warm up, record, then replay from the third call
    return {"eager": 2, "fused": 3}.get(backend, 4)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_generator_step(benchmark, paradigm, backend):
    with kernels_for(backend):
        run = build_run(paradigm, backend)
        step = generator_step(run)  # past warm-up: the student's forward is part of the step
        benchmark.group = f"generator step {SCALE.name}"
        benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=_warmup(backend), iterations=1)
    assert run.effective_compile_mode == (run.steps.mode if run.steps.compiled else "eager")
    record_images(benchmark, SCALE.synth_batch, scale=SCALE.name, paradigm=paradigm, backend=backend,
                  compile=run.effective_compile_mode)


@pytest.mark.parametrize("backend", backend_params())
def test_student_step(benchmark, backend):
    with kernels_for(backend):
        run = build_run("cae", backend)
        step = student_step(run, SCALE.student_batch, SCALE.num_classes)
        benchmark.group = f"student step {SCALE.name}"
        benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=_warmup(backend), iterations=1)
    assert run.effective_compile_mode == (run.steps.mode if run.steps.compiled else "eager")
    record_images(benchmark, SCALE.student_batch, scale=SCALE.name, backend=backend,
                  compile=run.effective_compile_mode, teacher=SCALE.teacher, student=SCALE.student)
