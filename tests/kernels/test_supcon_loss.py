"""Fused ``supcon_loss`` (``fastcae.kernels.supcon_loss``) against its reference ``fastcae.losses.supcon_loss``.

On a CPU machine the kernels run through the Triton interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``) with 32 x 32 similarity tiles, so B = 37 / 130 / 300 have several row programs,
several column blocks and masked tails; ``config=`` overrides of the launchers run the GPU tilings.
"""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from fastcae.kernels.supcon_loss import supcon_loss as fused_supcon_loss
from fastcae.kernels.supcon_loss import supcon_loss_backward, supcon_loss_forward
from fastcae.losses import supcon_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (dtype, atol, rtol); gradient atol is relative to the largest reference gradient entry. bf16: the
# similarities are exact products of the same bf16 values in both paths (fp32 sums) and the backward keeps
# ~16 bits of the gradient tile (hi + lo parts), so dz differs by the final bf16 rounding: up to 1 ulp,
# 2^-7 relative just above a power of two (measured: 0.95 of atol=1e-4 rel-to-max, rtol=8e-3).
DTYPES = [
    pytest.param(torch.float32, 1e-5, 1e-4, id="fp32"),
    pytest.param(torch.bfloat16, 1e-3, 1.6e-2, id="bf16"),
]


def _labels(kind, B):
    """Label layouts: CNCL-like (each class under several noise variants), few classes, many classes with
    singletons (anchors without a positive), all distinct (no anchor has a positive)."""
    if kind == "variants":
        return torch.arange(B) % max(1, B // 4)
    if kind == "few":
        return torch.randint(0, 3, (B,))
    if kind == "singletons":
        y = torch.randint(0, max(2, B // 2), (B,))
        y[: max(1, B // 5)] = torch.arange(1000, 1000 + max(1, B // 5))  # unique: no positive
        return y
    if kind == "distinct":
        return torch.randperm(B) * 7 - 3
    raise ValueError(kind)


def _make_z(B, d, dtype, normalized=True):
    z = torch.randn(B, d) + 0.3  # non-zero mean: similarities are not centred on 0
    z = F.normalize(z, dim=1) if normalized else z * 0.5
    return z.to(DEVICE, dtype)


def _run(fn, z, y, tau, grad_scale):
    z = z.detach().clone().requires_grad_(True)
    loss = fn(z, y, tau)
    loss.backward(grad_scale)
    return loss.detach(), z.grad


def _assert_close(actual, expected, atol, rtol, what):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _check(z, y, tau, atol, rtol, g=None):
    g = torch.rand((), device=DEVICE) * 2 + 0.5 if g is None else g  # grad_output != 1
    loss, dz = _run(fused_supcon_loss, z, y, tau, g)
    loss_r, dz_r = _run(supcon_loss, z, y, tau, g)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert dz.dtype == z.dtype and dz.shape == z.shape
    _assert_close(loss, loss_r, 1e-5, 1e-5, "loss")
    _assert_close(dz, dz_r, atol * max(dz_r.abs().max().item(), 1e-30), rtol, "dz")
    return loss, dz


# ----------------------------------------------------------------------------------------------------------
# Values and gradients against the reference
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("labels", ["variants", "few", "singletons"])
@pytest.mark.parametrize("shape", [(37, 128), (37, 40), (130, 40)], ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape, labels, dtype, atol, rtol):
    B, d = shape
    _check(_make_z(B, d, dtype), _labels(labels, B).to(DEVICE), 0.1, atol, rtol)


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("shape", [(300, 128), (300, 40), (130, 128)], ids=lambda s: "x".join(map(str, s)))
def test_larger_batches(shape, dtype, atol, rtol):
    B, d = shape
    _check(_make_z(B, d, dtype), _labels("variants", B).to(DEVICE), 0.1, atol, rtol)


@pytest.mark.parametrize("B, labels", [(2, "few"), (5, "singletons"), (5, "distinct"), (2, "distinct"), (1, "few")])
def test_tiny_batches(B, labels):
    """B = 2 / 5 with some or no anchors having a positive (loss and gradient exactly 0 when none has)."""
    y = _labels(labels, B).to(DEVICE)
    loss, dz = _check(_make_z(B, 16, torch.float32), y, 0.1, 1e-5, 1e-4)
    if labels == "distinct" or B == 1:
        assert loss.item() == 0.0 and (dz == 0).all()


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_unnormalized_and_strided(tau):
    """Rows not L2-normalised (large similarities), z a column slice of a wider tensor (row stride != d)."""
    B, d = 45, 40
    wide = _make_z(B, d + 24, torch.float32, normalized=False)
    z = wide[:, 5 : 5 + d]
    _check(z, _labels("variants", B).to(DEVICE), tau, 1e-5, 1e-4)


@pytest.mark.parametrize(
    "config, B, d, dtype, atol, rtol",
    [
        ((32, 64, 8), 150, 128, torch.float32, 1e-5, 1e-4),
        ((64, 32, 8), 150, 128, torch.bfloat16, 1e-3, 1.6e-2),
        ((16, 32, 8), 70, 256, torch.float32, 1e-5, 1e-4),
    ],
    ids=["32x64-fp32", "64x32-bf16", "16x32-d256"],
)
def test_gpu_tilings(config, B, d, dtype, atol, rtol):
    """The tilings a GPU picks, through the launchers."""
    z = _make_z(B, d, dtype)
    y = _labels("singletons", B).to(DEVICE)
    g = torch.tensor(1.4, device=DEVICE)
    loss, stats, n_anchor = supcon_loss_forward(z, y, 0.1, config=config)
    dz = supcon_loss_backward(g, z, y, stats, n_anchor, 0.1, config=config)
    loss_r, dz_r = _run(supcon_loss, z, y, 0.1, g)
    _assert_close(loss, loss_r, 1e-5, 1e-5, "loss")
    _assert_close(dz, dz_r, atol * dz_r.abs().max().item(), rtol, "dz")


def test_outputs_fully_written(monkeypatch):
    """Every buffer the launchers allocate starts as NaN: the loss and gradient must not keep any."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(out):
        return out.fill_(float("nan")) if out.is_floating_point() else out

    B, d = 37, 40
    z = _make_z(B, d, torch.float32)
    y = _labels("singletons", B).to(DEVICE)
    g = torch.tensor(0.7, device=DEVICE)
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(real_empty_like(*a, **k)))
    loss, dz = _run(fused_supcon_loss, z, y, 0.1, g)
    monkeypatch.undo()
    assert torch.isfinite(loss) and torch.isfinite(dz).all()
    loss_r, dz_r = _run(supcon_loss, z, y, 0.1, g)
    _assert_close(loss, loss_r, 1e-5, 1e-5, "loss")
    _assert_close(dz, dz_r, 1e-5 * dz_r.abs().max().item(), 1e-4, "dz")


def test_gradcheck_fp64():
    """fp64 z is computed in fp64 (loss returned in fp64): finite differences apply."""
    B, d = 7, 5
    z = _make_z(B, d, torch.float64).requires_grad_()
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3], device=DEVICE)  # anchors 5 and 6 have no positive
    assert torch.autograd.gradcheck(lambda a: fused_supcon_loss(a, y, 0.5), (z,))


def test_opcheck():
    B, d = 6, 16
    z = _make_z(B, d, torch.float32).requires_grad_()
    y = torch.tensor([0, 1, 0, 1, 2, 2], device=DEVICE)
    torch.library.opcheck(torch.ops.fastcae.supcon_loss.default, (z, y, 0.1))
    _, stats, n_anchor = torch.ops.fastcae.supcon_loss(z, y, 0.1)
    torch.library.opcheck(
        torch.ops.fastcae.supcon_loss_backward.default,
        (torch.tensor(1.3, device=DEVICE), z.detach(), y, stats, n_anchor, 0.1),
    )


def test_compile_fullgraph():
    """torch.compile traces the registered ops (forward and backward) without graph breaks."""
    B, d = 20, 32
    z = _make_z(B, d, torch.float32)
    y = _labels("variants", B).to(DEVICE)

    def fn(a, labels, tau):
        return fused_supcon_loss(a, labels, tau) * 3.0

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    g = torch.tensor(0.9, device=DEVICE)
    loss, dz = _run(compiled, z, y, 0.1, g)
    loss_e, dz_e = _run(fn, z, y, 0.1, g)
    _assert_close(loss, loss_e, 0.0, 0.0, "loss")
    _assert_close(dz, dz_e, 0.0, 0.0, "dz")


def test_input_errors():
    z = _make_z(4, 16, torch.float32)
    y = torch.arange(4, device=DEVICE)
    with pytest.raises(ValueError, match="labels must be"):
        fused_supcon_loss(z, y[:3])
    with pytest.raises(ValueError, match="d <= 256"):
        fused_supcon_loss(_make_z(4, 300, torch.float32), y)
    with pytest.raises(TypeError, match="labels must be integers"):
        fused_supcon_loss(z, y.float())
    with pytest.raises(ValueError, match="temperature"):
        fused_supcon_loss(z, y, -1.0)
