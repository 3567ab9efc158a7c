"""logit loss (the fused ``logit_loss``) forward + backward: eager reference, torch.compile of the reference,
and the fused Triton op.

Shapes of the real runs: [512, 100] (CIFAR-100 student batch) and [256, 1000] (Tiny-ImageNet-like batch
with 1000 classes), fp32 logits, for the student step (KD at T = 20, gradient to the student logits only)
and the generator step (adversarial + CE, gradients to both logits).

Bytes-moved floor of one forward + backward: read both logit matrices once and write each gradient,
``(2 + n_grads) * B * C * 4 + 8 * B`` bytes (the fused op reads the logits twice, forward and backward:
``(4 + n_grads) * B * C * 4``). ``extra_info`` records the floor and the GB/s it implies at the median.

Run: ``pytest benchmarks/test_bench_logit_loss.py --benchmark-only``. The fused case needs CUDA.
"""

import pytest
import torch

from benchmarks.scales import DEVICE, requires_cuda, sync
from fastcae.losses import logit_loss

SHAPES = [(512, 100), (256, 1000)]
# the loss weights of each step, and whether the teacher logits need a gradient
STEPS = {
    "student": (dict(temperature=20.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0), False),
    "generator": (dict(temperature=1.0, kd_weight=0.0, adv_weight=1.33, ce_weight=0.5), True),
}
BACKENDS = ["eager", "compiled", pytest.param("fused", marks=requires_cuda)]
# CPU: few rounds, to keep this file's CPU run short (the timings there are only a sanity check).
ROUNDS, ITERATIONS, WARMUP = (50, 20, 3) if DEVICE == "cuda" else (3, 2, 1)


def _loss_fn(backend):
    if backend == "eager":
        return logit_loss
    if backend == "compiled":
        return torch.compile(logit_loss, dynamic=False)
    from fastcae.kernels.logit_loss import logit_loss as fused

    return fused


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_logit_loss_fwd_bwd(benchmark, shape, step, backend):
    B, C = shape
    weights, teacher_grad = STEPS[step]
    t = (torch.randn(B, C, device=DEVICE) * 3 + 1).requires_grad_(teacher_grad)
    s = (0.7 * t.detach() + torch.randn(B, C, device=DEVICE)).requires_grad_(True)
    y = torch.randint(0, C, (B,), device=DEVICE)
    inputs = [t, s] if teacher_grad else [s]
    fn = _loss_fn(backend)

    def fwd_bwd():
        loss = fn(t, s, y, **weights)
        grads = torch.autograd.grad(loss, inputs)
        sync()
        return grads

    benchmark.group = f"logit_loss {B}x{C} {step}"
    benchmark.pedantic(fwd_bwd, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=WARMUP)
    floor = (2 + len(inputs)) * B * C * t.element_size() + 8 * B
    benchmark.extra_info.update(backend=backend, step=step, shape=[B, C], dtype="fp32", bytes_floor=floor)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["gbps_at_floor"] = floor / benchmark.stats.stats.median / 1e9
