"""Collects the teacher's BatchNorm statistics loss through forward hooks, during synthesis only.

DeepInversion-style methods compare the batch statistics of every teacher BatchNorm2d *input* with the
layer's running statistics. The hooks are attached for the synthesis step and removed afterwards: the prior
code left them firing through every student step, computing statistics nobody used. Each hook calls
``ops.bn_stats_loss`` once on the activation the forward already produced (one read; the fused kernel
computes mean, variance and the loss from it in one pass).

``first_weight`` multiplies the first BN layer's term (DeepInversion's ``first_bn_multiplier``). That layer
sees the image's low-level statistics (its contrast and, in colour, its hues); in a deep teacher it is one
term of dozens (3% of MobileNetV3's sum on noise). Weighted 10 times in planned runs (fastcae.defaults).

EMA (NAYER's "momentum" blend): ``blended = (1 - w) * batch + w * ema`` with ``w = 0`` until the first
``update_ema()`` and ``w = momentum`` afterwards; ``update_ema`` folds the last step's statistics in after
each synthesis batch.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from . import ops


def teacher_bn_layers(teacher: nn.Module) -> list[nn.BatchNorm2d]:
    """The teacher's BatchNorm2d layers, or a ValueError saying why the BN-statistics loss needs them."""
    layers = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    if not layers:
        raise ValueError(
            "the teacher has no BatchNorm2d layer, so the BN-statistics loss has nothing to match; "
            "pass bn_weight=0 to distil without it (expect far lower accuracy: it is the term that "
            "makes synthetic images look like the training data to the teacher)"
        )
    return layers


class BNStatsLoss:
    def __init__(self, teacher: nn.Module, momentum: float = 0.9, first_weight: float = 1.0):
        self.layers = teacher_bn_layers(teacher)
        self.first_weight = first_weight
        for m in self.layers:
            if m.running_mean is None or m.running_var is None:
                raise ValueError(f"teacher BatchNorm2d {m} tracks no running statistics (track_running_stats=False)")
        self.momentum = momentum
        device = self.layers[0].running_mean.device
        self.ema_mean = [torch.zeros_like(m.running_mean, dtype=torch.float32) for m in self.layers]
        self.ema_var = [torch.zeros_like(m.running_var, dtype=torch.float32) for m in self.layers]
        self.ema_weight = torch.zeros((), device=device)  # 0 until the first update: no EMA to blend yet
        self._losses: list[Tensor] = []
        self._stats: list[tuple[Tensor, Tensor] | None] = [None] * len(self.layers)
        self._handles = []

    def _hook(self, index: int):
        layer = self.layers[index]

        def hook(module, inputs, output):
            loss, mean, var = ops.bn_stats_loss(
                inputs[0], layer.running_mean, layer.running_var, self.ema_mean[index], self.ema_var[index],
                self.ema_weight,
            )
            self._losses.append(loss * self.first_weight if index == 0 and self.first_weight != 1 else loss)
            self._stats[index] = (mean, var)

        return hook

    @contextlib.contextmanager
    def active(self):
        """Attach the hooks for the forward passes inside the block (the synthesis step's teacher pass)."""
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        try:
            yield self
        finally:
            for h in self._handles:
                h.remove()
            self._handles = []

    def loss(self) -> Tensor:
        """Sum of the per-layer losses collected since the last call, the first layer's times ``first_weight``
        (and forget them)."""
        if not self._losses:
            raise RuntimeError("no BN statistics were collected: run the teacher inside `with bn.active():`")
        total = torch.stack(self._losses).sum()
        self._losses = []
        return total

    @torch.no_grad()
    def update_ema(self) -> None:
        """Fold the last collected statistics into the EMA (once per synthesis batch, as NAYER)."""
        for i, stats in enumerate(self._stats):
            if stats is None:
                continue
            mean, var = stats
            # first update: ema = batch; later: ema = m * ema + (1 - m) * batch. Written without a branch on
            # the device value: keep = m once an EMA exists, else 0.
            keep = (self.ema_weight > 0).float() * self.momentum
            self.ema_mean[i].mul_(keep).add_((1 - keep) * mean)
            self.ema_var[i].mul_(keep).add_((1 - keep) * var)
        self.ema_weight.fill_(self.momentum)

    def state_dict(self) -> dict:
        return {"ema_mean": [t.cpu() for t in self.ema_mean], "ema_var": [t.cpu() for t in self.ema_var],
                "ema_weight": self.ema_weight.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["ema_mean"]) != len(self.layers):
            raise ValueError(f"checkpoint has BN statistics for {len(state['ema_mean'])} teacher BN layers, "
                             f"this teacher has {len(self.layers)}")
        for i in range(len(self.layers)):
            self.ema_mean[i].copy_(state["ema_mean"][i])
            self.ema_var[i].copy_(state["ema_var"][i])
        self.ema_weight.copy_(state["ema_weight"])
