"""Fused ``bn_stats_loss`` against its reference ``fastcae.losses.bn_stats_loss``.

On a CPU machine the kernels run through the Triton interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), so shapes stay small. ``tile``/``split`` overrides of the launchers force several
tiles per program, several programs per channel and masked tails at those small shapes.
"""

import pytest
import torch

pytest.importorskip("triton")

from fastcae.kernels.bn_stats_loss import (
    bn_stats_loss,
    bn_stats_loss_backward,
    bn_stats_loss_forward,
)
from fastcae.losses import bn_stats_loss as bn_stats_loss_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (dtype, atol, rtol): stats are fp32 in both (bf16 only rounds the input and dx), loss/dx tolerances loose.
DTYPES = [
    pytest.param(torch.float32, 1e-5, 1e-5, id="fp32"),
    pytest.param(torch.bfloat16, 1e-2, 2e-2, id="bf16"),  # dx: 1 bf16 ulp (2^-8) of rounding flips
]
SHAPES = [(2, 3, 5, 7), (17, 64, 8, 8), (40, 16, 13, 11)]
LAYOUTS = ["contiguous", "channels_last"]


def _make_x(shape, dtype, layout, offset_scale=3.0):
    """Random input with per-channel non-zero means and spreads (statistics tests need them)."""
    n, c, h, w = shape
    mean = torch.randn(1, c, 1, 1) * offset_scale
    std = torch.rand(1, c, 1, 1) + 0.5
    x = (torch.randn(shape) * std + mean).to(device=DEVICE, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _make_buffers(c, dtype=torch.float32):
    """Teacher running stats and an EMA: random, non-zero, on the device."""
    rm = torch.randn(c) * 2
    rv = torch.rand(c) + 0.5
    em = torch.randn(c) * 2
    ev = torch.rand(c) + 0.5
    return [t.to(device=DEVICE, dtype=dtype) for t in (rm, rv, em, ev)]


def _ema_weight(kind):
    if kind == "tensor0":
        return torch.tensor(0.0, device=DEVICE)
    if kind == "tensor0.9":
        return torch.tensor(0.9, device=DEVICE)
    return 0.9  # Python float


def _run(fn, x, bufs, w, grad_scale):
    """Forward + backward with a loss gradient != 1; returns (loss, mean, var, dx)."""
    x = x.detach().clone().requires_grad_(True)
    loss, mean, var = fn(x, *bufs, w)
    (loss * grad_scale).backward()
    return loss.detach(), mean, var, x.grad


def _assert_close(actual, expected, atol, rtol, what):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------------------------------------
# Values and gradients against the reference
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("w_kind", ["tensor0", "tensor0.9", "float0.9"])
def test_matches_reference(shape, layout, dtype, atol, rtol, w_kind):
    x = _make_x(shape, dtype, layout)
    bufs = _make_buffers(shape[1])
    w = _ema_weight(w_kind)
    grad_scale = torch.rand(()).item() * 3 + 0.25  # != 1

    loss, mean, var, dx = _run(bn_stats_loss, x, bufs, w, grad_scale)
    loss_r, mean_r, var_r, dx_r = _run(bn_stats_loss_ref, x, bufs, w, grad_scale)

    assert mean.dtype == var.dtype == loss.dtype == torch.float32
    assert mean.shape == var.shape == (shape[1],) and loss.shape == ()
    assert not mean.requires_grad and not var.requires_grad
    assert dx.dtype == x.dtype and dx.shape == x.shape and dx.stride() == x.stride()
    stat_tol = dict(atol=1e-5, rtol=1e-5)  # both compute fp32 stats of the same (possibly bf16) values
    _assert_close(mean, mean_r, what="batch_mean", **stat_tol)
    _assert_close(var, var_r, what="batch_var", **stat_tol)
    _assert_close(loss, loss_r, what="loss", **stat_tol)
    # dx is O(1/M): compare relative to its scale.
    scale = dx_r.float().abs().max()
    _assert_close(dx / scale, dx_r / scale, atol=atol, rtol=rtol, what="dx")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_large_count_nonzero_mean_accuracy(layout):
    """Mean 100, std 1, M = 102400 per channel: fp32 sum/sum-of-squares would lose ~1e-3 of the variance."""
    shape = (64, 2, 40, 40)
    x = (torch.randn(shape) + 100.0 + torch.rand(1, 2, 1, 1)).to(DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    bufs = _make_buffers(2)
    w = torch.tensor(0.9, device=DEVICE)
    loss, mean, var = bn_stats_loss(x, *bufs, w)

    xd = x.double()
    mean64 = xd.mean(dim=(0, 2, 3))
    var64 = xd.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean.double(), mean64, atol=2e-5, rtol=0)
    torch.testing.assert_close(var.double(), var64, atol=0, rtol=1e-5)
    rm, rv, em, ev = (b.double() for b in bufs)
    loss64 = torch.linalg.vector_norm(rv - (0.1 * var64 + 0.9 * ev)) + torch.linalg.vector_norm(
        rm - (0.1 * mean64 + 0.9 * em)
    )
    torch.testing.assert_close(loss.double(), loss64, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Launcher paths: many tiles/programs per channel, masked tails, outputs poisoned first, odd layouts
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, layout, tile, split",
    [
        ((9, 5, 13, 11), "contiguous", 64, 3),  # S = 143 > tile, odd: tails in s, per-lane counts
        ((9, 5, 8, 12), "contiguous", 64, 2),  # S = 96 > tile: 3 tiles of 32 per row, n tail over 3 tiles
        ((9, 5, 13, 11), "contiguous", 512, 2),  # several rows of n per tile, tail in n
        ((9, 37, 5, 7), "channels_last", 256, 5),  # 2 channel groups with a channel tail, tail in rows
        ((3, 3, 4, 4), "channels_last", 64, 1),  # C = 3 < BLOCK_C
    ],
)
def test_launcher_tiling_and_poisoned_outputs(shape, layout, tile, split):
    x = _make_x(shape, torch.float32, layout)
    c = shape[1]
    bufs = _make_buffers(c)
    w = torch.tensor(0.9, device=DEVICE)
    nan = float("nan")
    out = tuple(torch.full(s, nan, device=DEVICE) for s in [(), (c,), (c,), (2 * c + 2,)])
    loss, mean, var, aux = bn_stats_loss_forward(x, *bufs, w, out=out, tile=tile, split=split)
    assert all(a is b for a, b in zip((loss, mean, var, aux), out))
    for t in (loss, mean, var, aux):
        assert not torch.isnan(t).any()
    go = torch.tensor(0.7, device=DEVICE)
    dx = bn_stats_loss_backward(go, x, mean, aux, out=torch.full_like(x, nan), tile=tile, split=split)
    assert not torch.isnan(dx).any()

    loss_r, mean_r, var_r, dx_r = _run(bn_stats_loss_ref, x, bufs, w, 0.7)
    _assert_close(mean, mean_r, 1e-5, 1e-5, "batch_mean")
    _assert_close(var, var_r, 1e-5, 1e-5, "batch_var")
    _assert_close(loss, loss_r, 1e-5, 1e-5, "loss")
    scale = dx_r.abs().max()
    _assert_close(dx / scale, dx_r / scale, 1e-5, 1e-5, "dx")

    # Same configuration twice: bitwise identical (fixed merge order, no atomics).
    again = bn_stats_loss_forward(x, *bufs, w, tile=tile, split=split)
    assert all(torch.equal(a, b) for a, b in zip(again, (loss, mean, var, aux)))


def test_finalize_several_blocks(monkeypatch):
    """The finalize program merging several blocks of partials and several channel blocks."""
    import fastcae.kernels.bn_stats_loss as mod

    monkeypatch.setattr(mod, "_FIN_TILE", 16)
    monkeypatch.setattr(mod, "_FIN_BLOCK_C", 8)  # C = 21: 3 channel blocks; split 7: 4 blocks of 2 partials
    x = _make_x((6, 21, 5, 3), torch.float32, "channels_last", offset_scale=20.0)
    bufs = _make_buffers(21)
    w = torch.tensor(0.9, device=DEVICE)
    loss, mean, var, aux = bn_stats_loss_forward(x, *bufs, w, tile=64, split=7)
    dx = bn_stats_loss_backward(torch.tensor(0.6, device=DEVICE), x, mean, aux, tile=64, split=7)
    loss_r, mean_r, var_r, dx_r = _run(bn_stats_loss_ref, x, bufs, w, 0.6)
    _assert_close(mean, mean_r, 1e-5, 1e-5, "batch_mean")
    _assert_close(var, var_r, 1e-5, 1e-5, "batch_var")
    _assert_close(loss, loss_r, 1e-5, 1e-5, "loss")
    scale = dx_r.abs().max()
    _assert_close(dx / scale, dx_r / scale, 1e-5, 1e-5, "dx")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x: x.transpose(2, 3), id="hw-transposed"),  # not mergeable: contiguous copy
        pytest.param(lambda x: x[:1].expand(3, -1, -1, -1), id="expanded-n"),  # stride 0: dense dx
        pytest.param(lambda x: x[:, :, :1, :1].contiguous(), id="spatial-1x1"),  # S = 1: channels as columns
        pytest.param(lambda x: x[:, :1], id="one-channel-view"),
    ],
)
def test_other_layouts(make):
    x = make(_make_x((3, 6, 4, 5), torch.float32, "contiguous"))
    bufs = _make_buffers(x.shape[1])
    w = torch.tensor(0.9, device=DEVICE)
    loss, mean, var, dx = _run(bn_stats_loss, x, bufs, w, 1.3)
    loss_r, mean_r, var_r, dx_r = _run(bn_stats_loss_ref, x, bufs, w, 1.3)
    _assert_close(mean, mean_r, 1e-5, 1e-5, "batch_mean")
    _assert_close(var, var_r, 1e-5, 1e-5, "batch_var")
    _assert_close(loss, loss_r, 1e-5, 1e-5, "loss")
    _assert_close(dx, dx_r, 1e-7, 1e-4, "dx")


def test_fp16_channels_last():
    x = _make_x((5, 24, 6, 6), torch.float16, "channels_last")
    bufs = _make_buffers(24)
    loss, mean, var, dx = _run(bn_stats_loss, x, bufs, 0.9, 0.8)
    loss_r, mean_r, var_r, dx_r = _run(bn_stats_loss_ref, x, bufs, 0.9, 0.8)
    _assert_close(mean, mean_r, 1e-5, 1e-5, "batch_mean")
    _assert_close(var, var_r, 1e-5, 1e-5, "batch_var")
    _assert_close(loss, loss_r, 1e-5, 1e-5, "loss")
    scale = dx_r.float().abs().max()
    _assert_close(dx / scale, dx_r / scale, 2e-3, 2e-3, "dx")


def test_zero_norm_gives_zero_gradient():
    """w = 1 with running == ema: both norms are 0; torch's vector_norm gradient there is 0, not NaN."""
    x = _make_x((4, 3, 3, 3), torch.float32, "contiguous")
    rm, rv, _, _ = _make_buffers(3)
    loss, _, _, dx = _run(bn_stats_loss, x, [rm, rv, rm.clone(), rv.clone()], torch.tensor(1.0), 2.0)
    loss_r, _, _, dx_r = _run(bn_stats_loss_ref, x, [rm, rv, rm.clone(), rv.clone()], torch.tensor(1.0), 2.0)
    assert loss.item() == 0.0 and loss_r.item() == 0.0
    assert torch.equal(dx, torch.zeros_like(dx)) and torch.equal(dx_r, torch.zeros_like(dx_r))


def test_input_errors():
    x = _make_x((2, 3, 4, 4), torch.float32, "contiguous")
    bufs = _make_buffers(3)
    with pytest.raises(ValueError, match="must be \\[N, C, H, W\\]"):
        bn_stats_loss(x[0], *bufs, 0.9)
    with pytest.raises(ValueError, match="running_var must have shape"):
        bn_stats_loss(x, bufs[0], bufs[1][:2], bufs[2], bufs[3], 0.9)
    with pytest.raises(TypeError, match="not supported"):
        bn_stats_loss(x.to(torch.int32), *bufs, 0.9)
    with pytest.raises(ValueError, match="no elements"):
        bn_stats_loss(x[:0], *bufs, 0.9)


# ----------------------------------------------------------------------------------------------------------
# Autograd, custom-op registration, torch.compile
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_fp64(layout):
    """fp64 inputs run the kernels in fp64 (the reference would cast to fp32), so finite differences work."""
    x = _make_x((2, 3, 3, 4), torch.float64, layout).requires_grad_(True)
    bufs = _make_buffers(3, torch.float64)
    w = torch.tensor(0.9, dtype=torch.float64, device=DEVICE)
    assert torch.autograd.gradcheck(lambda t: bn_stats_loss(t, *bufs, w)[0], (x,), eps=1e-6, atol=1e-7)


def test_opcheck():
    x = _make_x((2, 3, 3, 4), torch.float32, "contiguous").requires_grad_(True)
    bufs = _make_buffers(3)
    w = torch.tensor(0.9, device=DEVICE)
    torch.library.opcheck(torch.ops.fastcae.bn_stats_loss.default, (x, *bufs, w, 0.0))
    torch.library.opcheck(torch.ops.fastcae.bn_stats_loss.default, (x.detach(), *bufs, None, 0.9))
    loss, mean, var, aux = torch.ops.fastcae.bn_stats_loss(x.detach(), *bufs, w, 0.0)
    torch.library.opcheck(
        torch.ops.fastcae.bn_stats_loss_backward.default, (torch.tensor(1.5, device=DEVICE), x.detach(), mean, aux)
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_compile_fullgraph(layout):
    x = _make_x((3, 5, 4, 6), torch.float32, layout)
    bufs = _make_buffers(5)
    w = torch.tensor(0.9, device=DEVICE)

    def step(t, w):
        loss, mean, var = bn_stats_loss(t, *bufs, w)
        return loss * 2.5, mean, var

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    xe = x.clone().requires_grad_(True)
    xc = x.clone().requires_grad_(True)
    le, me, ve = step(xe, w)
    lc, mc, vc = compiled(xc, w)
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(mc, me)
    torch.testing.assert_close(vc, ve)
    torch.testing.assert_close(xc.grad, xe.grad)
    assert xc.grad.stride() == x.stride()
