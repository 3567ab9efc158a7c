"""supcon_loss (CNCL) forward + backward: eager reference, torch.compile of the reference, and the fused op.

Shapes of the real runs: z [512, 128] (a student batch through the 128-d projection head) and [4096, 128]
(a large contrastive batch), fp32, L2-normalised rows, 100 classes (several noise variants per class).

FLOP floor of one forward + backward: the similarity matrix ``2 * B^2 * d`` and the gradient product
``(G + G^T) @ z``, ``2 * B^2 * d``, i.e. ``4 * B^2 * d`` (the fused op recomputes the similarities in the
backward instead of storing B x B: ``6 * B^2 * d`` executed). Bytes floor: ``2 * B * d * 4 + 8 * B`` (read z,
write dz). ``extra_info`` records both floors and the TFLOP/s the FLOP floor implies at the median.

Run: ``pytest benchmarks/test_bench_supcon_loss.py --benchmark-only``. The fused case needs CUDA.
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.scales import DEVICE, requires_cuda, sync
from fastcae.losses import supcon_loss

SHAPES = [(512, 128), (4096, 128)]
NUM_CLASSES = 100
TEMPERATURE = 0.1
BACKENDS = ["eager", "compiled", pytest.param("fused", marks=requires_cuda)]
# CPU: few rounds, to keep this file's CPU run short (the timings there are only a sanity check).
ROUNDS, ITERATIONS, WARMUP = (50, 10, 3) if DEVICE == "cuda" else (3, 1, 1)


def _loss_fn(backend):
    if backend == "eager":
        return supcon_loss
    if backend == "compiled":
        return torch.compile(supcon_loss, dynamic=False)
    from fastcae.kernels.supcon_loss import supcon_loss as fused

    return fused


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_supcon_fwd_bwd(benchmark, shape, backend):
    B, d = shape
    z = F.normalize(torch.randn(B, d, device=DEVICE), dim=1).requires_grad_(True)
    y = torch.arange(B, device=DEVICE) % NUM_CLASSES
    fn = _loss_fn(backend)

    def fwd_bwd():
        loss = fn(z, y, TEMPERATURE)
        (dz,) = torch.autograd.grad(loss, [z])
        sync()
        return dz

    benchmark.group = f"supcon_loss {B}x{d}"
    benchmark.pedantic(fwd_bwd, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=WARMUP)
    flops = 4 * B * B * d
    benchmark.extra_info.update(
        backend=backend, shape=[B, d], dtype="fp32", flop_floor=flops, bytes_floor=2 * B * d * 4 + 8 * B
    )
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["tflops_at_floor"] = flops / benchmark.stats.stats.median / 1e12
