"""Fused cend_linear against ``cend_linear_reference`` with the same counter noise (``counter_noise``).

On CPU the kernels run through the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET), so shapes are
the real run's [400, 384 -> 512] scaled down, with sizes that are not multiples of the block sizes.
"""

import pytest
import torch

pytest.importorskip("triton")

from torch.utils._python_dispatch import TorchDispatchMode

from fastcae.kernels.cend_linear import (
    cend_linear,
    cend_linear_backward,
    cend_linear_forward,
)
from fastcae.synthesis.cend import cend_linear_reference, counter_noise

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NUM_CLASSES, NUM_SOURCES = 7, 4
MOMENTUM, EPS = 0.1, 1e-5

# (weight dtype, atol, rtol). Gradients are sums over the batch (and over O for the BN parameters): their
# atol is scaled by the reference's largest entry.
DTYPES = [
    pytest.param(torch.float32, 1e-4, 1e-4, id="fp32"),
    pytest.param(torch.bfloat16, 5e-2, 2e-2, id="bf16"),
]


def _inputs(B, D, O, mag_per_dim, wdtype=torch.float32, offset=None):
    emb = torch.randn(NUM_CLASSES, D, device=DEVICE) * 0.3 + 0.8  # non-zero mean, like template prompts
    targets = torch.randint(0, NUM_CLASSES, (B,), device=DEVICE)
    source_ids = torch.arange(B, device=DEVICE) % NUM_SOURCES  # every source present
    shape = (NUM_SOURCES, D) if mag_per_dim else (NUM_SOURCES,)
    mags = torch.rand(shape, device=DEVICE) + 0.25
    scale = emb.pow(2).mean().sqrt().reshape(())
    seed = int(torch.randint(0, 2**31 - 1, ()))
    if offset is None:
        offset = 2**32 - 5 * D + int(torch.randint(0, 100, ()))  # counters cross the 32-bit boundary
    gamma = (torch.rand(D, device=DEVICE) + 0.5).requires_grad_()
    beta = torch.randn(D, device=DEVICE).requires_grad_()
    weight = (torch.randn(O, D, device=DEVICE) / D**0.5).to(wdtype).requires_grad_()
    bias = torch.randn(O, device=DEVICE).to(wdtype).requires_grad_()
    running_mean = torch.randn(D, device=DEVICE) * 0.1 + 0.8
    running_var = torch.rand(D, device=DEVICE) + 0.5
    noise_state = torch.tensor([seed, offset], dtype=torch.int64, device=DEVICE)
    return dict(embeddings=emb, targets=targets, source_ids=source_ids, magnitudes=mags, scale=scale,
                noise_state=noise_state, bn_weight=gamma, bn_bias=beta, running_mean=running_mean,
                running_var=running_var, weight=weight, bias=bias)


def _reference(kw, training, autocast_bf16=False):
    noise = counter_noise(*kw["noise_state"].tolist(), kw["source_ids"], kw["embeddings"].shape[1])
    args = {k: v for k, v in kw.items() if k != "noise_state"}
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast_bf16):
        return cend_linear_reference(noise=noise, training=training, momentum=MOMENTUM, eps=EPS, **args)


def _fused(kw, training):
    return cend_linear(training=training, momentum=MOMENTUM, eps=EPS, **kw)


def _clone_stats(kw):
    out = dict(kw)
    out["running_mean"] = kw["running_mean"].clone()
    out["running_var"] = kw["running_var"].clone()
    return out


def _assert_close(actual, expected, atol, rtol, what, scale_atol=False):
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert not torch.isnan(actual).any(), f"{what}: NaN at {torch.nonzero(torch.isnan(actual))[:5].tolist()}"
    if scale_atol:
        atol = atol * max(1.0, expected.float().abs().max().item())
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("mag_per_dim", [False, True], ids=["mag_N", "mag_ND"])
@pytest.mark.parametrize("B, D, O", [(37, 40, 48)])
def test_matches_reference(B, D, O, mag_per_dim, training, dtype, atol, rtol):
    kw = _inputs(B, D, O, mag_per_dim, dtype)
    kw_ref, kw_fused = _clone_stats(kw), _clone_stats(kw)
    h_ref = _reference(kw_ref, training, autocast_bf16=dtype == torch.bfloat16)
    h = _fused(kw_fused, training)
    assert h.shape == (B, O) and h.dtype == dtype
    _assert_close(h, h_ref, atol, rtol, "h")
    # running statistics: updated in training (momentum, unbiased variance), untouched in eval
    for name in ("running_mean", "running_var"):
        _assert_close(kw_fused[name], kw_ref[name], 1e-6, 1e-5, name)
        assert torch.equal(kw_fused[name], kw[name]) != training, f"{name} updated={training} expected"
    # gradients with a random upstream gradient (not ones)
    grad_out = torch.randn_like(h_ref)
    params = ["bn_weight", "bn_bias", "weight", "bias"]
    g_ref = torch.autograd.grad(h_ref, [kw[p] for p in params], grad_out)
    g = torch.autograd.grad(h, [kw[p] for p in params], grad_out)
    for p, a, e in zip(params, g, g_ref):
        _assert_close(a, e, atol, rtol, f"d_{p}", scale_atol=True)


@pytest.mark.parametrize("training, mag_per_dim, dtype, atol, rtol", [
    pytest.param(True, True, torch.float32, 1e-4, 1e-4, id="train-mag_ND-fp32"),
    pytest.param(False, False, torch.bfloat16, 5e-2, 2e-2, id="eval-mag_N-bf16"),
])
def test_matches_reference_block_multiple(training, mag_per_dim, dtype, atol, rtol):
    """B, D, O exact multiples of the blocks (no masked tail), far counters (~5 * 2**32)."""
    B, D, O = 64, 32, 64
    kw = _inputs(B, D, O, mag_per_dim, dtype, offset=5 * 2**32 + 3)
    kw_ref, kw_fused = _clone_stats(kw), _clone_stats(kw)
    h_ref = _reference(kw_ref, training, autocast_bf16=dtype == torch.bfloat16)
    h = _fused(kw_fused, training)
    _assert_close(h, h_ref, atol, rtol, "h")
    _assert_close(kw_fused["running_var"], kw_ref["running_var"], 1e-6, 1e-5, "running_var")
    grad_out = torch.randn_like(h_ref) * 3.0
    params = ["bn_weight", "bn_bias", "weight", "bias"]
    g_ref = torch.autograd.grad(h_ref, [kw[p] for p in params], grad_out)
    g = torch.autograd.grad(h, [kw[p] for p in params], grad_out)
    for p, a, e in zip(params, g, g_ref):
        _assert_close(a, e, atol, rtol, f"d_{p}", scale_atol=True)


def test_in_kernel_noise_equals_counter_noise():
    """With BN the identity (eval, mean 0, var 1, eps 0) and W = I, h is the diffused v: the kernel's noise
    is counter_noise's to a few ulp (libm vs the kernel's log/cos, log1p as log(w) * a / (w - 1))."""
    B, D = 45, 32
    kw = _inputs(B, D, D, False)
    ones, zeros = torch.ones(D, device=DEVICE), torch.zeros(D, device=DEVICE)
    h, _, _ = cend_linear_forward(kw["embeddings"], kw["targets"], kw["source_ids"], kw["magnitudes"], kw["scale"],
                                  kw["noise_state"], ones, zeros, zeros, ones, False, 0.0,
                                  torch.eye(D, device=DEVICE), None)
    noise = counter_noise(*kw["noise_state"].tolist(), kw["source_ids"], D)
    v = kw["embeddings"][kw["targets"]] + kw["magnitudes"][kw["source_ids"]][:, None] * kw["scale"] * noise
    tol = 2e-6 if DEVICE == "cpu" else 2e-5  # GPU log/cos may be approximations (as in tl.randn itself)
    for s in range(NUM_SOURCES):
        rows = kw["source_ids"] == s
        torch.testing.assert_close(h[rows], v[rows], atol=tol, rtol=tol, msg=lambda m: f"source {s}: {m}")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_poisoned_with_nan_is_fully_written(training):
    B, D, O = 37, 40, 48
    kw = _inputs(B, D, O, True)
    out = torch.full((B, O), float("nan"), device=DEVICE)
    args = (kw["embeddings"], kw["targets"], kw["source_ids"], kw["magnitudes"], kw["scale"],
            kw["noise_state"], kw["bn_weight"].detach(), kw["bn_bias"].detach(), kw["running_mean"], kw["running_var"],
            training, EPS, kw["weight"].detach(), kw["bias"].detach())
    h, mean, var = cend_linear_forward(*args, out=out)
    assert h.data_ptr() == out.data_ptr()
    assert not torch.isnan(out).any() and not torch.isnan(mean).any() and not torch.isnan(var).any()
    expected, _, _ = cend_linear_forward(*args)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    grads = cend_linear_backward(torch.randn(B, O, device=DEVICE), *args[:8], mean, var, EPS, args[12])
    assert all(not torch.isnan(g).any() for g in grads)


def test_no_bd_float_tensor_allocated():
    """The launchers never allocate a float tensor as large as [B, D] (noise, v or y): recorded with a
    dispatch mode on CPU (Triton's own allocations do not go through torch)."""
    B, D, O = 70, 48, 16  # [B, O], [O, D] and the [cdiv(B, BLOCK_B), D] partials all stay below B * D

    class _Allocations(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.numels = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    self.numels.append((str(func), t.numel()))
            return out

    kw = _inputs(B, D, O, True)
    args = (kw["embeddings"], kw["targets"], kw["source_ids"], kw["magnitudes"], kw["scale"],
            kw["noise_state"], kw["bn_weight"].detach(), kw["bn_bias"].detach(), None, None, True, EPS,
            kw["weight"].detach(), kw["bias"].detach())
    grad_out = torch.randn(B, O, device=DEVICE)
    with _Allocations() as rec:
        h, mean, var = cend_linear_forward(*args)
        cend_linear_backward(grad_out, *args[:8], mean, var, EPS, args[12])
    assert rec.numels, "no allocation recorded"
    big = [(f, n) for f, n in rec.numels if n >= B * D]
    assert not big, f"[B, D]-sized float tensors allocated: {big}"


@pytest.mark.skipif(DEVICE != "cuda", reason="allocation peak measured with the CUDA caching allocator")
def test_no_bd_float_tensor_allocated_cuda():
    B, D, O = 4096, 1024, 16
    kw = _inputs(B, D, O, False)
    h = _fused(kw, True)  # warm up: the first call compiles (and do_bench allocates a cache-flush buffer)
    torch.autograd.grad(h, [kw["bn_weight"], kw["weight"]], torch.randn_like(h))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    h = _fused(kw, True)
    torch.autograd.grad(h, [kw["bn_weight"], kw["weight"]], torch.randn_like(h))
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before < B * D * 4 // 4


def test_fp64_gradcheck():
    """The op is linear in each parameter coordinate; in fp64 (ACC = fp64 after the fp32 noise) the numerical
    and analytical Jacobians agree tightly."""
    B, D, O = 11, 20, 18
    kw = _inputs(B, D, O, True)
    for p in ("bn_weight", "bn_bias", "weight", "bias"):
        kw[p] = kw[p].detach().double().requires_grad_()

    def fn(gamma, beta, weight, bias):
        return cend_linear(kw["embeddings"], kw["targets"], kw["source_ids"], kw["magnitudes"], kw["scale"],
                           kw["noise_state"], gamma, beta, None, None, training=True, momentum=MOMENTUM, eps=EPS,
                           weight=weight, bias=bias)

    assert fn(kw["bn_weight"], kw["bn_bias"], kw["weight"], kw["bias"]).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (kw["bn_weight"], kw["bn_bias"], kw["weight"], kw["bias"]),
                                    fast_mode=True, atol=1e-6, rtol=1e-5)


def test_autocast_runs_linear_in_low_precision():
    """fp32 parameters under bf16 autocast: output bf16 like F.linear, gradients fp32 like the reference."""
    B, D, O = 37, 40, 48
    kw = _inputs(B, D, O, False)
    kw_ref, kw_fused = _clone_stats(kw), _clone_stats(kw)
    h_ref = _reference(kw_ref, True, autocast_bf16=True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        h = _fused(kw_fused, True)
    _assert_close(h, h_ref, 5e-2, 2e-2, "h")
    grad_out = torch.randn_like(h_ref)
    g_ref = torch.autograd.grad(h_ref, [kw["weight"], kw["bn_weight"]], grad_out)
    g = torch.autograd.grad(h, [kw["weight"], kw["bn_weight"]], grad_out)
    for a, e in zip(g, g_ref):
        _assert_close(a, e, 5e-2, 2e-2, "grad", scale_atol=True)


def test_no_affine_no_bias_no_running_stats():
    """BatchNorm1d(affine=False, track_running_stats=False) and Linear(bias=False)."""
    B, D, O = 37, 40, 48
    kw = _inputs(B, D, O, False)
    kw.update(bn_weight=None, bn_bias=None, running_mean=None, running_var=None, bias=None)
    h_ref = _reference(kw, True)
    h = _fused(kw, True)
    _assert_close(h, h_ref, 1e-4, 1e-4, "h")
    grad_out = torch.randn_like(h)
    (g_ref,) = torch.autograd.grad(h_ref, [kw["weight"]], grad_out)
    (g,) = torch.autograd.grad(h, [kw["weight"]], grad_out)
    _assert_close(g, g_ref, 1e-4, 1e-4, "d_weight", scale_atol=True)


def test_compile_fullgraph_aot_eager():
    B, D, O = 37, 40, 48
    kw = _inputs(B, D, O, True)
    kw_eager, kw_comp = _clone_stats(kw), _clone_stats(kw)

    def step(kw):
        h = _fused(kw, True)
        return (h * h).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    params = [kw[p] for p in ("bn_weight", "bn_bias", "weight", "bias")]
    loss_e = step(kw_eager)
    g_e = torch.autograd.grad(loss_e, params)
    loss_c = compiled(kw_comp)
    g_c = torch.autograd.grad(loss_c, params)
    torch.testing.assert_close(loss_c, loss_e, atol=0, rtol=1e-6)
    for a, e in zip(g_c, g_e):
        torch.testing.assert_close(a, e, atol=0, rtol=1e-6)
    for name in ("running_mean", "running_var"):  # on a GPU the batch statistics are summed in any order
        torch.testing.assert_close(kw_comp[name], kw_eager[name], atol=0, rtol=0 if DEVICE == "cpu" else 1e-6)


def test_noise_state_is_read_from_memory():
    """One compiled function, its noise state updated in place between calls (as ``CENDInput.new_batch``
    does): each call sees the new (seed, offset), equals the reference for it, and nothing recompiles.
    Python-int seeds give the same result as the tensor."""
    B, D, O = 21, 20, 18
    kw = _inputs(B, D, O, False)
    state = kw["noise_state"]
    counts = {"frames": 0}

    def backend(gm, example_inputs):
        counts["frames"] += 1
        return gm.forward

    compiled = torch.compile(lambda kw: _fused(kw, False), fullgraph=True, backend=backend)
    previous = None
    for step in range(3):
        if step:
            state[1].add_(B * D)  # the next batch's counters
        h = compiled(kw)
        torch.testing.assert_close(h, _reference(_clone_stats(kw), False), atol=1e-5, rtol=1e-5)
        if step:
            assert not torch.equal(h, previous), "the in-place update of noise_state was not seen"
        previous = h
    assert counts["frames"] == 1
    as_ints = _fused({**kw, "noise_state": tuple(state.tolist())}, False)
    torch.testing.assert_close(as_ints, h, atol=0, rtol=0)
    with pytest.raises(ValueError, match="noise_state"):
        _fused({**kw, "noise_state": state.int()}, False)


def test_opcheck():
    B, D, O = 21, 20, 18
    kw = _inputs(B, D, O, True)
    args = (kw["embeddings"], kw["targets"], kw["source_ids"], kw["magnitudes"], kw["scale"],
            kw["noise_state"], kw["bn_weight"], kw["bn_bias"], None, None, True, EPS, kw["weight"], kw["bias"])
    torch.library.opcheck(torch.ops.fastcae.cend_linear.default, args)
    h, mean, var = torch.ops.fastcae.cend_linear(*args)
    # the backward op has no autograd formula of its own (no double backward): check it on detached inputs
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args[:8]]
    bwd_args = (torch.randn(B, O, device=DEVICE), *detached, mean.detach(), var.detach(), EPS,
                kw["weight"].detach(), torch.float32, True, True)
    torch.library.opcheck(torch.ops.fastcae.cend_linear_backward.default, bwd_args)


def test_input_errors():
    B, D, O = 8, 16, 16
    kw = _inputs(B, D, O, False)
    with pytest.raises(ValueError, match="more than 1 value"):
        _fused({**kw, "targets": kw["targets"][:1], "source_ids": kw["source_ids"][:1]}, True)
    with pytest.raises(ValueError, match="weight must be"):
        _fused({**kw, "weight": kw["weight"][:, :5]}, False)
    with pytest.raises(ValueError, match="magnitudes"):
        _fused({**kw, "magnitudes": torch.ones(NUM_SOURCES, D + 1, device=DEVICE)}, False)
    with pytest.raises(ValueError, match="int64"):
        _fused({**kw, "targets": kw["targets"].int()}, False)
    with pytest.raises(ValueError, match="evaluation mode"):
        _fused({**kw, "running_mean": None}, False)
    with pytest.raises(NotImplementedError, match="buffers"):
        _fused({**kw, "magnitudes": kw["magnitudes"].clone().requires_grad_()}, False)
