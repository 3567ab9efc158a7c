"""The two shapes the step, paradigm and epoch benchmarks run at, and how each backend builds a run.

- CPU (``digits16``): the embedded demo's shape: 1x16x16 images, the digits teacher and student, batches
  of 64. Small enough that the CPU run of the whole suite stays within minutes.
- GPU (``cifar32``): the paper's CIFAR-10 setting: 3x32x32, ResNet-34 teacher, ResNet-18 student, synthesis
  batches of 400, student batches of 512 (throughput only: no CIFAR data is reachable here, and the
  randomly initialised teacher costs the same as a trained one).

Backends (what ``distill`` would run with):
- ``eager``: reference PyTorch ops, no compile (the prior systems' execution);
- ``fused``: the Triton kernels, no compile (GPU only);
- ``compiled``: torch.compile with inductor, fused kernels where there is a GPU;
- ``cudagraphs``: the same under CUDA graphs (mode "reduce-overhead"), the default on a GPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch

from fastcae import ops
from fastcae.datasets import DATASETS
from fastcae.distributed import World
from fastcae.loop import DistillRun
from fastcae.models import create_model
from fastcae.presets import make_config

# The benchmarks' device and the marks every suite shares: defined here, not in the conftest, so that the suites
# and the scripts outside pytest (benchmarks/gpu/check.py) import them as ``benchmarks.scales`` (a conftest is
# no module to import from: pytest may load another one under the same name).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# On CPU, Triton kernels only run through the interpreter (slow, not a performance path): the fused cases
# skip there. Setting TRITON_INTERPRET here would make CPU timings meaningless, so it is never set.
requires_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="fused Triton kernels are timed on a CUDA GPU only")

# fp32 everywhere; bf16 only on a GPU (it doubles the CPU run for no insight into the kernels).
FLOAT_DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.bfloat16, id="bf16",
                 marks=pytest.mark.skipif(DEVICE != "cuda", reason="bf16 timed on GPU only (keeps the CPU run short)")),
]


def sync():
    """Call inside timed functions: CUDA work is asynchronous, so time the work, not the launch."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Scale:
    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    teacher: str
    student: str
    synth_batch: int
    student_batch: int
    generator_width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


CPU_SCALE = Scale("digits16", (1, 16, 16), 10, "digits_teacher", "digits_student", 64, 64, 32, (0.5,), (0.5,))
GPU_SCALE = Scale("cifar32", (3, 32, 32), 10, "resnet34", "resnet18", 400, 512, 64,
                  DATASETS["cifar10"].mean, DATASETS["cifar10"].std)
SCALE = GPU_SCALE if DEVICE == "cuda" else CPU_SCALE

# backend -> (kernel backend, compile mode)
BACKENDS = {
    "eager": ("reference", False),
    "fused": ("triton", False),
    "compiled": ("auto", "inductor"),
    "cudagraphs": ("auto", "cudagraphs"),
}
GPU_ONLY = {"fused": "Triton kernels are timed on a CUDA GPU only",
            "cudagraphs": "CUDA graphs need a CUDA GPU"}


def backend_params(names=tuple(BACKENDS)):
    """pytest params for ``names``, GPU-only ones skipping on CPU with the reason."""
    return [pytest.param(n, id=n, marks=pytest.mark.skipif(DEVICE != "cuda" and n in GPU_ONLY,
                                                           reason=GPU_ONLY.get(n, ""))) for n in names]


@contextlib.contextmanager
def kernels_for(backend: str):
    with ops.backend(BACKENDS[backend][0]):
        yield


def build_run(paradigm: str, backend: str, scale: Scale = SCALE, seed: int = 0, world: World = World(),
              device: str = DEVICE, **overrides) -> DistillRun:
    """A ``DistillRun`` at ``scale`` (random class embeddings: the text encoder is not what is timed), as
    process ``world.rank`` of ``world.size`` (the batches are global). Enter ``kernels_for(backend)`` around
    everything that runs it."""
    torch.manual_seed(seed)
    options = dict(paradigm=paradigm, synth_batch_size=scale.synth_batch, student_batch_size=scale.student_batch,
                   generator_width=scale.generator_width, device=device, progress=False, flip=scale.image_shape[0] == 3,
                   compile=BACKENDS[backend][1], seed=seed, pool_capacity=8 * scale.synth_batch)
    options.update(overrides)
    cfg = make_config(**options)
    teacher = create_model(scale.teacher, num_classes=scale.num_classes, in_chans=scale.image_shape[0])
    student = create_model(scale.student, num_classes=scale.num_classes, in_chans=scale.image_shape[0])
    embeddings = torch.nn.functional.normalize(torch.randn(scale.num_classes, 384), dim=1)
    return DistillRun(cfg, teacher, student, embeddings, scale.image_shape, scale.mean, scale.std, device,
                      world=world)


def generator_step(run: DistillRun):
    """One generator step of ``run`` past warm-up (the student's forward in it, as in synthesis), as a
    callable that waits for the device: what the step benchmarks time."""
    synth = run.synth
    run._set_student_trainable(False)  # as during synthesis
    generator, optimizer, after_backward = synth.step_parts()
    generator.train()
    generator.new_batch(synth.targets, synth.sources)

    def step():
        run.steps.generator_step(generator, optimizer, synth.targets, synth.sources, run.cfg.adv_weight,
                                 after_backward)
        sync()

    return step


def student_step(run: DistillRun, batch: int, num_classes: int):
    """One student step of ``run`` on a fixed random batch, as a callable that waits for the device."""
    run._set_student_trainable(True)
    images = torch.rand(batch, *run.image_shape, device=run.device)
    labels = torch.randint(0, num_classes, (batch,), device=run.device)

    def step():
        run.steps.student_step(run.optimizer, images, labels)
        sync()

    return step


def record_images(benchmark, images: int, **info) -> None:
    """``extra_info``: what was timed, and images per second at the median (absent under --benchmark-disable)."""
    benchmark.extra_info.update(images=images, **info)
    if benchmark.stats:
        benchmark.extra_info["images_per_s"] = round(images / benchmark.stats.stats.median, 1)
