"""Supervised training of a classifier on tensors: the digits demo's teacher (and a recipe for others).

SGD with momentum, cosine decay, random crop (+ optional flip) on device tensors; the defaults of the
CIFAR teacher recipe (lr 0.1, momentum 0.9, weight decay 5e-4) with the schedule length left to the caller.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augment
from .data import ImageSplit
from .evaluate import accuracy


def train_classifier(
    model: nn.Module,
    train: ImageSplit,
    mean,
    std,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    padding: int | None = None,
    flip: bool = False,
    device="cpu",
    seed: int = 0,
    test: ImageSplit | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place; returns one record per epoch (loss, train/test accuracy)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    model.to(device).train()
    h = train.images.shape[-2]
    augment = Augment(mean, std, padding=padding if padding is not None else h // 8, flip=flip).to(device)
    images, labels = train.images.to(device), train.labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15, anneal_strategy="cos")
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="teacher", unit="epoch", dynamic_ncols=True)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), device=device)
        total = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(augment(images[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        record = {"epoch": epoch + 1, "loss": total.item() / steps_per_epoch}
        if test is not None and (epoch + 1 == epochs or (epoch + 1) % 5 == 0):
            record["test_accuracy"] = accuracy(model, test.images, test.labels, mean, std, device=device)
        history.append(record)
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    return history
