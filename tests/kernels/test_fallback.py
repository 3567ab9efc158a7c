"""A fused kernel that fails (to compile, to launch, in its backward) never takes the run down: the op falls
back to its PyTorch reference, warns once with the kernel's name and the error, and the report says so."""

import warnings

import pytest
import torch

from fastcae import losses, ops
from fastcae.synthesis.cend import cend_linear_reference, counter_noise

pytestmark = pytest.mark.usefixtures("on_the_kernels_device")  # tests/kernels/conftest.py


@pytest.fixture(autouse=True)
def _fresh_kernel_state():
    """Each test starts with no failed or checked kernels and leaves none behind."""
    saved = (dict(ops._failed), set(ops._checked), dict(ops._ran))
    ops._failed.clear(), ops._checked.clear(), ops._ran.clear()
    with ops.backend("auto"):
        yield
    ops._failed.clear(), ops._checked.clear(), ops._ran.clear()
    ops._failed.update(saved[0]), ops._checked.update(saved[1]), ops._ran.update(saved[2])


def _break(monkeypatch, op: str, attr: str, error: Exception):
    def broken(*args, **kwargs):
        raise error
    monkeypatch.setattr(ops._kernel(op), attr, broken)


def _logits(b=6, c=5):
    t, s = torch.randn(b, c), torch.randn(b, c, requires_grad=True)
    return t, s, torch.randint(0, c, (b,))


def test_a_kernel_that_fails_to_compile_falls_back_to_the_reference_and_warns_once(monkeypatch):
    _break(monkeypatch, "logit_loss", "logit_loss", RuntimeError("PassManager::run failed\nmore lines"))
    t, s, y = _logits()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ops.logit_loss(t, s, y, temperature=4.0, kd_weight=1.0, adv_weight=0.5, ce_weight=0.2)
        again = ops.logit_loss(t, s, y, temperature=4.0, kd_weight=1.0, adv_weight=0.5, ce_weight=0.2)
    mine = [w for w in caught if "fused kernel logit_loss failed" in str(w.message)]
    assert len(mine) == 1 and "PassManager::run failed" in str(mine[0].message)
    want = losses.logit_loss(t, s, y, temperature=4.0, kd_weight=1.0, adv_weight=0.5, ce_weight=0.2)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(again, want)
    got.backward()  # the reference's graph: the run goes on
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert ops.kernel_report()["logit_loss"].startswith("reference (fused kernel failed: RuntimeError: PassManager")


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("triton: out of resources: shared memory, Required: 300000")


def test_a_kernel_whose_backward_fails_is_caught_before_the_callers_backward(monkeypatch):
    mod = ops._kernel("supcon_loss")
    real = mod.supcon_loss
    monkeypatch.setattr(mod, "supcon_loss", lambda z, labels, t: _FailingBackward.apply(real(z, labels, t)))
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1).requires_grad_(True)
    labels = torch.arange(8) % 3
    with pytest.warns(RuntimeWarning, match="fused kernel supcon_loss failed .*out of resources"):
        loss = ops.supcon_loss(z, labels, 0.1)
    loss.backward()  # the reference's backward: no error reaches the training step
    ref = z.detach().clone().requires_grad_(True)
    losses.supcon_loss(ref, labels, 0.1).backward()
    torch.testing.assert_close(z.grad, ref.grad)


def test_a_working_kernel_runs_fused_and_its_check_leaves_the_inputs_untouched():
    x = torch.randn(6, 4, 5, 5) * 2 + 1
    rm, rv = torch.randn(4), torch.rand(4) + 0.5
    em, ev = rm.clone(), rv.clone()
    before = [t.clone() for t in (x, rm, rv, em, ev)]
    ops.bn_stats_loss(x, rm, rv, em, ev, 0.3)
    for a, b in zip((x, rm, rv, em, ev), before):
        assert torch.equal(a, b)
    assert ops.kernel_report() == {"bn_stats_loss": "fused"}


def test_cend_linear_falls_back_even_when_the_caller_skipped_the_noise(monkeypatch):
    """The generator draws no noise tensor for the fused path; the fall-back regenerates it from the state."""
    _break(monkeypatch, "cend_linear", "cend_linear", RuntimeError("simulated launch failure"))
    B, D, O, C = 6, 16, 32, 3
    emb, mag, scale = torch.randn(C, D), torch.ones(4), torch.tensor(0.5)
    y, src = torch.arange(B) % C, torch.arange(B) % 4
    gamma, beta = torch.ones(D, requires_grad=True), torch.zeros(D, requires_grad=True)
    w, bias = torch.randn(O, D, requires_grad=True), torch.zeros(O, requires_grad=True)
    state = torch.tensor([123, 4096], dtype=torch.int64)
    rm, rv = torch.zeros(D), torch.ones(D)
    with pytest.warns(RuntimeWarning, match="cend_linear failed"):
        h = ops.cend_linear(emb, y, src, mag, scale, state, None, gamma, beta, rm, rv, training=True, momentum=0.1,
                            eps=1e-5, weight=w, bias=bias)
    rm2, rv2 = torch.zeros(D), torch.ones(D)
    want = cend_linear_reference(emb, y, src, mag, scale, counter_noise(123, 4096, src, D), gamma, beta, rm2, rv2,
                                 training=True, momentum=0.1, eps=1e-5, weight=w, bias=bias)
    torch.testing.assert_close(h, want)
    torch.testing.assert_close(rm, rm2)  # the running statistics moved once, as the reference moves them


def test_bad_input_is_still_an_error_and_the_triton_backend_raises(monkeypatch):
    with pytest.raises(ValueError):
        ops.supcon_loss(torch.randn(4, 8), torch.arange(5), 0.1)  # labels do not match the batch
    assert "supcon_loss" not in ops._failed
    _break(monkeypatch, "logit_loss", "logit_loss", RuntimeError("simulated"))
    with ops.backend("triton"), pytest.raises(RuntimeError, match="simulated"):
        ops.logit_loss(*_logits(), temperature=4.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0)
