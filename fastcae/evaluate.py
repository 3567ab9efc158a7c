"""Scoring a classifier on a labelled set: top-1 accuracy.

Images come in [0, 1], as the generator produces them; the teacher's mean/std are applied here, so the
same normalisation serves synthetic and real images. How well a model's features transfer to another task
(linear probe, fine-tuning) is ``fastcae.apps.transfer``, above the training loops it uses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .utils import channel_tensor, eval_mode, normalize


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, mean, std, batch_size: int = 500,
             device=None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``images [N, C, H, W]`` in [0, 1] with ``labels [N]``."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    m, s = channel_tensor(mean, device), channel_tensor(std, device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with eval_mode(model):
        for i in range(0, images.shape[0], batch_size):
            x = normalize(images[i : i + batch_size].to(device).float(), m, s)
            y = labels[i : i + batch_size].to(device)
            correct += (model(x).argmax(dim=1) == y).sum()
    return correct.item() / max(images.shape[0], 1)
