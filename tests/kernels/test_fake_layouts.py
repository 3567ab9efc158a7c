"""The fake (meta) implementations that torch.compile traces with must promise the layout the real ops return:
a compiled graph that believes a gradient is column-major while the kernel wrote it row-major reads garbage."""

import pytest
import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode

import fastcae.kernels.cend_linear  # importing registers the ops (torch.ops.fastcae.*)
import fastcae.kernels.logit_loss  # noqa: F401  (as above; one name, fastcae, is bound by both imports)

pytestmark = pytest.mark.usefixtures("on_the_kernels_device")  # tests/kernels/conftest.py


def _same_meta(op, *args):
    real = op(*args)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake = op(*(mode.from_tensor(a) if isinstance(a, Tensor) else a for a in args))
    for r, f in zip(real, fake):
        assert (r.shape, r.dtype, r.stride()) == (f.shape, f.dtype, f.stride()), op


def test_logit_loss_backward_fake_is_row_major_for_transposed_logits():
    B, C = 6, 5
    t, s = torch.randn(C, B).t(), torch.randn(C, B).t()  # [B, C], column-major
    y = torch.randint(0, C, (B,))
    _, stats, n_valid = torch.ops.fastcae.logit_loss(t, s, y, 4.0, 1.0, 0.5, 0.2)
    _same_meta(torch.ops.fastcae.logit_loss_backward, torch.tensor(1.0), t, s, y, stats, n_valid, 4.0, 1.0, 0.5,
               0.2, True, True)


def test_cend_linear_backward_fake_is_row_major_for_a_transposed_weight():
    B, D, O, C = 6, 16, 32, 3
    emb, mag, scale = torch.randn(C, D), torch.ones(4), torch.tensor(0.5)
    y, src = torch.arange(B) % C, torch.arange(B) % 4
    state = torch.tensor([7, 0], dtype=torch.int64)
    gamma, beta = torch.ones(D), torch.zeros(D)
    w = torch.randn(D, O).t()  # [O, D], column-major
    h, mean, var = torch.ops.fastcae.cend_linear(emb, y, src, mag, scale, state, gamma, beta, None, None, True, 1e-5,
                                                 w, None)
    _same_meta(torch.ops.fastcae.cend_linear_backward, torch.randn_like(h), emb, y, src, mag, scale, state, gamma,
               beta, mean, var, 1e-5, w, w.dtype, True, True)
