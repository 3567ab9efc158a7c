"""cend_linear forward + backward: the CEND front of the ``cae`` generator (gather + noise + BN1d + Linear).

Shape: the real run's B = 400 samples, D = 512 embedding dims (CLIP ViT-B/32), O = 8192 = 128 * 8 * 8 (the
body's first Linear), training mode (batch statistics, running-stat update). Backends:
- ``eager``: ``cend_linear_reference`` after drawing the noise, either with torch's own RNG
  (``torch_rng``: ``torch.rand`` + ``torch.randn`` + ``transform_uniform``, what a plain eager generator does)
  or with the counter-based RNG (``counter``: ``fastcae.synthesis.cend.counter_noise``, the fused op's exact noise);
- ``compiled``: ``torch.compile`` (inductor) of the same function;
- ``fused``: ``fastcae.kernels.cend_linear`` (noise drawn in registers, no [B, D] tensor), CUDA only.
``bf16`` runs fp32 parameters under bf16 autocast (the Linear in bf16), as the generator does. On a CPU
machine O shrinks to 1024 (ids start with ``cpuO1024``), only fp32 runs (Triton on CPU is the interpreter,
not a performance path) and ``compiled-counter`` skips (inductor's CPU build of the Philox emulation takes
minutes).

Floor (``extra_info``): forward reads W and writes h, backward reads dh and W and writes dW:
``w * (2 * B * O + 3 * O * D)`` bytes per fwd+bwd (w = bytes per weight element; the [D]-sized vectors and
the embedding gathers are negligible), and ``3 * 2 * B * D * O`` FLOP (h, dW, dh @ W for the BN gradients).
Run: ``pytest benchmarks/test_bench_cend_linear.py --benchmark-only``.
"""

import pytest
import torch

from benchmarks.scales import DEVICE, FLOAT_DTYPES, requires_cuda, sync
from fastcae.synthesis.cend import cend_linear_reference, counter_noise, transform_uniform

B, D = 400, 512
O = 8192 if DEVICE == "cuda" else 1024
NUM_CLASSES, NUM_SOURCES = 100, 4
MOMENTUM, EPS = 0.1, 1e-5
ROUNDS, WARMUP = (50, 5) if DEVICE == "cuda" else (3, 1)
SHAPE_ID = f"{B}x{D}to{O}" if DEVICE == "cuda" else f"cpuO{O}-{B}x{D}to{O}"


def _torch_rng_noise(seed, offset, source_ids, dim):
    """Noise with torch's own generator: what an eager generator without the counter RNG would draw."""
    shape = (source_ids.shape[0], dim)
    u = torch.rand(shape, device=source_ids.device)
    n = torch.randn(shape, device=source_ids.device)
    return transform_uniform(u, n, source_ids)


def _unfused(noise_fn):
    def fn(embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, running_mean,
           running_var, *, training, momentum, eps, weight, bias):
        noise = noise_fn(*noise_state, source_ids, embeddings.shape[1])
        return cend_linear_reference(embeddings, targets, source_ids, magnitudes, scale, noise, bn_weight, bn_bias,
                                     running_mean, running_var, training=training, momentum=momentum, eps=eps,
                                     weight=weight, bias=bias)

    return fn


def _fused():
    from fastcae.kernels.cend_linear import cend_linear

    return cend_linear


CASES = [
    pytest.param("eager", "torch_rng", id="eager-torch_rng"),
    pytest.param("eager", "counter", id="eager-counter"),
    pytest.param("compiled", "torch_rng", id="compiled-torch_rng"),
    pytest.param(
        "compiled",
        "counter",
        id="compiled-counter",
        # inductor's C++ build of the int64 Philox emulation took over 6 minutes on the 2-core CPU machine
        marks=pytest.mark.skipif(DEVICE != "cuda", reason="inductor CPU compile of counter_noise takes minutes"),
    ),
    pytest.param("fused", "counter", id="fused-counter", marks=requires_cuda),
]
DTYPES = FLOAT_DTYPES


@pytest.mark.parametrize("backend, noise", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [SHAPE_ID])
def test_cend_linear_fwd_bwd(benchmark, shape, dtype, backend, noise):
    embeddings = torch.nn.functional.normalize(torch.randn(NUM_CLASSES, D, device=DEVICE), dim=1)
    targets = torch.arange(B, device=DEVICE) % NUM_CLASSES
    source_ids = (torch.arange(B, device=DEVICE) // NUM_CLASSES) % NUM_SOURCES
    magnitudes = torch.full((NUM_SOURCES,), 0.5, device=DEVICE)
    scale = embeddings.pow(2).mean().sqrt().reshape(())
    bn_weight = torch.ones(D, device=DEVICE, requires_grad=True)
    bn_bias = torch.zeros(D, device=DEVICE, requires_grad=True)
    running_mean = torch.zeros(D, device=DEVICE)
    running_var = torch.ones(D, device=DEVICE)
    weight = (torch.randn(O, D, device=DEVICE) / D**0.5).requires_grad_()
    bias = torch.zeros(O, device=DEVICE, requires_grad=True)
    params = [bn_weight, bn_bias, weight, bias]
    noise_state = (1234, 3 * 2**32 + 7)  # (seed, offset): Python ints for the references

    if backend == "fused":
        fn = _fused()
        noise_state = torch.tensor(noise_state, dtype=torch.int64, device=DEVICE)  # read in-kernel
    else:
        fn = _unfused(_torch_rng_noise if noise == "torch_rng" else counter_noise)
        if backend == "compiled":
            torch._dynamo.reset()
            fn = torch.compile(fn)

    def fwd_bwd():
        for p in params:
            p.grad = None
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            h = fn(embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias,
                   running_mean, running_var, training=True, momentum=MOMENTUM, eps=EPS, weight=weight, bias=bias)
        h.backward(torch.ones_like(h))
        sync()

    w = 2 if dtype == torch.bfloat16 else 4
    floor_bytes = w * (2 * B * O + 3 * O * D)
    floor_flop = 3 * 2 * B * D * O
    benchmark.extra_info.update(
        shape=[B, D, O], dtype=str(dtype).removeprefix("torch."), backend=backend, noise=noise,
        fwd_floor_bytes=w * (B * O + O * D), bwd_floor_bytes=w * (B * O + 2 * O * D), floor_bytes=floor_bytes,
        floor_flop=floor_flop,
    )
    benchmark.pedantic(fwd_bwd, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and stats.median > 0:
        benchmark.extra_info["achieved_GBps"] = round(floor_bytes / stats.median / 1e9, 2)
        benchmark.extra_info["achieved_TFLOPs"] = round(floor_flop / stats.median / 1e12, 3)
