"""CEND: Category Embedding Noise Diffusion (METHOD.md sections 3 and 5.2).

``e_n(c) = e_off(c) + M_n * q_n`` with ``q_n`` drawn from noise source ``n``. Four zero-mean, unit-variance
sources by default; each sample draws from one source, assigned round-robin so that every class sees every
source in a batch; the source id travels with the image (CNCL and the pool use it).

Magnitudes are relative to the embedding scale: the noise is ``M_n * rms(e_off) * q``, so ``M = 1`` gives a
noise vector as long, on average, as the embedding itself whatever the encoder's width. A magnitude is a
scalar per source or a ``[dim]`` vector per source, and may follow a schedule over epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import NOISE_SOURCES, check_noise_sources


def balanced_targets(batch_size: int, num_classes: int, device=None) -> Tensor:
    """Class ids ``0, 1, ..., C-1, 0, 1, ...``: every class equally often (blocks of K = C, as NAYER)."""
    return torch.arange(batch_size, device=device) % num_classes


def round_robin_sources(batch_size: int, num_classes: int, num_sources: int, device=None) -> Tensor:
    """Source id per sample: block ``k`` of C samples (one of each class) uses source ``k mod N``.

    With ``B >= N * C`` every class sees every source in a batch; with fewer, sources still alternate.
    """
    return (torch.arange(batch_size, device=device) // num_classes) % num_sources


def canonical_sources(names) -> Tensor:
    """Canonical ids (positions in ``NOISE_SOURCES``) of the configured sources, in configured order.

    Source ids that travel with samples are always canonical (0 gaussian ... 3 rademacher), whichever subset
    is configured, so the transform (here and in the kernel) and the pool agree on what an id means.
    """
    check_noise_sources(names)
    return torch.tensor([NOISE_SOURCES.index(n) for n in names], dtype=torch.int64)


def transform_uniform(u: Tensor, n: Tensor, source_ids: Tensor) -> Tensor:
    """Turn ``u ~ U(0, 1)`` and ``n ~ N(0, 1)`` (both ``[B, D]``) into unit-variance noise per source.

    gaussian: ``n``; uniform: ``sqrt(3) * (2u - 1)``; laplace (b = 1/sqrt 2): inverse CDF of ``u``;
    rademacher: ``sign(u - 1/2)``. One select, no per-source tensors: the fused kernel does the same.
    """
    s = source_ids[:, None]
    centred = u - 0.5
    uniform = math.sqrt(3.0) * 2.0 * centred
    # Laplace inverse CDF; clamp keeps log finite for u at the edges of [0, 1).
    laplace = -torch.sign(centred) * torch.log1p(-2.0 * centred.abs()).clamp(min=-30.0) / math.sqrt(2.0)
    rademacher = torch.where(centred >= 0, 1.0, -1.0).to(u.dtype)
    out = torch.where(s == 0, n, uniform)
    out = torch.where(s == 2, laplace, out)
    out = torch.where(s == 3, rademacher, out)
    return out


def counter_noise(seed: int, offset: int, source_ids: Tensor, dim: int) -> Tensor:
    """Unit-variance noise ``[B, dim]``, row ``i`` from source ``source_ids[i]``, from a counter-based RNG.

    Element ``(i, j)`` is a pure function of ``(seed, offset + i * dim + j)`` (Philox, bit-identical to
    Triton's ``tl.rand``/``tl.randn``), so the fused ``cend_linear`` kernel regenerates exactly this noise in
    registers without ever writing it, and a resumed run draws the same noise as an uninterrupted one.
    The uniform and the normal share a counter; each row uses only one of them, so that is harmless.
    """
    from .philox import philox_rand_randn

    b = source_ids.shape[0]
    offsets = offset + torch.arange(b * dim, device=source_ids.device, dtype=torch.int64).view(b, dim)
    u, n = philox_rand_randn(seed, offsets)  # one Philox pass gives both
    return transform_uniform(u, n, source_ids)


@dataclass
class MagnitudeSchedule:
    """Per-source magnitudes over training: ``start`` -> ``end`` by ``kind`` ("constant", "linear", "cosine").

    ``start``/``end`` hold one entry per source (a float, or a list of ``dim`` floats for per-dimension).
    """

    start: tuple
    end: tuple | None = None
    kind: str = "constant"

    def __post_init__(self):
        if self.kind not in ("constant", "linear", "cosine"):
            raise ValueError(f"unknown magnitude schedule {self.kind!r}; known: constant, linear, cosine")
        if self.end is not None and len(self.end) != len(self.start):
            raise ValueError("magnitude schedule: start and end need one entry per noise source")

    def at(self, progress: float) -> Tensor:
        """Magnitudes at ``progress`` in [0, 1] of training: ``[N]`` or ``[N, dim]`` (fp32), one row per
        configured source (see ``canonical_magnitudes`` to index them by canonical source id)."""
        start = torch.tensor(self.start, dtype=torch.float32)
        if self.kind == "constant" or self.end is None:
            return start
        end = torch.tensor(self.end, dtype=torch.float32)
        p = min(max(progress, 0.0), 1.0)
        w = p if self.kind == "linear" else 0.5 * (1.0 - math.cos(math.pi * p))
        return start + (end - start) * w


def canonical_magnitudes(magnitudes: Tensor, sources: Tensor) -> Tensor:
    """Scatter per-configured-source magnitudes ``[n]`` / ``[n, D]`` into canonical rows ``[4]`` / ``[4, D]``
    (sources that are not configured get magnitude 0; no sample uses them)."""
    full = magnitudes.new_zeros((len(NOISE_SOURCES), *magnitudes.shape[1:]))
    full[sources] = magnitudes
    return full


class CEND(nn.Module):
    """The non-parametric generator input: ``e_off[y] + M[s] * rms(e_off) * q``.

    Buffers: ``embeddings [C, D]`` (the offline category embeddings) and ``magnitudes [N]`` or ``[N, D]``
    (updated in place by the schedule, so compiled code sees one tensor). It owns no learnable parameter:
    that is CAE-DFKD's "paradigm change", which lets the generator persist across synthesis batches.
    """

    def __init__(self, embeddings: Tensor, magnitudes: Tensor):
        super().__init__()
        if embeddings.dim() != 2:
            raise ValueError(f"category embeddings must be [num_classes, dim], got {tuple(embeddings.shape)}")
        if magnitudes.dim() not in (1, 2) or (magnitudes.dim() == 2 and magnitudes.shape[1] != embeddings.shape[1]):
            raise ValueError(
                f"magnitudes must be [num_sources] or [num_sources, {embeddings.shape[1]}], "
                f"got {tuple(magnitudes.shape)}"
            )
        self.register_buffer("embeddings", embeddings.detach().float().clone())
        self.register_buffer("magnitudes", magnitudes.detach().float().clone())
        self.register_buffer("scale", embeddings.float().pow(2).mean().sqrt().reshape(()))

    @property
    def num_sources(self) -> int:
        return self.magnitudes.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def set_magnitudes(self, magnitudes: Tensor) -> None:
        self.magnitudes.copy_(magnitudes.to(self.magnitudes))

    def forward(self, targets: Tensor, source_ids: Tensor, noise: Tensor) -> Tensor:
        """Diffused embeddings ``[B, D]`` for class ids ``targets`` and unit-variance ``noise [B, D]``."""
        mag = self.magnitudes[source_ids]
        if mag.dim() == 1:
            mag = mag[:, None]
        return self.embeddings[targets] + mag * self.scale * noise


def cend_linear_reference(
    embeddings: Tensor,
    targets: Tensor,
    source_ids: Tensor,
    magnitudes: Tensor,
    scale: Tensor,
    noise: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    *,
    training: bool,
    momentum: float,
    eps: float,
    weight: Tensor,
    bias: Tensor | None,
) -> Tensor:
    """The CEND front of the ``cae`` generator in plain PyTorch: gather, diffuse, BatchNorm1d, first Linear.

    ``Linear(BN1d(e_off[y] + M[s] * scale * noise))`` -> ``[B, out]``. This is the reference (and CPU path)
    of the fused ``cend_linear`` kernel, which draws ``noise`` in registers from (seed, offset) instead.
    """
    mag = magnitudes[source_ids]
    if mag.dim() == 1:
        mag = mag[:, None]
    v = embeddings[targets] + mag * scale * noise
    v = F.batch_norm(v, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    return F.linear(v, weight, bias)
