"""THE COMPILE SEAM: one generator step and one student step, as functions of state and batch.

Both are free of host syncs (no ``.item()``, no data-dependent Python branches): losses come back as device
tensors that the loop reads only every ``log_every`` steps. Shapes are static (fixed batch sizes), so a
compiled or CUDA-graph-captured version of these functions serves the whole run.

Synthesis step: ``generator -> x in [0, 1] -> augment -> teacher (BN hooks on) [+ student] ->
bn * BN + ce * CE + adv * ADV -> backward -> generator optimiser step``.
Student step: ``pool batch -> augment -> teacher (no grad) -> student (+ projection head) ->
KD_T + cncl * SupCon -> backward -> student optimiser step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .augment import Augment
from .bn_hooks import BNStatsLoss
from .config import DistillConfig
from .models.features import features_and_logits


@dataclass
class StepContext:
    """What both steps read: the frozen teacher, the student and its head, augmentation, BN statistics."""

    teacher: nn.Module
    student: nn.Module
    head: nn.Module | None
    augment: Augment
    bn: BNStatsLoss | None


class ProjectionHead(nn.Module):
    """CNCL's projection: Linear-ReLU-Linear to ``out_dim``, L2-normalised. Dropped after distillation."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(in_dim, out_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.net(f), dim=1)


def generator_step(
    generator: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: StepContext,
    targets: Tensor,
    sources: Tensor,
    cfg: DistillConfig,
    adv_weight: float,
    after_backward=None,
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """One generator update. Returns (total loss, {term: value}, the step's images detached)."""
    optimizer.zero_grad(set_to_none=True)
    images = generator(targets, sources)
    x = ctx.augment(images)
    if ctx.bn is not None:
        with ctx.bn.active():
            t_logits = ctx.teacher(x)
        bn_loss = ctx.bn.loss()
    else:
        t_logits = ctx.teacher(x)
        bn_loss = torch.zeros((), device=x.device)
    # The student only matters for the adversarial term: skip its forward during warm-up.
    s_logits = ctx.student(x) if adv_weight > 0 else t_logits.detach()
    logit = ops.logit_loss(t_logits, s_logits, targets, 1.0, 0.0, adv_weight, cfg.ce_weight)
    loss = cfg.bn_weight * bn_loss + logit
    loss.backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    terms = {"bn": bn_loss.detach(), "ce_adv": logit.detach()}
    return loss.detach(), terms, images.detach()


def student_step(
    ctx: StepContext,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    cfg: DistillConfig,
) -> dict[str, Tensor]:
    """One student update on a pool batch. Returns {"kd": ..., "cncl": ...} as device tensors."""
    x = ctx.augment(images)
    with torch.no_grad():
        t_logits = ctx.teacher(x)
    features, s_logits = features_and_logits(ctx.student, x)
    kd = ops.logit_loss(t_logits, s_logits, labels, cfg.temperature, 1.0, 0.0, 0.0)
    loss = kd
    if ctx.head is not None and cfg.cncl_weight > 0:
        cncl = ops.supcon_loss(ctx.head(features), labels, cfg.cncl_temperature)
        loss = loss + cfg.cncl_weight * cncl
    else:
        cncl = torch.zeros((), device=x.device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"kd": kd.detach(), "cncl": cncl.detach()}
