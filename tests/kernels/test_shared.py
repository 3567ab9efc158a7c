"""What the kernel modules take from ``kernels/shared.py`` and nowhere else: one reading of
TRITON_INTERPRET for the seam and every kernel module (Triton's own), and one exception, with one message
shape, for a tensor whose dtype or device a kernel does not take."""

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

import triton.language as tl

from fastcae.kernels import bn_stats_loss, cend_linear, logit_loss, shared, supcon_loss


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False)])
def test_every_kernel_module_reads_triton_interpret_as_triton_does(value, expected):
    code = ("import fastcae.ops as ops, torch, triton\n"
            "from fastcae.kernels import bn_stats_loss, cend_linear, logit_loss, shared, supcon_loss\n"
            "from triton import knobs\n"
            "mods = (bn_stats_loss, cend_linear, logit_loss, supcon_loss)\n"
            "assert not [m.__name__ for m in mods if hasattr(m, '_INTERPRET')], 'a private copy of the flag'\n"
            "seen = {m.__name__: m.INTERPRET for m in mods if hasattr(m, 'INTERPRET')}\n"
            "seen['shared'] = shared.INTERPRET\n"
            "try:\n"  # the device check every launcher runs: CPU tensors pass exactly when interpreting
            "    shared.check_device('op', 'x', torch.zeros(1), 'the reference')\n"
            "    seen['check_device'] = True\n"
            "except shared.UnsupportedTensorError:\n"
            "    seen['check_device'] = False\n"
            "seen['ops'] = ops._interpreting()\n"
            "seen['triton'] = bool(knobs.runtime.interpret)\n"
            "print(sorted(set(seen.values())))\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TRITON_INTERPRET=value),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str([expected])


def _logit_loss(dtype, device):
    t = torch.zeros(4, 10, dtype=dtype, device=device)
    return lambda: logit_loss.logit_loss_forward(t, t, torch.zeros(4, dtype=torch.int64, device=device),
                                                 temperature=4.0, kd_weight=1.0, adv_weight=0.0, ce_weight=0.0)


def _supcon_loss(dtype, device):
    z = torch.zeros(4, 16, dtype=dtype, device=device)
    return lambda: supcon_loss.supcon_loss_forward(z, torch.zeros(4, dtype=torch.int64, device=device), 0.1)


def _bn_stats_loss(dtype, device):
    x = torch.zeros(2, 3, 4, 4, dtype=dtype, device=device)
    bufs = [torch.zeros(3, device=device) for _ in range(4)]
    return lambda: bn_stats_loss.bn_stats_loss_forward(x, *bufs, None, 0.5)


def _cend_linear(dtype, device):
    B, D, O = 4, 16, 8
    f32 = dict(device=device)
    w = torch.zeros(O, D, dtype=dtype, device=device)
    idx = torch.zeros(B, dtype=torch.int64, device=device)
    return lambda: cend_linear.cend_linear_forward(
        torch.zeros(3, D, **f32), idx, idx, torch.ones(2, **f32), torch.tensor(0.5, **f32),
        torch.zeros(2, dtype=torch.int64, device=device), torch.ones(D, **f32), torch.zeros(D, **f32), None, None,
        True, 1e-5, w, None)


# (kernel's name in its messages, the input checked, the call on inputs of a dtype and device)
LAUNCHERS = [
    pytest.param("logit_loss", "teacher_logits", _logit_loss, id="logit_loss"),
    pytest.param("supcon_loss", "z", _supcon_loss, id="supcon_loss"),
    pytest.param("bn_stats_loss", "x", _bn_stats_loss, id="bn_stats_loss"),
    pytest.param("cend_linear", "weight", _cend_linear, id="cend_linear"),
]


@pytest.mark.parametrize("op,name,make", LAUNCHERS)
def test_every_kernel_refuses_a_bad_dtype_with_the_same_exception_and_message(op, name, make):
    with pytest.raises(shared.UnsupportedTensorError,
                       match=rf"^{op}: {name} must be fp32, bf16, fp16 or fp64; torch\.int32 is not supported$"):
        make(torch.int32, "cpu")()
    # a TypeError, and a ValueError as some kernels raised before: fastcae.ops re-raises both (bad input)
    assert issubclass(shared.UnsupportedTensorError, TypeError)
    assert issubclass(shared.UnsupportedTensorError, ValueError)


@pytest.mark.parametrize("op,name,make", LAUNCHERS)
def test_every_kernel_refuses_a_bad_device_with_the_same_exception_and_message(op, name, make):
    """A device the kernels cannot run on ("meta": neither CUDA nor, under the interpreter, the CPU)."""
    with pytest.raises(shared.UnsupportedTensorError,
                       match=rf"^{op}: {name} must be a CUDA tensor \(or a CPU tensor with TRITON_INTERPRET=1\); "
                             rf"meta is not supported \(use fastcae\.[a-z_.]+ there\)$"):
        make(torch.float32, "meta")()


def test_accumulation_dtypes_and_sm_counts():
    f32, bf16, f64 = (torch.zeros(1, dtype=d) for d in (torch.float32, torch.bfloat16, torch.float64))
    assert shared.acc_dtype(bf16) == shared.acc_dtype(f32, bf16) == torch.float32
    assert shared.acc_dtype(bf16, f64) == torch.float64
    assert shared.tl_dtype(torch.float32) == tl.float32 and shared.tl_dtype(torch.float64) == tl.float64
    assert shared.sm_count(torch.device("cpu")) == shared.INTERPRETER_SM_COUNT
