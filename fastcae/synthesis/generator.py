"""The shared generator body and its interchangeable inputs (METHOD.md section 2).

Body (Fast-DFKD, NAYER, CMI, DFAD; here for any ``H, W`` divisible by 4 and any channel count):
``Linear(in -> 2ngf * H/4 * W/4) -> BN2d -> Up x2 -> Conv3x3 -> BN -> LReLU(0.2) -> Up x2 -> Conv3x3 -> BN ->
LReLU(0.2) -> Conv3x3 -> Sigmoid``, output in [0, 1].

Inputs, one per paradigm, each mapping ``(targets, source_ids)`` of a batch to the body's input vector:
- ``CENDInput`` (cae): ``BN1d(e_off[y] + M[s] * rms * q)``; the noise ``q`` is drawn once per synthesis batch.
- ``NoisyLayerInput`` (nayer): ``BN1d(e_off[y])`` -> K-to-1 noisy Linear(D -> noisy_dim), re-drawn from N(0, 1)
  before each synthesis batch, one layer per group of K = C samples.
- ``LatentInput`` (fast): a learnable ``z [B, latent_dim]``, re-drawn per synthesis batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import ops
from .cend import CEND, counter_noise


class GeneratorBody(nn.Module):
    """Vector ``[B, in_dim]`` -> images ``[B, C, H, W]`` in [0, 1]."""

    def __init__(self, in_dim: int, image_shape: tuple[int, int, int], ngf: int = 64):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"the generator body upsamples twice by 2: image height and width must be "
                             f"multiples of 4, got {h}x{w}")
        self.image_shape = (c, h, w)
        self.init_hw = (h // 4, w // 4)
        self.l1 = nn.Linear(in_dim, 2 * ngf * self.init_hw[0] * self.init_hw[1])
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, c, 3, stride=1, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, v: Tensor) -> Tensor:
        return self.from_hidden(self.l1(v))

    def from_hidden(self, h: Tensor) -> Tensor:
        """Everything after the first Linear (the CEND front fuses that Linear with its input)."""
        return self.conv_blocks(h.view(h.shape[0], -1, *self.init_hw))


class GeneratorInput(nn.Module):
    """What every input offers the generator: ``new_batch`` (per synthesis batch) and ``front``, its vector
    through the body's first Linear. ``front`` is where an input may fuse that Linear (CEND does)."""

    def new_batch(self, targets: Tensor, source_ids: Tensor) -> None:
        pass

    def front(self, targets: Tensor, source_ids: Tensor, linear: nn.Linear) -> Tensor:
        return linear(self(targets, source_ids))


class CENDInput(GeneratorInput):
    """cae: CEND-diffused category embeddings through BatchNorm1d (which also removes the common direction
    that template prompts share, METHOD.md section 7). No parameter is re-initialised per batch.

    The noise of a synthesis batch is fixed by ``(noise_seed, noise_offset)``: every generator step of the
    batch sees the same inputs, and ``new_batch`` advances the counter past the previous batch's draws.
    The Python ints are the truth (saved through ``get_extra_state``); ``new_batch`` mirrors them, eagerly,
    into device buffers that a compiled step reads: ``noise_state`` (int64 ``[2]``, which the fused kernel
    loads from memory) and, on the reference path, ``noise`` (the batch's ``[B, D]`` draws). A compiled or
    CUDA-graph-captured step therefore never bakes in an offset, and never re-draws the noise per step.
    """

    def __init__(self, cend: CEND, seed: int = 0):
        super().__init__()
        self.cend = cend
        self.bn = nn.BatchNorm1d(cend.dim)
        self.out_dim = cend.dim
        self.noise_seed = int(seed)
        self.noise_offset = 0
        self._batch_size = 0
        self._synced = None  # what the device buffers hold: (seed, offset, batch, device, fused) or None
        self.register_buffer("noise_state", torch.zeros(2, dtype=torch.int64), persistent=False)
        self.register_buffer("noise", torch.empty(0, cend.dim), persistent=False)

    def get_extra_state(self):
        return {"noise_seed": self.noise_seed, "noise_offset": self.noise_offset, "batch_size": self._batch_size}

    def set_extra_state(self, state):
        self.noise_seed = int(state["noise_seed"])
        self.noise_offset = int(state["noise_offset"])
        self._batch_size = int(state["batch_size"])

    def new_batch(self, targets: Tensor, source_ids: Tensor) -> None:
        self.noise_offset += self._batch_size * self.cend.dim
        self._batch_size = targets.shape[0]
        self._sync(source_ids)

    def _sync_key(self, source_ids: Tensor):
        fused = ops.uses_triton("cend_linear", source_ids)
        return (self.noise_seed, self.noise_offset, source_ids.shape[0], source_ids.device, fused)

    @torch.no_grad()
    def _sync(self, source_ids: Tensor) -> None:
        """Write (seed, offset) to the device buffers, in place (kernel launches with scalar arguments: no
        host sync); on the reference path also draw the batch's noise once."""
        key = self._sync_key(source_ids)
        self.noise_state[0].fill_(self.noise_seed)
        self.noise_state[1].fill_(self.noise_offset)
        if not key[-1]:
            q = counter_noise(self.noise_seed, self.noise_offset, source_ids, self.cend.dim)
            if self.noise.shape == q.shape:
                self.noise.copy_(q)
            else:
                self.noise = q
        self._synced = key

    def front(self, targets: Tensor, source_ids: Tensor, linear: nn.Linear) -> Tensor:
        """``linear(BN1d(CEND(targets, source_ids)))`` through the kernel seam (fused on CUDA, no noise tensor)."""
        if not torch.compiler.is_compiling() and self._synced != self._sync_key(source_ids):
            self._sync(source_ids)  # an eager call outside the synthesis loop (pictures, tests, after a load)
        bn = self.bn
        if bn.training and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        return ops.cend_linear(
            self.cend.embeddings, targets, source_ids, self.cend.magnitudes, self.cend.scale, self.noise_state,
            self.noise, bn.weight, bn.bias, bn.running_mean, bn.running_var, training=bn.training,
            momentum=bn.momentum, eps=bn.eps, weight=linear.weight, bias=linear.bias,
        )

    def forward(self, targets: Tensor, source_ids: Tensor) -> Tensor:
        """The diffused, batch-normalised embeddings ``[B, D]`` (the unfused path, for inspection)."""
        noise = counter_noise(self.noise_seed, self.noise_offset, source_ids, self.cend.dim)
        return self.bn(self.cend(targets, source_ids, noise))


class NoisyLayerInput(GeneratorInput):
    """nayer: label embedding -> BN1d -> K-to-1 noisy layer (ceil(B/K) layers re-drawn per batch), feeding the
    body's first Linear directly (METHOD.md section 2)."""

    def __init__(self, embeddings: Tensor, batch_size: int, noisy_dim: int = 1000):
        super().__init__()
        num_classes, dim = embeddings.shape
        self.register_buffer("embeddings", embeddings.detach().float().clone())
        self.bn = nn.BatchNorm1d(dim)
        self.groups = math.ceil(batch_size / num_classes)
        self.k = num_classes
        self.noisy_weight = nn.Parameter(torch.empty(self.groups, dim, noisy_dim))
        self.noisy_bias = nn.Parameter(torch.zeros(self.groups, noisy_dim))
        self.out_dim = noisy_dim
        self.new_batch(None, None)

    @torch.no_grad()
    def new_batch(self, targets, source_ids) -> None:
        """Re-draw every noisy layer from N(0, 1) (NAYER's per-batch re-initialisation)."""
        self.noisy_weight.normal_(0.0, 1.0)
        self.noisy_bias.normal_(0.0, 1.0)

    def forward(self, targets: Tensor, source_ids: Tensor) -> Tensor:
        e = self.bn(self.embeddings[targets])  # [B, D]; sample i uses noisy layer i // K
        b, d = e.shape
        rows = self.groups * self.k
        if rows != b:  # a last, partial group: pad to whole groups, drop the padding after the product
            e = torch.cat([e, e.new_zeros(rows - b, d)])
        h = torch.bmm(e.view(self.groups, self.k, d), self.noisy_weight) + self.noisy_bias[:, None, :]
        return h.reshape(rows, -1)[:b]


class LatentInput(GeneratorInput):
    """fast: the generator input is a learnable latent ``z`` (optimised with its own lr), re-drawn per batch."""

    def __init__(self, batch_size: int, latent_dim: int = 256):
        super().__init__()
        self.z = nn.Parameter(torch.randn(batch_size, latent_dim))
        self.out_dim = latent_dim

    @torch.no_grad()
    def new_batch(self, targets, source_ids) -> None:
        self.z.normal_()

    def forward(self, targets: Tensor, source_ids: Tensor) -> Tensor:
        return self.z[: targets.shape[0]]


class Generator(nn.Module):
    """An input module followed by the shared body: ``(targets, source_ids) -> images in [0, 1]``."""

    def __init__(self, inp: nn.Module, image_shape: tuple[int, int, int], ngf: int = 64):
        super().__init__()
        self.input = inp
        self.body = GeneratorBody(inp.out_dim, image_shape, ngf)

    def new_batch(self, targets: Tensor, source_ids: Tensor) -> None:
        self.input.new_batch(targets, source_ids)

    def forward(self, targets: Tensor, source_ids: Tensor) -> Tensor:
        return self.body.from_hidden(self.input.front(targets, source_ids, self.body.l1))
