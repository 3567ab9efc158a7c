"""The fused path against the reference path, end to end: same seed, same losses and parameters.

Runs a short distillation twice: with every op on its PyTorch reference, and with every op on its Triton
kernel (through the interpreter on CPU; compiled on a GPU). The CEND noise comes from the same counter-based
stream on both paths, so the runs differ only by floating-point summation order.
Tolerance: losses within 1e-3 relative, parameters within 1e-3 absolute after 3 epochs (2 generator steps per
batch, 3 student steps per epoch).

And op by op, under the default ``auto`` backend (the one a run uses): CPU tensors with the interpreter (CUDA
tensors on a GPU) must route to the op's module in ``fastcae.kernels``, call its Triton kernel, be reported
"fused" by ``ops.kernel_report()``, and agree with the op's PyTorch reference (outputs, gradients, running
statistics) on a fresh random input.
"""

import copy

import pytest
import torch

from fastcae import distill, ops
from fastcae.synthesis.cend import counter_noise
from tests.helpers import TINY, tiny_classifier, trained_like_teacher

pytest.importorskip("triton")


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.fused
@pytest.mark.parametrize("paradigm", ["cae", "nayer"])
def test_fused_and_reference_paths_agree(paradigm):
    teacher, student = trained_like_teacher(), tiny_classifier()
    runs = {}
    for name in ("reference", "triton"):
        with ops.backend(name):
            runs[name] = distill(copy.deepcopy(teacher), copy.deepcopy(student), paradigm=paradigm,
                                 image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), **TINY)
    ref, fused = runs["reference"], runs["triton"]
    for h_ref, h_fused in zip(ref.history, fused.history):
        for key in ("g_bn", "g_ce_adv", "kd", "cncl"):
            if key in h_ref:
                assert h_fused[key] == pytest.approx(h_ref[key], rel=1e-3, abs=1e-5), (h_ref["epoch"], key)
    for (k, a), b in zip(ref.student.state_dict().items(), fused.student.state_dict().values()):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), f"student {k} differs"
    for (k, a), b in zip(ref.generator.state_dict().items(), fused.generator.state_dict().values()):
        if torch.is_tensor(a) and a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), f"generator {k} differs"


@pytest.mark.fused
def test_every_op_routes_to_its_kernel_under_the_triton_backend():
    x = torch.randn(4, 3)
    with ops.backend("triton"):
        for op in ("logit_loss", "bn_stats_loss", "supcon_loss", "cend_linear"):
            assert ops.uses_triton(op, x), op
            assert ops._kernel(op).__name__ == f"fastcae.kernels.{op}", op
    with ops.backend("reference"):
        assert not ops.uses_triton("logit_loss", x)


# --- op by op: the auto route on a fresh random input ----------------------------------------------------


def _logit_loss_case():
    t = torch.randn(6, 11, device=DEVICE) * 2 + 1
    s = 0.8 * t + 0.5 * torch.randn(6, 11, device=DEVICE)
    y = torch.randint(0, 11, (6,), device=DEVICE)

    def run():
        tt, ss = t.clone().requires_grad_(True), s.clone().requires_grad_(True)
        # KD, adversarial and CE terms all on
        loss = ops.logit_loss(tt, ss, y, temperature=4.0, kd_weight=1.0, adv_weight=0.5, ce_weight=0.2)
        loss.backward()
        return dict(loss=loss, d_teacher=tt.grad, d_student=ss.grad)

    return t, run


def _bn_stats_loss_case():
    x = torch.randn(4, 3, 5, 5, device=DEVICE) * 2 + 1
    rm, rv, em = torch.randn(3, device=DEVICE), torch.rand(3, device=DEVICE) + 0.5, torch.randn(3, device=DEVICE)
    ev = torch.rand(3, device=DEVICE) + 0.5

    def run():
        xx = x.clone().requires_grad_(True)
        loss, mean, var = ops.bn_stats_loss(xx, rm, rv, em, ev, 0.3)
        loss.backward()
        return dict(loss=loss, mean=mean, var=var, dx=xx.grad)

    return x, run


def _supcon_loss_case():
    z = torch.nn.functional.normalize(torch.randn(10, 16, device=DEVICE), dim=1)
    labels = torch.randint(0, 3, (10,), device=DEVICE)

    def run():
        zz = z.clone().requires_grad_(True)
        loss = ops.supcon_loss(zz, labels, 0.1)
        loss.backward()
        return dict(loss=loss, dz=zz.grad)

    return z, run


def _cend_linear_case():
    B, D, O, C = 6, 16, 24, 3
    emb = torch.randn(C, D, device=DEVICE) * 0.3 + 0.8
    y, src = torch.randint(0, C, (B,), device=DEVICE), torch.arange(B, device=DEVICE) % 4
    mag, scale = torch.rand(4, device=DEVICE) + 0.25, torch.tensor(0.5, device=DEVICE)
    gamma, beta = torch.rand(D, device=DEVICE) + 0.5, torch.randn(D, device=DEVICE)
    w, bias = torch.randn(O, D, device=DEVICE) / D**0.5, torch.randn(O, device=DEVICE)
    seed, offset = int(torch.randint(0, 2**31 - 1, ())), int(torch.randint(0, 2**20, ()))
    state = torch.tensor([seed, offset], dtype=torch.int64, device=DEVICE)
    noise = counter_noise(seed, offset, src, D)  # what the reference takes; the kernel draws it in registers
    grad_h = torch.randn(B, O, device=DEVICE)

    def run():
        params = [p.clone().requires_grad_(True) for p in (gamma, beta, w, bias)]
        rm, rv = torch.zeros(D, device=DEVICE), torch.ones(D, device=DEVICE)
        h = ops.cend_linear(emb, y, src, mag, scale, state, noise, params[0], params[1], rm, rv, training=True,
                            momentum=0.1, eps=1e-5, weight=params[2], bias=params[3])
        h.backward(grad_h)
        grads = {f"d_{n}": p.grad for n, p in zip(("bn_weight", "bn_bias", "weight", "bias"), params)}
        return dict(h=h, running_mean=rm, running_var=rv, **grads)

    return w, run


CASES = {"logit_loss": _logit_loss_case, "bn_stats_loss": _bn_stats_loss_case, "supcon_loss": _supcon_loss_case,
         "cend_linear": _cend_linear_case}


@pytest.fixture
def fresh_kernel_state():
    """No op starts on its reference because of an earlier failure; the state is put back afterwards."""
    saved = (dict(ops._failed), set(ops._checked), dict(ops._ran))
    ops._failed.clear(), ops._ran.clear()
    yield
    ops._failed.clear(), ops._checked.clear(), ops._ran.clear()
    ops._failed.update(saved[0]), ops._checked.update(saved[1]), ops._ran.update(saved[2])


@pytest.mark.fused
@pytest.mark.usefixtures("fresh_kernel_state")
@pytest.mark.parametrize("op", ops.OPS)
def test_the_auto_route_runs_the_triton_kernel_and_agrees_with_the_reference(op, monkeypatch):
    if DEVICE == "cpu" and not ops._INTERPRET:  # the one reading of TRITON_INTERPRET (kernels.shared)
        pytest.skip("CPU without TRITON_INTERPRET: no Triton route to test")
    assert sorted(CASES) == sorted(ops.OPS)
    key, run = CASES[op]()
    with ops.backend("reference"):
        assert not ops.uses_triton(op, key)
        want = run()

    mod = ops._kernel(op)
    assert mod is not None and mod.__name__ == f"fastcae.kernels.{op}"
    fused_fn, calls = getattr(mod, op), []  # the module's public function has the op's key as its name

    def spy(*args, **kwargs):
        calls.append(op)
        return fused_fn(*args, **kwargs)

    monkeypatch.setattr(mod, op, spy)
    ops.reset_report()
    with ops.backend("auto"):
        assert ops.uses_triton(op, key)
        got = run()
    assert calls, f"{op}: fastcae.ops did not call fastcae.kernels.{op}.{op}"
    assert ops.kernel_report() == {op: "fused"}
    assert want.keys() == got.keys()
    for name, expected in want.items():
        actual = got[name]
        assert actual is not None and actual.dtype == expected.dtype, (op, name)
        atol = 1e-4 * max(1.0, expected.abs().max().item())
        torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-4, msg=lambda m: f"{op} {name}: {m}")
