"""The in-memory synthetic pool: kept images with their class label and CEND source id (METHOD.md 5.5).

The prior code wrote every kept image to disk as a PNG and re-decoded the whole directory each epoch; here
the pool is one preallocated tensor on the training device (uint8 by default, like those PNGs, or bf16),
filled in place, sampled with device-side indices: no file I/O and no host sync on the hot path.

Policy when full (``capacity`` images):
- ``fifo``: each new image replaces the oldest one (a ring buffer): the pool follows the generator.
- ``reservoir``: after ``n`` pushes each image ever pushed is in the pool with probability capacity / n
  (Vitter's algorithm R, vectorised): the pool stays a uniform sample of the whole run.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import POOL_DTYPES, POOL_POLICIES

DTYPES = {name: getattr(torch, name) for name in POOL_DTYPES}  # the names are torch's dtype names


class SyntheticPool:
    def __init__(self, capacity: int, image_shape, device="cpu", dtype: str = "uint8", policy: str = "fifo"):
        if capacity <= 0:
            raise ValueError(f"pool capacity must be positive, got {capacity}")
        if policy not in POOL_POLICIES:
            raise ValueError(f"unknown pool policy {policy!r}; known: {', '.join(POOL_POLICIES)}")
        if dtype not in DTYPES:
            raise ValueError(f"unknown pool dtype {dtype!r}; known: {', '.join(DTYPES)}")
        self.capacity = int(capacity)
        self.image_shape = tuple(image_shape)
        self.policy = policy
        self.dtype = dtype
        self.device = torch.device(device)
        # one spare row at the end: reservoir writes of rejected images land there (no masked, syncing write)
        self.images = torch.zeros((self.capacity + 1, *self.image_shape), dtype=DTYPES[dtype], device=self.device)
        self.labels = torch.zeros(self.capacity + 1, dtype=torch.int64, device=self.device)
        self.sources = torch.zeros(self.capacity + 1, dtype=torch.int64, device=self.device)
        self.pushed = 0  # images ever pushed (host int: pushes are counted, never read back from the device)

    def __len__(self) -> int:
        return min(self.pushed, self.capacity)

    def _encode(self, x: Tensor) -> Tensor:
        if self.dtype == "uint8":
            return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)
        return x.detach().to(torch.bfloat16)

    def _decode(self, x: Tensor) -> Tensor:
        if self.dtype == "uint8":
            return x.float() / 255.0
        return x.float()

    @torch.no_grad()
    def push(self, images: Tensor, labels: Tensor, sources: Tensor) -> None:
        """Add a batch of images in [0, 1] ``[B, *image_shape]`` with their labels and source ids."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"pool holds images of shape {self.image_shape}, got {tuple(images.shape[1:])}")
        b = images.shape[0]
        k = self.pushed + torch.arange(b, device=self.device)  # the running index of each new image
        if self.policy == "fifo":
            slots = k % self.capacity
        else:
            # algorithm R: image k (0-based) goes to slot k while there is room, else replaces a random slot
            # with probability capacity / (k + 1); rejected images go to the spare row.
            r = (torch.rand(b, device=self.device) * (k + 1).float()).long()
            slots = torch.where(k < self.capacity, k, torch.where(r < self.capacity, r, self.capacity))
        self.images[slots] = self._encode(images).to(self.device)
        self.labels[slots] = labels.to(self.device)
        self.sources[slots] = sources.to(self.device)
        self.pushed += b

    @torch.no_grad()
    def sample(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """``batch_size`` images drawn uniformly with replacement: (images float [0, 1], labels, sources)."""
        if self.pushed == 0:
            raise RuntimeError("the synthetic pool is empty: synthesise a batch before sampling")
        idx = torch.randint(0, len(self), (batch_size,), device=self.device)
        return self._decode(self.images[idx]), self.labels[idx], self.sources[idx]

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """All pool contents (decoded images, labels, sources), oldest slot first."""
        n = len(self)
        return self._decode(self.images[:n]), self.labels[:n], self.sources[:n]

    def state_dict(self) -> dict:
        n = len(self)
        return {
            "images": self.images[:n].cpu(),
            "labels": self.labels[:n].cpu(),
            "sources": self.sources[:n].cpu(),
            "pushed": self.pushed,
            "capacity": self.capacity,
            "policy": self.policy,
            "dtype": self.dtype,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("capacity", "policy", "dtype"):
            if state[key] != getattr(self, key):
                raise ValueError(f"pool {key} in the checkpoint is {state[key]!r}, this run has {getattr(self, key)!r}")
        n = state["images"].shape[0]
        if tuple(state["images"].shape[1:]) != self.image_shape:
            raise ValueError(f"pool images in the checkpoint have shape {tuple(state['images'].shape[1:])}, "
                             f"this run synthesises {self.image_shape}")
        self.images[:n] = state["images"].to(self.device)
        self.labels[:n] = state["labels"].to(self.device)
        self.sources[:n] = state["sources"].to(self.device)
        self.pushed = int(state["pushed"])
