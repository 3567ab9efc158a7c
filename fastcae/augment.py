"""Random crop with padding, horizontal flip, CutMix and normalisation, batched on device tensors.

torchvision's transforms work one PIL image at a time on the host; here one call augments a whole
``[B, C, H, W]`` batch where it lives, with per-sample random offsets and flips, and no host sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .utils import channel_tensor, normalize


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Zero-pad by ``padding`` and take a random ``H x W`` window per sample (torchvision's RandomCrop)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    rows = (oy + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * padding)
    cols = (ox + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    # two gathers (rows, then columns) pick each sample's window without a Python loop or a host sync
    return padded.gather(2, rows).gather(3, cols)


def random_flip(x: Tensor) -> Tensor:
    """Flip each sample left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def cutmix(x: Tensor, labels: Tensor, share: float) -> tuple[Tensor, Tensor]:
    """CutMix for distillation: each of a random ``share`` of the samples gets one box, of uniformly random
    area and place, pasted from its neighbour in the batch (a pool batch is a random draw, so the neighbour is
    a random image). KD needs no mixed label (the teacher labels the mixed image); CNCL gets the label of the
    image that covers most of it. Per-sample boxes as masks: static shapes, no host sync, so it compiles.

    Why: kept images drift to what the teacher accepts but the student cannot generalise from, and a student
    trained many steps on them fits them; mixing makes every step's images new (Beyer et al., "A good teacher
    is patient and consistent", 2022: mixing pays in long schedules, costs in short ones; fastcae.plan)."""
    b, _, h, w = x.shape
    dev = x.device
    area = torch.rand(b, 1, 1, 1, device=dev) * (torch.rand(b, 1, 1, 1, device=dev) < share)
    side = area.sqrt()
    bh, bw = (side * h).floor(), (side * w).floor()
    y0 = (torch.rand(b, 1, 1, 1, device=dev) * (h - bh + 1)).floor()
    x0 = (torch.rand(b, 1, 1, 1, device=dev) * (w - bw + 1)).floor()
    rows = torch.arange(h, device=dev).view(1, 1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, 1, w)
    box = (rows >= y0) & (rows < y0 + bh) & (cols >= x0) & (cols < x0 + bw)
    mixed = torch.where(box, x.roll(1, 0), x)
    covered = box.flatten(1).float().mean(1)  # the pasted share of each image
    return mixed, torch.where(covered > 0.5, labels.roll(1, 0), labels)


class Augment:
    """``images in [0, 1] -> crop/flip (when training) -> (x - mean) / std``, the teacher's input."""

    def __init__(self, mean, std, padding: int = 4, flip: bool = True):
        self.mean, self.std = channel_tensor(mean), channel_tensor(std)
        self.padding = padding
        self.flip = flip

    def to(self, device) -> "Augment":
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def normalize(self, x: Tensor) -> Tensor:
        return normalize(x, self.mean, self.std)

    def __call__(self, x: Tensor) -> Tensor:
        x = random_crop(x, self.padding)
        if self.flip:
            x = random_flip(x)
        return self.normalize(x)
