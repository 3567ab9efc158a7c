"""What every kernel module shares, in one place.

- **The runtime**: whether Triton is interpreting (``TRITON_INTERPRET``, read as Triton reads it; the kernel
  files used to read it each their own way, and one took only "1", so ``TRITON_INTERPRET=true``, which Triton
  honours, sent CPU tensors to a launcher that refused them) and the GPU's SM count.
- **Round-to-nearest division and square root** for the loss scaling and normalisation. On a GPU, Triton
  compiles fp32 ``a / b`` and ``tl.sqrt`` to approximate instructions (``div.full.f32``, up to 2 ulp;
  ``sqrt.approx.f32``). Where a loss is scaled or normalised (KD's ``w / z`` next to a cancelling
  log-sum-exp difference, which T^2 = 400 then multiplies; the BN loss's norms and their reciprocals;
  SupCon's means) the kernels use ``div_rn`` / ``sqrt_rn``: IEEE round-to-nearest, as the PyTorch references
  compute. fp64 (the gradcheck path) is round-to-nearest already, and Triton's ``div_rn`` / ``sqrt_rn``
  accept fp32 only.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter, by Triton's own reading of ``TRITON_INTERPRET``."""
    try:
        from triton import knobs  # Triton >= 3.4: "1", "true", "on", "yes"

        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):  # Triton 3.2/3.3, which read only "1"
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


INTERPRET = interpreting()  # read once, at import, as the @triton.jit decorators are


@functools.lru_cache(maxsize=None)
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device) -> int:
    """Streaming multiprocessors of a CUDA ``device`` (cached per device)."""
    device = torch.device(device)
    return _sms(device.index if device.index is not None else torch.cuda.current_device())


@triton.jit
def div_rn(a, b):
    """``a / b`` rounded to nearest (fp32 and fp64)."""
    if a.dtype.is_fp64():
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def sqrt_rn(x):
    """``sqrt(x)`` rounded to nearest (fp32 and fp64)."""
    if x.dtype.is_fp64():
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)
