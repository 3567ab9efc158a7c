"""What the teacher, the image shape and the device decide for a planned run, besides its schedule.

A planned run (``max_seconds`` without a schedule) makes the synthesis choices it can see the reasons for
(``synthesis_defaults``): the generator's width and learning rate from the device and the image size, the
BN term's weights from the teacher's own statistics on noise, CEND's noise magnitude, and whether to flip
(decided after the warm-up). Fields the user set are kept. ``fastcae.plan`` then sizes the schedule.
"""

from __future__ import annotations

import torch
from torch import nn

from .augment import Augment
from .bn_stats import BNStatsLoss
from .config import DistillConfig

BN_REFERENCE = 30.0  # see bn_noise_level: the BN-term scale at which the suite's teachers became class-conditional
# DeepInversion's first_bn_multiplier. In a deep teacher the first layer's term is a few percent of the sum
# (MobileNetV3: 3% on noise); x10 raised its 240 s students from 84.2% to 88.9% (five seeds) and left the other
# fidelity cases as they were (docs/fidelity.md)
FIRST_BN_WEIGHT = 10.0
# The persistent cae generator's Adam rate in a planned CPU run, where it is 16 or 32 wide (cpu_generator_width)
# and gets a few thousand steps in the budget. 0.01 against NAYER's 0.004 raised MobileNetV3's students from
# 91.3% to 93.0% at 240 s (five seeds) and from 87.0% to 90.4% at 60 s, and left the other five fidelity cases
# within their seed spread at both budgets (docs/fidelity.md)
CPU_LR_G = 0.01
# CEND's noise magnitude (relative to the embeddings' rms) in a planned cae run: twice the default of 1. At 1 the
# persistent generator learns to ignore the noise, and on natural images each class collapsed to one picture
# with small variations (within-class pixel std 0.05; a public CIFAR-10 ResNet-56 -> ResNet-20 student reached
# 18.5% at 200 s, 2 CPU cores, seeds 0-1). At 2: 0.10-0.15 and 32.4% (34.9, 29.9), and 36.0% against 28.8% at
# 600 s. 3 and 5 gave 27.8% and 34.7% (one seed each; at 3 the pictures of different classes looked alike);
# a pixel-distance or teacher-feature diversity loss instead, 21-26% (docs/natural-images.md)
PLANNED_NOISE = 2.0


@torch.no_grad()
def bn_noise_level(teacher: nn.Module, image_shape, mean, std, device, batch: int = 64,
                   first_weight: float = 1.0) -> float:
    """The teacher's BN-statistics loss (summed over its BN layers, the first times ``first_weight``, no EMA)
    on a fixed batch of uniform noise.

    Why: that sum grows with the number of BN layers and the size of their statistics. Measured here: 78 for
    the demo's 4-layer CNN, 110 for a 6-layer VGG, 85 for a ResNet-8 and 918 for torchvision's 34-layer
    MobileNetV3, whose sum is 385 even on its own training images. At NAYER's weight of 10 the MobileNetV3's
    term was a thousand times the cross-entropy, and the generator never became class-conditional."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, *image_shape, generator=g).to(device)
    bn = BNStatsLoss(teacher, first_weight=first_weight)
    with bn.active():
        teacher(Augment(mean, std, padding=0, flip=False).to(device)(x))
    return float(bn.loss())


def synthesis_defaults(cfg: DistillConfig, given: set[str], image_shape, device, teacher: nn.Module | None = None,
                       mean=None, std=None) -> dict:
    """Choices a planned run makes from what it can see (fields the user set are kept):
    - ``generator_width``: on a GPU NAYER's 64 at 32 px or more and 32 below; on a CPU 16 at 32 px or more
      and 32 below (``cpu_generator_width``: there the generator's convolutions are a large share of a
      synthesis step, and a 32 px budget run is short of images rather than of generator capacity);
    - ``flip``: None, decided after the warm-up by whether the teacher keeps its labels on mirrored images
      (a digits teacher does not; flipping its images teaches the student labels the teacher never meant);
    - ``bn_first_weight``: ``FIRST_BN_WEIGHT``, so the first BN layer (the images' contrast and colours) is
      not one term among dozens in a deep teacher;
    - ``bn_weight``: NAYER's 10 scaled by ``BN_REFERENCE / bn_noise_level(teacher)`` (with that first-layer
      weight), so the BN term weighs the same against the cross-entropy whatever the teacher's depth and
      statistics;
    - ``noise_magnitudes``: for ``cae``, ``PLANNED_NOISE`` for every source, so the generator cannot ignore its
      noise and collapse each class to one picture;
    - ``lr_g``: for ``cae`` on a CPU ``CPU_LR_G``, 2.5x NAYER's 0.004 (see there); NAYER's on a GPU, where it
      is unmeasured, and for ``nayer`` (a fresh Adam every batch) and ``fast`` (its meta-step is already
      ``lr_g`` x generator steps): at 0.01 ``nayer`` lost MobileNetV3 points and ``fast`` gained none."""
    out = {}
    if "flip" not in given:
        out["flip"] = None
    if "bn_first_weight" not in given:
        out["bn_first_weight"] = FIRST_BN_WEIGHT
    if "bn_weight" not in given and teacher is not None and cfg.bn_weight > 0:
        first = out.get("bn_first_weight", cfg.bn_first_weight)
        level = bn_noise_level(teacher, image_shape, mean, std, device, first_weight=first)
        out["bn_weight"] = round(cfg.bn_weight * BN_REFERENCE / max(level, 1e-6), 4)
    on_cpu = torch.device(device).type == "cpu"
    if "generator_width" not in given:
        if on_cpu:
            out["generator_width"] = cpu_generator_width(image_shape)
        else:
            out["generator_width"] = 32 if min(image_shape[1:]) < 32 else 64
    if "lr_g" not in given and cfg.paradigm == "cae" and on_cpu:
        out["lr_g"] = CPU_LR_G
    if cfg.paradigm == "cae" and not given & {"noise_magnitudes", "noise_magnitudes_end"}:
        out["noise_magnitudes"] = (PLANNED_NOISE,) * len(cfg.noise_sources)
    return out


def cpu_generator_width(image_shape) -> int:
    """The generator width a CPU run plans: 16 at 32 px or more, 32 below.

    Why: on a CPU a synthesis step costs the generator's convolutions (pixels x width^2) plus the teacher's
    forward and backward. At 32 px and width 32 the generator was 55 of MobileNetV3's 90 ms step; at width 16
    the step took 25-31% less, a 60 s run kept 1.5-1.9x the images, and the fidelity suite's four 32 px
    cases gained at 60 s (MobileNetV3 +3.4 points) and held at 240 s. The 16 px runs, which at width 32
    already kept 2.5x the images of the 32 px ones, lost 0.1-0.5 points at width 16 (docs/fidelity.md)."""
    return 16 if min(image_shape[1:]) >= 32 else 32
