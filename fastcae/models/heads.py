"""CNCL's projection head: the student's penultimate features -> L2-normalised vectors for the contrastive loss.

It trains with the student (``fastcae.steps.contrastive_parts`` builds it at the student's feature width) and is
dropped after distillation: the deployed student is the classifier alone.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """CNCL's projection: Linear-ReLU-Linear to ``out_dim``, L2-normalised. Dropped after distillation."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(in_dim, out_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.net(f), dim=1)
