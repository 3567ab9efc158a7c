"""Counter-based random numbers in plain PyTorch, bit-identical to Triton's ``tl.rand`` / ``tl.randn``.

Triton's generator is Philox-4x32 with 10 rounds. For a seed and an int64 offset ``o`` it runs Philox on the
counter ``(lo32(o), hi32(o), 0, 0)`` with the key ``(lo32(seed), hi32(seed))`` (the seed sign-extended to 64
bits) and keeps the first one (``rand``) or two (``randn``) output words. A word becomes a float in [0, 1) by
reading it as int32, folding negatives with ``~x`` and multiplying by ``4.6566127342e-10`` in fp32; ``randn``
is Box-Muller on the two words (``r cos th``). See ``triton/language/random.py``.

Here uint32 arithmetic runs on int64 tensors (every value kept in ``[0, 2**32)``): the 32x32 -> 64-bit
products split one factor into 16-bit halves so nothing overflows. Any device; no Python loop over elements.
``philox_rand`` is bit-exact; ``philox_randn`` is within an ulp or two of Triton (``log``/``cos`` differ
between libm and the GPU's implementation).
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
_N_ROUNDS = 10
_UINT_TO_UNIFORM = 4.6566127342e-10  # largest scale with (2**31 - 1) * scale < 1 in fp32 (Triton's constant)
_TWO_PI = 6.283185307179586


def _mul_hi_lo(a: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """High and low 32 bits of the 64-bit product of the constant ``a`` and ``x`` (both in [0, 2**32))."""
    x_hi = x >> 16
    x_lo = x & 0xFFFF
    p_hi = a * x_hi  # < 2**48
    p_lo = a * x_lo  # < 2**48
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK32
    return hi, lo


def _philox_words(seed: int, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """First two Philox-4x32-10 output words (int64 tensors in [0, 2**32)) for counters ``offsets``."""
    if offsets.dtype != torch.int64:
        raise TypeError(f"offsets must be an int64 tensor, got {offsets.dtype}")
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    k0 = seed & _MASK32
    k1 = (seed >> 32) & _MASK32
    c0 = offsets & _MASK32
    c1 = (offsets >> 32) & _MASK32  # Triton: (offset >> 32) truncated to uint32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(_N_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, c1


def _uint_to_uniform(x: Tensor) -> Tensor:
    """Triton's ``uint_to_uniform_float`` for 32-bit words: int32 view, ``~x`` on negatives, times scale."""
    x = torch.where(x >= 2**31, x - 2**32, x)  # the int32 reading of the word
    x = torch.where(x < 0, -x - 1, x)  # ~x; now in [0, 2**31 - 1], exactly representable after rounding
    scale = torch.tensor(_UINT_TO_UNIFORM, dtype=torch.float32, device=x.device)
    return x.to(torch.float32) * scale


def philox_rand(seed: int, offsets: Tensor) -> Tensor:
    """Uniform [0, 1) fp32, one per int64 offset: equal to Triton's ``tl.rand(seed, offsets)``."""
    c0, _ = _philox_words(seed, offsets)
    return _uint_to_uniform(c0)


def _box_muller(u: Tensor, c1: Tensor) -> Tensor:
    """Triton's ``pair_uniform_to_normal`` (first output) on the uniform of word 0 and word 1."""
    u1 = torch.clamp_min(u, 1.0e-7)
    u2 = _uint_to_uniform(c1)
    th = torch.tensor(_TWO_PI, dtype=torch.float32, device=u.device) * u2
    r = torch.sqrt(-2.0 * torch.log(u1))
    return r * torch.cos(th)


def philox_randn(seed: int, offsets: Tensor) -> Tensor:
    """Standard normal fp32, one per int64 offset: Triton's ``tl.randn(seed, offsets)`` (Box-Muller)."""
    c0, c1 = _philox_words(seed, offsets)
    return _box_muller(_uint_to_uniform(c0), c1)


def philox_rand_randn(seed: int, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """``(philox_rand(seed, offsets), philox_randn(seed, offsets))`` from one Philox pass (half the work:
    ``tl.rand`` and ``tl.randn`` read the same counter's words)."""
    c0, c1 = _philox_words(seed, offsets)
    u = _uint_to_uniform(c0)
    return u, _box_muller(u, c1)
