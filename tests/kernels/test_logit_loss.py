"""Fused ``logit_loss`` (``fastcae.kernels.logit_loss``) against its reference ``fastcae.losses.logit_loss``.

On a CPU machine the kernels run through the Triton interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), where the column block is capped at 256 so C = 1000 / 1271 run the multi-block
online log-sum-exp; ``config=`` overrides of the launchers run the GPU tilings (one 2048-wide block, one row
per program) at the same shapes.
"""

import pytest
import torch

pytest.importorskip("triton")

from fastcae.kernels.logit_loss import logit_loss as fused_logit_loss
from fastcae.kernels.logit_loss import logit_loss_backward, logit_loss_forward
from fastcae.losses import logit_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (dtype, atol, rtol); gradient atol is relative to the largest reference gradient entry. Both paths compute
# in fp32 from the same (exactly upcast) inputs, so bf16 only rounds gradients: 1 bf16 ulp (2^-8) where the
# two fp32 values straddle a rounding boundary, and, where terms cancel, the reference's own rounding: its
# autograd casts each term's gradient (KD, ADV, CE use separate ``.float()`` copies) to bf16 and sums them
# in bf16, while the kernel sums in fp32 and rounds once.
DTYPES = [
    pytest.param(torch.float32, 1e-5, 1e-4, id="fp32"),
    pytest.param(torch.bfloat16, 1e-2, 1.6e-2, id="bf16"),
]
# (temperature, kd_weight, adv_weight, ce_weight)
WEIGHTS = [
    pytest.param((1.0, 0.0, 1.33, 0.5), id="generator"),
    pytest.param((20.0, 1.0, 0.0, 0.0), id="student"),
    pytest.param((4.0, 0.7, 1.1, 0.3), id="all"),
]
SHAPES = [(1, 10), (3, 100), (41, 100), (3, 1000), (41, 1271)]


def _loss_atol(temperature, atol=1e-6):
    # The KD term is T^2 * KL_T; at T = 20, KL_T ~ 1e-3 is a difference of O(1) log-sum-exps, so the fp32
    # reference itself carries ~T^2 * ulp(log C) ~ 1e-4 of rounding (measured against an fp64 evaluation:
    # the reference is off by up to 7e-5 at [1, 100], the kernel by 1e-5).
    return atol + 5e-7 * temperature**2


def named(w: tuple) -> dict:
    """A case's four weights, by name, as the losses take them."""
    temperature, kd_weight, adv_weight, ce_weight = w
    return dict(temperature=temperature, kd_weight=kd_weight, adv_weight=adv_weight, ce_weight=ce_weight)


def _make_logits(B, C, dtype, agree_frac=0.5):
    """Teacher logits with a non-zero mean; student = noisy teacher on about ``agree_frac`` of the rows
    (argmaxes mostly agree there) and an unrelated draw on the others (argmaxes mostly disagree)."""
    t = torch.randn(B, C) * 2.0 + 1.5
    s_close = 0.8 * t + 0.3 * torch.randn(B, C) - 0.7
    s_far = torch.randn(B, C) * 2.0
    close = torch.rand(B, 1) < agree_frac
    s = torch.where(close, s_close, s_far)
    return t.to(DEVICE, dtype), s.to(DEVICE, dtype)


def _run(fn, t, s, y, w, grad_scale, teacher_grad=True):
    """Forward + backward with a loss gradient != 1; returns (loss, dt or None, ds)."""
    t = t.detach().clone().requires_grad_(teacher_grad)
    s = s.detach().clone().requires_grad_(True)
    loss = fn(t, s, y, **named(w))
    loss.backward(grad_scale)
    return loss.detach(), t.grad, s.grad


def _assert_close(actual, expected, atol, rtol, what):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _grad_atol(ref_grad, atol):
    # Gradients scale like 1/B and with the weights: tolerate ``atol`` relative to the largest entry.
    return atol * ref_grad.abs().max().item()


# ----------------------------------------------------------------------------------------------------------
# Values and gradients against the reference
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("w", WEIGHTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape, w, dtype, atol, rtol):
    B, C = shape
    t, s = _make_logits(B, C, dtype)
    y = torch.randint(0, C, (B,), device=DEVICE)
    g = torch.rand((), device=DEVICE) * 2 + 0.5  # grad_output != 1
    teacher_grad = w[1] == 0.0  # student step (kd only): the teacher logits carry no grad
    loss, dt, ds = _run(fused_logit_loss, t, s, y, w, g, teacher_grad)
    loss_r, dt_r, ds_r = _run(logit_loss, t, s, y, w, g, teacher_grad)
    assert loss.dtype == torch.float32 and loss.shape == ()
    _assert_close(loss, loss_r, _loss_atol(w[0]), 1e-5, "loss")
    _assert_close(ds, ds_r, _grad_atol(ds_r, atol), rtol, "d student")
    assert ds.dtype == dtype
    if teacher_grad:
        _assert_close(dt, dt_r, _grad_atol(dt_r, atol), rtol, "d teacher")
        assert dt.dtype == dtype
    else:
        assert dt is None and dt_r is None


@pytest.mark.parametrize("config", [(1, 2048, 8), (1, 128, 2), (8, 128, 4)], ids=["1x2048", "1x128", "8x128"])
def test_gpu_tilings(config):
    """The launch configurations a GPU picks (single 2048 block, short rows, several rows per program)."""
    B, C = (41, 1271) if config[1] == 2048 else (19, 100)
    t, s = _make_logits(B, C, torch.float32)
    y = torch.randint(0, C, (B,), device=DEVICE)
    w = (3.0, 0.9, 1.2, 0.4)
    g = torch.tensor(1.7, device=DEVICE)
    loss, stats, n_valid = logit_loss_forward(t, s, y, **named(w), config=config)
    dt, ds = logit_loss_backward(g, t, s, y, stats, n_valid, **named(w), need_teacher_grad=True,
                                 need_student_grad=True, config=config)
    loss_r, dt_r, ds_r = _run(logit_loss, t, s, y, w, g)
    _assert_close(loss, loss_r, _loss_atol(w[0]), 1e-5, "loss")
    _assert_close(dt, dt_r, _grad_atol(dt_r, 1e-5), 1e-4, "d teacher")
    _assert_close(ds, ds_r, _grad_atol(ds_r, 1e-5), 1e-4, "d student")


@pytest.mark.parametrize("C", [10, 1271])
def test_argmax_agreement_and_ties(C):
    """Rows built to agree / disagree, and ties that torch.argmax resolves to the first max index (within a
    column block and, at C = 1271, across blocks)."""
    B = 6
    t = torch.randn(B, C) * 0.5
    s = torch.randn(B, C) * 0.5
    lo, hi = 1, C - 2  # far apart: separate column blocks when C = 1271
    t[0, 3] = 5.0; s[0, 3] = 4.0  # noqa: E702  agree
    t[1, 3] = 5.0; s[1, hi] = 4.0  # noqa: E702  disagree
    t[2, lo] = 5.0; t[2, hi] = 5.0; s[2, lo] = 4.0  # noqa: E702  teacher tie, first index agrees
    t[3, lo] = 5.0; t[3, hi] = 5.0; s[3, hi] = 4.0  # noqa: E702  teacher tie, student on the second: disagree
    s[4, lo] = 4.0; s[4, hi] = 4.0; t[4, lo] = 5.0  # noqa: E702  student tie, first index agrees
    s[5, lo] = 4.0; s[5, hi] = 4.0; t[5, hi] = 5.0  # noqa: E702  student tie, teacher on the second: disagree
    t, s = t.to(DEVICE), s.to(DEVICE)
    y = torch.randint(0, C, (B,), device=DEVICE)
    agree = t.argmax(1) == s.argmax(1)
    assert agree.tolist() == [True, False, True, False, True, False]
    w = (1.0, 0.0, 1.0, 0.0)  # adversarial term alone
    g = torch.tensor(0.6, device=DEVICE)
    loss, dt, ds = _run(fused_logit_loss, t, s, y, w, g)
    loss_r, dt_r, ds_r = _run(logit_loss, t, s, y, w, g)
    _assert_close(loss, loss_r, 1e-6, 1e-5, "loss")
    _assert_close(dt, dt_r, 1e-7, 1e-4, "d teacher")
    _assert_close(ds, ds_r, 1e-7, 1e-4, "d student")
    assert (ds[~agree] == 0).all()  # disagreeing rows carry no adversarial gradient


def test_ignore_index():
    """Targets of -100 drop out of the CE mean, as in F.cross_entropy."""
    B, C = 9, 37
    t, s = _make_logits(B, C, torch.float32)
    y = torch.randint(0, C, (B,), device=DEVICE)
    y[[1, 4, 5]] = -100
    w = (2.0, 0.5, 1.33, 0.5)
    g = torch.tensor(1.3, device=DEVICE)
    loss, dt, ds = _run(fused_logit_loss, t, s, y, w, g)
    loss_r, dt_r, ds_r = _run(logit_loss, t, s, y, w, g)
    _assert_close(loss, loss_r, _loss_atol(w[0]), 1e-5, "loss")
    _assert_close(dt, dt_r, 1e-7, 1e-4, "d teacher")
    _assert_close(ds, ds_r, 1e-7, 1e-4, "d student")


def test_out_of_range_target_gives_nan():
    """F.cross_entropy raises on a target >= C; the kernel cannot raise without a host sync, so the loss is
    nan instead of a silently wrong number."""
    t, s = _make_logits(4, 10, torch.float32)
    y = torch.tensor([1, 10, 3, -100], device=DEVICE)
    assert torch.isnan(fused_logit_loss(t, s, y, temperature=1.0, kd_weight=0.0, adv_weight=1.33, ce_weight=0.5))
    # no CE term: targets unused
    assert torch.isfinite(fused_logit_loss(t, s, y, temperature=20.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0))


def test_no_grad_and_strided_inputs():
    """No input requires grad: forward only. Logits may be row-strided views (a slice of wider logits)."""
    B, C = 5, 100
    wide_t, wide_s = _make_logits(B, C + 23, torch.float32)
    t, s = wide_t[:, 7 : 7 + C], wide_s[:, 3 : 3 + C]
    y = torch.randint(0, C, (B,), device=DEVICE)
    w = (4.0, 1.0, 1.33, 0.5)
    loss = fused_logit_loss(t, s, y, **named(w))
    assert not loss.requires_grad
    _assert_close(loss, logit_loss(t, s, y, **named(w)), _loss_atol(w[0]), 1e-5, "loss")


def test_outputs_fully_written(monkeypatch):
    """Every buffer the launchers allocate starts as NaN: the loss and gradients must not keep any."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    B, C = 7, 300
    t, s = _make_logits(B, C, torch.bfloat16)
    y = torch.randint(0, C, (B,), device=DEVICE)
    w = (4.0, 0.7, 1.1, 0.3)
    g = torch.tensor(0.8, device=DEVICE)
    monkeypatch.setattr(torch, "empty", nan_empty)
    loss, dt, ds = _run(fused_logit_loss, t, s, y, w, g)
    monkeypatch.undo()
    assert torch.isfinite(loss) and torch.isfinite(dt.float()).all() and torch.isfinite(ds.float()).all()
    loss_r, dt_r, ds_r = _run(logit_loss, t, s, y, w, g)
    _assert_close(loss, loss_r, _loss_atol(w[0]), 1e-5, "loss")
    _assert_close(dt, dt_r, _grad_atol(dt_r, 1e-2), 1.6e-2, "d teacher")
    _assert_close(ds, ds_r, _grad_atol(ds_r, 1e-2), 1.6e-2, "d student")


def test_gradcheck_fp64():
    """fp64 inputs are computed in fp64 (and the loss returned in fp64): finite differences apply."""
    B, C = 3, 7
    t = (torch.randn(B, C, dtype=torch.float64) * 2).to(DEVICE).requires_grad_()
    s = (torch.randn(B, C, dtype=torch.float64) * 2).to(DEVICE)
    s[0] = t[0].detach() * 0.5  # at least one row whose argmaxes agree
    s.requires_grad_()
    y = torch.randint(0, C, (B,), device=DEVICE)
    w = dict(temperature=3.0, kd_weight=0.7, adv_weight=1.1, ce_weight=0.3)
    assert torch.autograd.gradcheck(lambda a, b: fused_logit_loss(a, b, y, **w), (t, s))


def test_opcheck():
    B, C = 3, 20
    t, s = _make_logits(B, C, torch.float32)
    y = torch.randint(0, C, (B,), device=DEVICE)
    args = (t.requires_grad_(), s.requires_grad_(), y, 2.0, 0.5, 1.33, 0.5)
    torch.library.opcheck(torch.ops.fastcae.logit_loss.default, args)
    loss, stats, n_valid = torch.ops.fastcae.logit_loss(*args)
    bargs = (torch.tensor(1.5, device=DEVICE), t.detach(), s.detach(), y, stats, n_valid, 2.0, 0.5, 1.33, 0.5,
             True, False)
    torch.library.opcheck(torch.ops.fastcae.logit_loss_backward.default, bargs)


@pytest.mark.parametrize("w", WEIGHTS[:2])
def test_compile_fullgraph(w):
    """torch.compile traces the registered ops (forward and backward) without graph breaks."""
    B, C = 5, 100
    t, s = _make_logits(B, C, torch.float32)
    y = torch.randint(0, C, (B,), device=DEVICE)

    def fn(a, b, targets):
        return fused_logit_loss(a, b, targets, **named(w)) * 2.0

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    g = torch.tensor(0.9, device=DEVICE)
    loss, dt, ds = _run(lambda a, b, targets, **_: compiled(a, b, targets), t, s, y, w, g)
    loss_e, dt_e, ds_e = _run(lambda a, b, targets, **_: fn(a, b, targets), t, s, y, w, g)
    _assert_close(loss, loss_e, 0.0, 0.0, "loss")
    _assert_close(dt, dt_e, 0.0, 0.0, "d teacher")
    _assert_close(ds, ds_e, 0.0, 0.0, "d student")


def test_input_errors():
    t, s = _make_logits(4, 10, torch.float32)
    y = torch.randint(0, 10, (4,), device=DEVICE)
    with pytest.raises(ValueError, match="differ in shape"):
        fused_logit_loss(t, s[:, :9], y, temperature=1.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0)
    with pytest.raises(ValueError, match="targets must be"):
        fused_logit_loss(t, s, y[:3], temperature=1.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0)
    with pytest.raises(TypeError, match="targets must be int64"):
        fused_logit_loss(t, s, y.float(), temperature=1.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0)
    with pytest.raises(ValueError, match="temperature"):
        fused_logit_loss(t, s, y, temperature=0.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0)
