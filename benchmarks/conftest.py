"""Benchmark set-up: shared fixtures and the machine/version record stored with every result.

Run with ``pytest benchmarks/ --benchmark-only``. GPU-only cases skip with a reason on a CPU machine.
Results quoted in the README and docs/ come from one run, with the machine named (see ``benchmarks/results/``).
"""

import datetime
import os
import platform

import pytest
import torch
from scales import DEVICE, sync  # noqa: F401  (benchmarks/ is on sys.path; sync is imported from here)

from fastcae.utils import versions

# On CPU, Triton kernels only run through the interpreter (slow, not a performance path): the fused cases
# skip there. Setting TRITON_INTERPRET here would make CPU timings meaningless, so it is never set.
requires_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="fused Triton kernels are timed on a CUDA GPU only")


# fp32 everywhere; bf16 only on a GPU (it doubles the CPU run for no insight into the kernels).
FLOAT_DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.bfloat16, id="bf16",
                 marks=pytest.mark.skipif(DEVICE != "cuda", reason="bf16 timed on GPU only (keeps the CPU run short)")),
]


@pytest.fixture
def device():
    return DEVICE


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(versions("triton"))  # python, torch, fastcae, triton
    machine_info["triton"] = machine_info["triton"] or "absent"
    machine_info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    machine_info["date"] = datetime.date.today().isoformat()
    machine_info["cpu_threads"] = torch.get_num_threads()
    machine_info["hostname_hint"] = os.environ.get("FASTCAE_MACHINE", platform.node())
