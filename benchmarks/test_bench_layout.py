"""Memory layout: one generator step and one student step with the models in NCHW and in channels_last (NHWC).

Why: ``DistillConfig.channels_last=None`` puts the teacher, student and generator in NHWC on CUDA and on a CPU
whose torch has oneDNN (``fastcae.steps.resolve_channels_last``). This times that choice on the fidelity
suite's teacher/student pairs (``benchmarks/fidelity/cases.py``; random weights: a trained teacher costs the
same), at the batches a 240-second CPU run plans (synthesis 64, student 128): torchvision's MobileNetV3 with
a plain CNN student, a VGG-style CNN with the same student, a ResNet-8 with a depthwise-separable student.
``extra_info`` holds images per second at the median. Quote NHWC/NCHW ratios from one run.

Run: ``pytest benchmarks/test_bench_layout.py --benchmark-only``.
"""

import pytest
import torch

from benchmarks.fidelity.cases import CASES
from benchmarks.scales import DEVICE, generator_step, record_images, student_step
from fastcae.loop import DistillRun
from fastcae.presets import make_config

PAIRS = ["mbv3-grey32", "vgg-grey32", "resnet8-colour-rot32"]
LAYOUTS = {"nchw": False, "nhwc": True}
SYNTH_BATCH, STUDENT_BATCH = 64, 128
ROUNDS = 10


def _run(name: str, layout: str) -> DistillRun:
    torch.manual_seed(0)
    case = CASES[name]
    shape = (case.channels, case.data.size, case.data.size)
    # width 32, as layout-cpu-2026-12-05.json was measured (a CPU plan has taken 16 at 32 px since 35b7740)
    cfg = make_config(synth_batch_size=SYNTH_BATCH, student_batch_size=STUDENT_BATCH, generator_width=32,
                      device=DEVICE, progress=False, flip=False, compile=False, precision="fp32",
                      channels_last=LAYOUTS[layout], pool_capacity=4 * SYNTH_BATCH)
    embeddings = torch.nn.functional.normalize(torch.randn(case.num_classes, 384), dim=1)
    half = (0.5,) * case.channels
    return DistillRun(cfg, case.make_teacher(), case.make_student(), embeddings, shape, half, half, DEVICE)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", PAIRS)
def test_generator_step_layout(benchmark, name, layout):
    step = generator_step(_run(name, layout))
    benchmark.group = f"generator step, {name}, batch {SYNTH_BATCH}"
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=2, iterations=1)
    record_images(benchmark, SYNTH_BATCH, pair=name, layout=layout, threads=torch.get_num_threads())


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", PAIRS)
def test_student_step_layout(benchmark, name, layout):
    step = student_step(_run(name, layout), STUDENT_BATCH, CASES[name].num_classes)
    benchmark.group = f"student step, {name}, batch {STUDENT_BATCH}"
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=2, iterations=1)
    record_images(benchmark, STUDENT_BATCH, pair=name, layout=layout, threads=torch.get_num_threads())
