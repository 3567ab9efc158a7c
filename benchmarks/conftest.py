"""Benchmark set-up: shared fixtures and the machine/version record stored with every result.

Run with ``pytest benchmarks/ --benchmark-only``. GPU-only cases skip with a reason on a CPU machine.
Results quoted in the README and docs/ come from one run, with the machine named (see ``benchmarks/results/``).
"""

import datetime
import os
import platform

import pytest
import torch

from benchmarks.scales import DEVICE
from fastcae.utils import versions


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
