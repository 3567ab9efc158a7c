"""Shared by the kernel tests."""

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the fused kernels run (CPU: the interpreter)


@pytest.fixture
def on_the_kernels_device():
    """Factory calls without a device make their tensors where the fused kernels run (a GPU, or the CPU under
    the interpreter): CPU tensors on a GPU machine would go to the PyTorch reference and test nothing."""
    torch.set_default_device(DEVICE)
    yield
    torch.set_default_device("cpu")
