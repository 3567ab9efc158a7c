"""THE COMPILE SEAM: one generator step and one student step, as functions of state and batch.

Both are free of host syncs (no ``.item()``, no data-dependent Python branches): losses come back as device
tensors that the loop reads only every ``log_every`` steps. Shapes are static (fixed batch sizes), so a
compiled or CUDA-graph-captured version of these functions serves the whole run.

Synthesis step: ``generator -> x in [0, 1] -> augment -> teacher (BN hooks on) [+ student] ->
bn * BN + ce * CE + adv * ADV -> backward -> generator optimiser step``.
Student step: ``pool batch -> augment -> teacher (no grad) -> student (+ projection head) ->
KD_T + cncl * SupCon -> backward -> student optimiser step``.

Each step is a forward (``generator_loss``, ``student_loss``: what ``fastcae.compiled`` compiles into one
graph) and the orchestration around it (``generator_step``, ``student_step``: zero grads, BN hooks,
backward, optimiser step), which takes the compiled pieces when given a ``CompiledSteps``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .augment import Augment
from .bn_hooks import BNStatsLoss
from .config import DistillConfig
from .models.features import FeatureTap, features_and_logits, has_feature_api, num_features


@dataclass
class StepContext:
    """What both steps read: the frozen teacher, the student and its head, augmentation, BN statistics."""

    teacher: nn.Module
    student: nn.Module
    head: nn.Module | None
    augment: Augment
    bn: BNStatsLoss | None
    tap: FeatureTap | None = None  # the student's penultimate features, for a student without forward_features


class ProjectionHead(nn.Module):
    """CNCL's projection: Linear-ReLU-Linear to ``out_dim``, L2-normalised. Dropped after distillation."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(in_dim, out_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.net(f), dim=1)


def make_augment(cfg: DistillConfig, mean, std, image_shape, device) -> Augment:
    """The run's augmentation: crop padding H // 8 unless set; flip=None (decided after the warm-up) starts off."""
    padding = cfg.crop_padding if cfg.crop_padding is not None else image_shape[1] // 8
    return Augment(mean, std, padding=padding, flip=bool(cfg.flip)).to(device)


def contrastive_parts(student: nn.Module, cfg: DistillConfig, image_shape, device
                      ) -> tuple[ProjectionHead | None, FeatureTap | None]:
    """CNCL's projection head for ``student`` and, for a student without ``forward_features``, the hook that
    gives its penultimate features (attached per step); ``(None, None)`` when CNCL is off."""
    if cfg.cncl_weight <= 0:
        return None, None
    example = torch.zeros(2, *image_shape, device=device)
    head = ProjectionHead(num_features(student, example), cfg.cncl_dim).to(device)
    tap = None if has_feature_api(student) else FeatureTap(student, attach=False)
    return head, tap


def resolve_precision(precision: str | None, device) -> str:
    """The run's precision: the user's, or bf16 on a CUDA GPU with bf16 support and fp32 elsewhere."""
    device = torch.device(device)
    bf16_ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "bf16" and not bf16_ok:
        raise ValueError(f"precision='bf16' was asked for but {device} does not support bf16; use precision='fp32'")
    if precision is None:
        return "bf16" if device.type == "cuda" and bf16_ok else "fp32"
    return precision


def autocast(cfg: DistillConfig, device_type: str):
    """The forwards of a step under bf16 autocast when ``cfg.precision`` says so: convolutions and matmuls in
    bf16, master weights, optimiser states and the losses' reductions in fp32 (autocast runs softmax, norms
    and BN statistics in fp32; the fused kernels accumulate in fp32)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def accumulate(total: dict[str, Tensor] | None, terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """``total + terms`` per key, as new tensors (the first is a copy): a compiled step's outputs may live
    in CUDA-graph memory that the next replay overwrites, so nothing kept across steps aliases them."""
    if total is None:
        return {k: v.clone() for k, v in terms.items()}
    return {k: total[k] + v for k, v in terms.items()}


def generator_loss(generator: nn.Module, ctx: StepContext, targets: Tensor, sources: Tensor, cfg: DistillConfig,
                   adv_weight: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The synthesis forward: ``(loss, bn term, ce + adv term, images)``. Run it with ``ctx.bn.active()``
    entered (the hooks collect the teacher's batch statistics); compiled as one graph."""
    with autocast(cfg, targets.device.type):
        images = generator(targets, sources)
        x = ctx.augment(images)
        t_logits = ctx.teacher(x)
        bn_loss = ctx.bn.loss() if ctx.bn is not None else torch.zeros((), device=x.device)
        # The student only matters for the adversarial term: skip its forward during warm-up.
        s_logits = ctx.student(x) if adv_weight > 0 else t_logits.detach()
        logit = ops.logit_loss(t_logits, s_logits, targets, 1.0, 0.0, adv_weight, cfg.ce_weight)
    loss = cfg.bn_weight * bn_loss.float() + logit.float()
    return loss, bn_loss.detach(), logit.detach(), images.detach().float()  # kept images: fp32 in any precision


def generator_step(
    generator: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: StepContext,
    targets: Tensor,
    sources: Tensor,
    cfg: DistillConfig,
    adv_weight: float,
    after_backward=None,
    compiled=None,
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """One generator update. Returns (total loss, {term: value}, the step's images detached).
    ``compiled``: a ``fastcae.compiled.CompiledSteps`` (None: eager)."""

    def forward_backward(loss_fn):
        optimizer.zero_grad(set_to_none=True)
        with ctx.bn.active() if ctx.bn is not None else contextlib.nullcontext():
            loss, bn, logit, images = loss_fn(generator, ctx, targets, sources, cfg, adv_weight)
        loss.backward()
        return loss.detach(), {"bn": bn, "ce_adv": logit}, images

    out = forward_backward(generator_loss) if compiled is None else compiled.run("generator_loss", forward_backward)
    if after_backward is not None:
        after_backward()
    optimizer.step()
    return out


def student_loss(ctx: StepContext, images: Tensor, labels: Tensor, cfg: DistillConfig
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """The distillation forward on a pool batch: ``(loss, kd term, cncl term)``; compiled as one graph."""
    contrastive = ctx.head is not None and cfg.cncl_weight > 0
    with autocast(cfg, images.device.type):
        x = ctx.augment(images)
        with torch.no_grad():
            t_logits = ctx.teacher(x)
        if contrastive:
            features, s_logits = features_and_logits(ctx.student, x, ctx.tap)
        else:
            s_logits = ctx.student(x)
        kd = ops.logit_loss(t_logits, s_logits, labels, cfg.temperature, 1.0, 0.0, 0.0).float()
        loss = kd
        if contrastive:
            cncl = ops.supcon_loss(ctx.head(features), labels, cfg.cncl_temperature).float()
            loss = loss + cfg.cncl_weight * cncl
        else:
            cncl = torch.zeros((), device=x.device)
    return loss, kd.detach(), cncl.detach()


def student_step(
    ctx: StepContext,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    cfg: DistillConfig,
    compiled=None,
) -> dict[str, Tensor]:
    """One student update on a pool batch. Returns {"kd": ..., "cncl": ...} as device tensors."""

    def forward_backward(loss_fn):
        optimizer.zero_grad(set_to_none=True)
        with ctx.tap.active() if ctx.tap is not None else contextlib.nullcontext():
            loss, kd, cncl = loss_fn(ctx, images, labels, cfg)
        loss.backward()
        return {"kd": kd, "cncl": cncl}

    terms = forward_backward(student_loss) if compiled is None else compiled.run("student_loss", forward_backward)
    optimizer.step()
    return terms
