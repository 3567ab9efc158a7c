"""Fused Triton kernels for the DFKD hot path, one op per module (installed as ``fastcae.kernels``), and
``shared`` (the interpreter flag, SM counts, round-to-nearest division and square root).

Each op's PyTorch reference is the library's own definition in ``fastcae.losses`` / ``fastcae.cend``;
``fastcae.ops`` is the seam that routes a call to a kernel or to its reference.
"""
