"""bn_stats_loss forward + backward: eager reference vs torch.compile(reference) vs the fused Triton op.

Shapes: the inputs of the BatchNorm2d layers of a CIFAR ResNet-34 teacher at synthesis batch 400
(64x32x32, 128x16x16, 256x8x8, 512x4x4), contiguous and channels_last. One call = one BN layer's hook.
On a CPU machine the batch shrinks to N = 40 (ids start with ``cpuN40``), bf16 and the fused cases skip
(Triton on CPU is the interpreter, not a performance path).

Floor (``extra_info``): forward reads x once, backward reads x and writes dx: ``3 * N*C*H*W * itemsize``
bytes per fwd+bwd; ``achieved_GBps`` divides it by the median time. Run:
``pytest benchmarks/test_bench_bn_stats_loss.py --benchmark-only``.
"""

import pytest
import torch

from benchmarks.scales import DEVICE, FLOAT_DTYPES, requires_cuda, sync
from fastcae.losses import bn_stats_loss as bn_stats_loss_ref

BATCH = 400 if DEVICE == "cuda" else 40
CHANNELS_HW = [(64, 32), (128, 16), (256, 8), (512, 4)]
ROUNDS, WARMUP = (50, 5) if DEVICE == "cuda" else (3, 1)


def _shape_id(c, hw):
    prefix = "" if DEVICE == "cuda" else "cpuN40-"
    return f"{prefix}{BATCH}x{c}x{hw}x{hw}"


def _fused():
    from fastcae.kernels.bn_stats_loss import bn_stats_loss

    return bn_stats_loss


BACKENDS = [
    pytest.param("eager", id="eager"),
    pytest.param("compiled", id="compiled"),
    pytest.param("fused", id="fused", marks=requires_cuda),
]
DTYPES = FLOAT_DTYPES


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("c, hw", CHANNELS_HW, ids=[_shape_id(c, hw) for c, hw in CHANNELS_HW])
def test_bn_stats_loss_fwd_bwd(benchmark, c, hw, layout, dtype, backend):
    shape = (BATCH, c, hw, hw)
    x = (torch.randn(shape, device=DEVICE) * 1.5 + 0.3).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    rm = torch.randn(c, device=DEVICE)
    rv = torch.rand(c, device=DEVICE) + 0.5
    em = torch.randn(c, device=DEVICE)
    ev = torch.rand(c, device=DEVICE) + 0.5
    w = torch.tensor(0.9, device=DEVICE)  # a tensor, as in the training loop (no recompiles)

    if backend == "eager":
        fn = bn_stats_loss_ref
    elif backend == "compiled":
        if DEVICE == "cuda":
            torch._dynamo.reset()  # a static-shape compile per case, as a real run would get
        # On CPU the compiled graph is reused (automatic dynamic shapes after the first recompile) so that
        # compiling does not dominate the run; its timings there are indicative only.
        fn = torch.compile(bn_stats_loss_ref)
    else:
        fn = _fused()

    def fwd_bwd():
        x.grad = None
        loss, _, _ = fn(x, rm, rv, em, ev, w)
        loss.backward()
        sync()

    nbytes = x.numel() * x.element_size()
    benchmark.extra_info.update(
        shape=list(shape),
        layout=layout,
        dtype=str(dtype).removeprefix("torch."),
        backend=backend,
        fwd_floor_bytes=nbytes,
        bwd_floor_bytes=2 * nbytes,
        floor_bytes=3 * nbytes,
    )
    benchmark.pedantic(fwd_bwd, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and stats.median > 0:
        benchmark.extra_info["achieved_GBps"] = round(3 * nbytes / stats.median / 1e9, 2)
