"""The fused path against the reference path, end to end: same seed, same losses and parameters.

Runs a short distillation twice: with every op on its PyTorch reference, and with every op on its Triton
kernel (through the interpreter on CPU; compiled on a GPU). The CEND noise comes from the same counter-based
stream on both paths, so the runs differ only by floating-point summation order.
Tolerance: losses within 1e-3 relative, parameters within 1e-3 absolute after 3 epochs (2 generator steps per
batch, 3 student steps per epoch).
"""

import copy

import pytest
import torch

from fastcae import distill, ops
from tests.helpers import TINY, tiny_classifier, trained_like_teacher

pytest.importorskip("triton")


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
        for op in ("kd_loss", "bn_stats_loss", "supcon", "cend_linear"):
            assert ops.uses_triton(op, x), op
    with ops.backend("reference"):
        assert not ops.uses_triton("kd_loss", x)
