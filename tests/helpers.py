"""Tiny models and options that make a whole distillation run take a second on CPU."""

import torch
from torch import nn

TINY = dict(epochs=3, warmup_epochs=1, warmup_synth_batches=1, synth_batches=1, student_steps=3, synth_batch_size=20,
            student_batch_size=16, g_steps=2, generator_width=4, text_encoder="random", progress=False, device="cpu",
            log_every=2, flip=False)


def tiny_classifier(num_classes=5, channels=1, bn=True):
    layers = [nn.Conv2d(channels, 8, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)]
    return nn.Sequential(*layers)


def trained_like_teacher(num_classes=5, channels=1):
    """A tiny teacher with non-trivial BN running statistics (as a trained one would have)."""
    t = tiny_classifier(num_classes, channels)
    with torch.no_grad():
        t[1].running_mean.uniform_(-0.5, 0.5)
        t[1].running_var.uniform_(0.5, 1.5)
    return t.eval()
