"""Round-to-nearest division and square root for the kernels' loss scaling and normalisation.

On a GPU, Triton compiles fp32 ``a / b`` and ``tl.sqrt`` to approximate instructions (``div.full.f32``, up
to 2 ulp; ``sqrt.approx.f32``). Where a loss is scaled or normalised (KD's ``w / z`` next to a cancelling
log-sum-exp difference, which T^2 = 400 then multiplies; the BN loss's norms and their reciprocals; SupCon's
means) the kernels use these instead: IEEE round-to-nearest, as the PyTorch references compute. fp64 (the
gradcheck path) is round-to-nearest already, and ``div_rn`` / ``sqrt_rn`` accept fp32 only.
"""

import triton
import triton.language as tl


@triton.jit
def div_rn(a, b):
    if a.dtype.is_fp64():
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def sqrt_rn(x):
    if x.dtype.is_fp64():
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)
