"""``tools/kernel_check.py``: the ahead-of-time compile check (no GPU), and what it compiles: the launches each
op module of ``fastcae.kernels`` describes (``aot_launches``).

The suite runs under the interpreter (tests/conftest.py), where the kernels are Python functions and the
launchers pick the interpreter's configs, so these tests run the check in a subprocess without
TRITON_INTERPRET. They compile one small kernel only; the whole check (about a minute a target) is
``python tools/kernel_check.py`` and ``.ci/triton_compat.sh``.
"""

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "kernel_check.py"


@pytest.fixture(scope="module")
def check():
    """The tool, loaded from its file (tools/ is no package: a developer tool, not part of the library)."""
    spec = importlib.util.spec_from_file_location("kernel_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _run(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_launch_lists_match_the_kernels(check):
    """Every launch the check would compile names every kernel argument, and no other (a kernel whose
    signature changed makes --list fail), for each kernel module and both targets."""
    for arch in ("sm_90", "sm_80"):
        r = _run(str(TOOL), "--list", "--arch", arch)
        assert r.returncode == 0, r.stderr
        listed = {line.split()[0] for line in r.stdout.splitlines()}
        for name in check.MODULES:
            assert any(k.startswith(name + ".") for k in listed), (name, sorted(listed))


def test_checks_every_kernel_module(check):
    """The check compiles every op module of ``fastcae.kernels`` (the ones ``fastcae.ops`` routes to), and
    each says which launches it makes."""
    from fastcae import ops

    assert sorted(check.MODULES) == sorted(ops.OPS)
    for name in ops.OPS:
        assert callable(importlib.import_module(f"fastcae.kernels.{name}").aot_launches), name


def test_launches_are_described_at_the_training_shapes():
    """The kernels may not import fastcae.config, so their CIFAR shapes repeat its defaults: kept equal here."""
    from fastcae.config import DistillConfig
    from fastcae.kernels import shared, supcon_loss

    cfg = DistillConfig()
    assert shared.AOT_BATCHES == (cfg.synth_batch_size, cfg.student_batch_size)
    assert supcon_loss._AOT_DIM == cfg.cncl_dim


def test_launches_follow_the_sm_count_without_a_device():
    """``aot_launches(n_sm)`` sizes the grids for the SM count it is given, and asks no device for one (no
    stand-in for ``torch.cuda.get_device_properties`` anywhere)."""
    code = (
        "import torch\n"
        "def _no_device(*a, **k):\n"
        "    raise RuntimeError('asked the device')\n"
        "torch.cuda.get_device_properties = _no_device\n"
        "from fastcae.kernels import OPS, logit_loss\n"
        "import importlib\n"
        "for name in OPS:\n"
        "    assert importlib.import_module('fastcae.kernels.' + name).aot_launches(8)\n"
        "print(logit_loss.aot_launches(132)[0].config, '|', logit_loss.aot_launches(8)[0].config)\n"
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    big, small = r.stdout.strip().split(" | ")
    assert "ROWS=1 " in big and "ROWS=16 " in small, r.stdout  # B=400: 2 programs a SM of 132, or of 8


def test_compiles_a_kernel_for_sm_90_without_a_gpu():
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(TOOL.parent)!r})\n"
        "import triton.language as tl\n"
        "from triton.backends.compiler import GPUTarget\n"
        "import kernel_check as check\n"
        "from fastcae.kernels import logit_loss as m\n"
        "f32 = check.Ptr('fp32')\n"
        "args = dict(stats_ptr=f32, y_ptr=check.Ptr('i64'), loss_ptr=f32, nvalid_ptr=f32, B=400, temperature=20.0,\n"
        "            kd_weight=1.0, adv_weight=0.0, ce_weight=0.0, HAS_KD=True, HAS_ADV=False, HAS_CE=False,\n"
        "            IGNORE=-100, BLOCK_B=512, ACC=tl.float32)\n"
        "c = check._compile(m._logit_loss_reduce_kernel, args, GPUTarget('cuda', 90, 32), {'num_warps': 4})\n"
        "regs, spills = check._n_regs_spills(c.asm['cubin'])\n"
        "print(regs, spills, c.metadata.shared, c.metadata.num_warps)\n"
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    regs, spills, _shared, warps = map(int, r.stdout.split())
    assert 0 < regs <= 255 and spills == 0 and warps == 4


def test_refuses_to_run_under_the_interpreter(check, monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert check.run(90) == 2
    assert "TRITON_INTERPRET" in capsys.readouterr().out


def test_specialisation_follows_the_jit(check):
    """Pointers and integers divisible by 16 get the divisibility hint; integers equal to 1 are folded."""

    class _Param:
        def __init__(self, name, is_constexpr=False):
            self.name, self.is_constexpr = name, is_constexpr

    class _Fn:
        __name__ = "k"
        params = [_Param("x"), _Param("n"), _Param("s"), _Param("one"), _Param("big"), _Param("f"),
                  _Param("BLOCK", True)]
        arg_names = [p.name for p in params]

    types, constexprs, hints = check._specialise(
        _Fn, dict(x=check.Ptr("bf16"), n=400, s=10, one=1, big=2**40, f=0.5, BLOCK=64))
    assert types == dict(x="*bf16", n="i32", s="i32", one="i32", big="i64", f="fp32", BLOCK="constexpr")
    assert constexprs == dict(one=1, BLOCK=64)
    assert hints == {0: 16, 1: 16, 3: 1, 4: 16}
