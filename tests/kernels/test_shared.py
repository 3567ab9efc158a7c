"""One reading of TRITON_INTERPRET for the seam and every kernel module, Triton's own (kernels/shared.py)."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False)])
def test_every_kernel_module_reads_triton_interpret_as_triton_does(value, expected):
    code = ("import fastcae.ops as ops, triton\n"
            "from fastcae.kernels import bn_stats_loss, cend_linear, kd_loss, supcon\n"
            "from triton import knobs\n"
            "seen = {m.__name__: m._INTERPRET for m in (bn_stats_loss, cend_linear, kd_loss, supcon)}\n"
            "seen['ops'] = ops._interpreting()\n"
            "seen['triton'] = bool(knobs.runtime.interpret)\n"
            "print(sorted(set(seen.values())))\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TRITON_INTERPRET=value),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str([expected])
