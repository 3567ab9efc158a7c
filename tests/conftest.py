"""Test set-up: Triton kernels run on CPU tensors through the interpreter when no GPU is present.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is created, i.e. before ``fastcae.kernels`` is
imported; conftest runs first. On a GPU machine leave it unset to test the compiled kernels.
"""

import hashlib
import os
import random

import pytest
import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_from_test_id(request):
    """Fresh but reproducible inputs: each test seeds torch from its own id."""
    seed = int(hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8], 16)
    torch.manual_seed(seed)
    random.seed(seed)
    yield


@pytest.fixture(autouse=True)
def _reference_kernels_outside_kernel_tests(request):
    """Library tests run the PyTorch references (the interpreter is far too slow for whole training runs);
    ``tests/kernels/`` and tests marked ``fused`` run the Triton kernels through the interpreter."""
    from fastcae import ops

    fused = "tests/kernels/" in request.node.nodeid.replace("\\", "/") or request.node.get_closest_marker("fused")
    with ops.backend(ops.get_backend() if fused else "reference"):
        yield


def pytest_configure(config):
    config.addinivalue_line("markers", "fused: runs the Triton kernels (interpreter on CPU) instead of references")
