"""The reference math of every loss fastcae trains with.

These plain-PyTorch definitions are the CPU path and the oracle the fused kernels (``kernels/``, installed as
``fastcae.kernels``) are tested against: there is exactly one definition of each term. ``fastcae.ops`` is the
seam that picks a kernel or one of these. Everything here is host-sync free (no ``.item()``, no data-dependent
Python branches) so that it traces under ``torch.compile(fullgraph=True)``.

Shapes: logits ``[B, C]``; images/activations ``[N, C, H, W]``; projections ``[B, d]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_rows(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-row KL(p_teacher || p_student) at ``temperature``: ``[B]``, computed in fp32."""
    t = teacher_logits.float() / temperature
    s = student_logits.float() / temperature
    log_pt = F.log_softmax(t, dim=1)
    log_ps = F.log_softmax(s, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)


def kd_loss(teacher_logits: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD: batch mean of KL(p_t^T || p_s^T), times T^2 so gradients keep their scale across T."""
    return kl_rows(teacher_logits, student_logits, temperature).mean() * temperature**2


def adversarial_loss(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Minus the batch mean of KL(p_t || p_s) at T = 1, counted only where the argmaxes agree.

    The generator minimises it, i.e. it looks for images the student has not learned yet but the teacher
    still classifies the same way (rows that disagree are already "hard" and would push images off-manifold).
    The mask is computed with ``torch.where``-style arithmetic: no host sync.
    """
    agree = (teacher_logits.argmax(dim=1) == student_logits.argmax(dim=1)).float()
    return -(kl_rows(teacher_logits, student_logits, 1.0) * agree).mean()


def logit_loss(
    teacher_logits: Tensor,
    student_logits: Tensor,
    targets: Tensor,
    *,
    temperature: float,
    kd_weight: float,
    adv_weight: float,
    ce_weight: float,
) -> Tensor:
    """The weighted sum of the logit terms, the unit the fused ``logit_loss`` kernel computes in one pass.

    ``kd_weight * KD_T(t, s) + adv_weight * ADV(t, s) + ce_weight * CE(t, targets)``. Every loss here takes
    the teacher's logits first.
    The generator step uses ``adv`` + ``ce`` (gradients to both logits); the student step uses ``kd`` alone.
    Terms with weight 0 still run here (a Python branch on a weight would be a recompile guard, not a sync).
    """
    loss = kd_weight * kd_loss(teacher_logits, student_logits, temperature)
    loss = loss + adv_weight * adversarial_loss(teacher_logits, student_logits)
    loss = loss + ce_weight * F.cross_entropy(teacher_logits.float(), targets)
    return loss


def batch_channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of a BN input ``[N, C, H, W]`` (fp32, two-pass for accuracy)."""
    xf = x.float()
    mean = xf.mean(dim=(0, 2, 3))
    var = (xf - mean[None, :, None, None]).pow(2).mean(dim=(0, 2, 3))
    return mean, var


def bn_stats_loss(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    ema_mean: Tensor,
    ema_var: Tensor,
    ema_weight: Tensor | float,
) -> tuple[Tensor, Tensor, Tensor]:
    """DeepInversion's BatchNorm-statistics loss for one teacher BN layer, with NAYER's EMA blend.

    ``blended = (1 - w) * batch_stat + w * ema_stat`` (``w`` = 0.9, or 0 before any EMA exists), and
    ``loss = ||running_var - blended_var||_2 + ||running_mean - blended_mean||_2``.
    Returns ``(loss, batch_mean, batch_var)``; the batch statistics are detached (they feed the EMA only).
    ``ema_weight`` is a tensor so the first batch (no EMA yet) needs no Python branch.
    """
    mean, var = batch_channel_stats(x)
    w = ema_weight
    blended_mean = (1 - w) * mean + w * ema_mean
    blended_var = (1 - w) * var + w * ema_var
    loss = torch.linalg.vector_norm(running_var.float() - blended_var) + torch.linalg.vector_norm(
        running_mean.float() - blended_mean
    )
    return loss, mean.detach(), var.detach()


def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised-contrastive loss (Khosla et al. 2020) over L2-normalised projections ``z [B, d]``.

    For anchor ``i`` the positives are the other samples of its class (in fastcae: the same category
    embedding under other CEND noise), and the denominator runs over every sample but ``i``:
    ``l_i = -mean_{p in P(i)} [ z_i.z_p / tau - logsumexp_{a != i} z_i.z_a / tau ]``.
    The loss is the mean of ``l_i`` over anchors that have at least one positive (0 if none has).
    """
    z = z.float()
    b = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(dim=1)
    # where() rather than multiply: log_prob is -inf on the diagonal and 0 * -inf is nan.
    per_anchor = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_pos.clamp(min=1)
    has_pos = (n_pos > 0).float()
    return (per_anchor * has_pos).sum() / has_pos.sum().clamp(min=1.0)
