"""Synthesis health: is the generator producing what distillation needs? Measured per synthesis batch.

Three numbers per epoch, next to the BN-statistics loss the generator already reports:
- ``agreement``: how often the teacher classifies a kept image as the class it was generated for. A
  class-conditional generator is near 1; near ``1 / num_classes`` means the class prompts do nothing and the
  student learns from an unlabelled blur of the teacher's classes.
- ``diversity``: the mean per-pixel standard deviation among kept images of the same class (pixels in
  [0, 1]). Near 0 means the generator has collapsed to one image per class.
Both are computed on the device without a host sync; the loop reads them once per epoch. ``HealthMonitor``
warns once per run when either looks wrong after warm-up, with what to try.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

COLLAPSE_DIVERSITY = 0.01  # mean within-class pixel std below this: near-identical images
MIN_AGREEMENT = 0.5  # after warm-up, a generator whose images the teacher labels as asked less often than this
HEALTH_FIELDS = ("epoch", "phase", "g_bn", "agreement", "diversity")  # an epoch's synthesis health, as recorded


@torch.no_grad()
def batch_health(teacher: nn.Module, normalize, images: Tensor, labels: Tensor, num_classes: int) -> dict[str, Tensor]:
    """``{"agreement", "diversity"}`` of one kept batch, as 0-d device tensors."""
    agreement = (teacher(normalize(images)).argmax(dim=1) == labels).float().mean()
    flat = images.flatten(1).float()
    ones = torch.ones_like(labels, dtype=flat.dtype)
    count = torch.zeros(num_classes, device=images.device).index_add_(0, labels, ones)
    mean = torch.zeros(num_classes, flat.shape[1], device=images.device).index_add_(0, labels, flat)
    sq = torch.zeros_like(mean).index_add_(0, labels, flat * flat)
    n = count.clamp(min=1)[:, None]
    var = (sq / n - (mean / n) ** 2).clamp(min=0) * (n / (n - 1).clamp(min=1))
    has_pairs = (count > 1).float()
    diversity = (var.sqrt().mean(dim=1) * has_pairs).sum() / has_pairs.sum().clamp(min=1)
    return {"agreement": agreement, "diversity": diversity}


FLIP_CONSISTENT = 0.8  # the teacher's label survives a mirror image this often: flipping is a safe augmentation


@torch.no_grad()
def flip_consistency(teacher: nn.Module, normalize, images: Tensor, batch_size: int = 256) -> float:
    """How often the teacher gives a mirrored image the label of the original, on ``images`` in [0, 1].

    Natural-image teachers (CIFAR, ImageNet) keep their label under a mirror almost always; a digit or text
    teacher does not (a mirrored 2 is not a 2). Measured on the warm-up's kept images, which were synthesised
    without flipping, so the answer is the teacher's, not something synthesis optimised for."""
    same, total = 0, 0
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].float()
        a = teacher(normalize(x)).argmax(dim=1)
        b = teacher(normalize(x.flip(-1))).argmax(dim=1)
        same += int((a == b).sum())
        total += x.shape[0]
    return same / max(total, 1)


class HealthMonitor:
    """Warns once per problem per run, after warm-up, with what to try."""

    def __init__(self):
        self.warned: set[str] = set()

    def check(self, record: dict, settling: bool) -> None:
        """``settling``: the warm-up, or the epoch of a new generator; nothing is judged then."""
        if settling:
            return
        agreement, diversity = record.get("agreement"), record.get("diversity")
        if diversity is not None and diversity < COLLAPSE_DIVERSITY and "collapse" not in self.warned:
            self.warned.add("collapse")
            warnings.warn(
                f"the generator has collapsed: kept images of a class are near-identical (diversity {diversity:.4f} "
                f"at epoch {record['epoch']}). Try a larger noise magnitude (noise_magnitudes), a lower lr_g, or a "
                f"smaller adv_weight", UserWarning, stacklevel=3)
        if agreement is not None and agreement < MIN_AGREEMENT and "conditional" not in self.warned:
            self.warned.add("conditional")
            warnings.warn(
                f"the generator is not class-conditional after warm-up: the teacher labels only "
                f"{100 * agreement:.0f}% of kept images as the class they were made for (epoch {record['epoch']}). "
                f"Try a longer warm-up (warmup_epochs, or a larger max_seconds), a larger ce_weight, or a smaller "
                f"bn_weight", UserWarning, stacklevel=3)
