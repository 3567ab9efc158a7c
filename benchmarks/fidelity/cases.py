"""The fidelity suite's cases: teacher/student pairs fastcae's defaults were never tuned on.

Every case is built from real images that need no download (scikit-learn's bundled handwritten digits,
in variants: grey or coloured, 16 or 32 pixels, rotated, 10 or 20 classes), a teacher architecture the
library does not ship (a torchvision MobileNetV3, a CIFAR-style ResNet-8, a VGG-style CNN) and a student
(a plain CNN, a depthwise-separable MobileNet-style net). Teachers are trained here, once, and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fastcae.apps.data import ImageSplit, load_digits
from fastcae.datasets import DIGIT_NAMES


# ------------------------------------------------------------------------------------------- datasets
def _rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its own angle (bilinear, zero fill)."""
    rad = degrees * math.pi / 180
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False).clamp(0, 1)


def _colourise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Grey strokes -> a random bright stroke colour on a random dark background colour, per image."""
    n = images.shape[0]
    fg = 0.5 + 0.5 * torch.rand(n, 3, 1, 1, generator=generator)
    bg = 0.3 * torch.rand(n, 3, 1, 1, generator=generator)
    return (images * fg + (1 - images) * bg).clamp(0, 1)


def _variant(split: ImageSplit, *, colour: bool, rotate: float, seed: int) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    x = split.images
    if rotate:
        x = _rotate(x, (torch.rand(x.shape[0], generator=g) * 2 - 1) * rotate)
    x = _colourise(x, g) if colour else x
    return ImageSplit(x.contiguous(), split.labels)


def _quarter_turns(split: ImageSplit) -> ImageSplit:
    """20 classes: each digit upright (class d) and turned a quarter to the left (class 10 + d)."""
    turned = torch.rot90(split.images, 1, dims=(2, 3))
    return ImageSplit(torch.cat([split.images, turned]), torch.cat([split.labels, split.labels + 10]))


def _three_channels(split: ImageSplit) -> ImageSplit:
    return ImageSplit(split.images.expand(-1, 3, -1, -1).contiguous(), split.labels)


@dataclass(frozen=True)
class DataSpec:
    name: str
    size: int
    colour: bool = False  # random fore/background colours (3 channels)
    grey_as_rgb: bool = False  # grey digits replicated to 3 channels (for ImageNet-style models)
    rotate: float = 0.0  # random rotation within +-rotate degrees
    quarter_turn_classes: bool = False  # 20 classes: upright and turned digits

    @property
    def class_names(self) -> list[str]:
        names = list(DIGIT_NAMES)
        return names + [f"turned {n}" for n in names] if self.quarter_turn_classes else names

    def load(self) -> tuple[ImageSplit, ImageSplit]:
        train, test = load_digits(image_size=self.size, seed=0)
        out = []
        for i, split in enumerate((train, test)):
            if self.quarter_turn_classes:
                split = _quarter_turns(split)
            split = _variant(split, colour=self.colour, rotate=self.rotate, seed=100 + i)
            if self.grey_as_rgb:
                split = _three_channels(split)
            out.append(split)
        return out[0], out[1]


# ------------------------------------------------------------------------------------------- networks
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet8(nn.Module):
    """CIFAR-style ResNet-8: a 16-channel stem and three stages of one basic block (16, 32, 64)."""

    def __init__(self, num_classes: int, in_chans: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


def vgg_bn(num_classes: int, in_chans: int) -> nn.Module:
    """VGG-style: pairs of conv-BN-ReLU at 32, 64, 128 channels, max-pooled between, global pool, linear."""
    layers, cin = [], in_chans
    for i, width in enumerate((32, 32, 64, 64, 128, 128)):
        layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def mobilenet_v3_small(num_classes: int, in_chans: int) -> nn.Module:
    """torchvision's MobileNetV3-Small (hard-swish, squeeze-excitation, 34 BN layers), untrained."""
    import torchvision

    if in_chans != 3:
        raise ValueError("torchvision's MobileNetV3 takes 3-channel images")
    return torchvision.models.mobilenet_v3_small(num_classes=num_classes)


def plain_cnn(num_classes: int, in_chans: int) -> nn.Module:
    """A plain student: conv-BN-ReLU at 16, 32, 64 channels (about 24k parameters)."""
    layers, cin = [], in_chans
    for i, width in enumerate((16, 32, 64)):
        layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if i < 2:
            layers.append(nn.MaxPool2d(2))
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def _dw_sep(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]


def depthwise_student(num_classes: int, in_chans: int) -> nn.Module:
    """MobileNet-style student: a 3x3 stem and depthwise-separable blocks up to 128 channels (~51k params)."""
    layers = [nn.Conv2d(in_chans, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU6(inplace=True)]
    for cin, cout, stride in ((24, 48, 2), (48, 64, 1), (64, 96, 2), (96, 128, 1), (128, 160, 2)):
        layers += _dw_sep(cin, cout, stride)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(160, num_classes))


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    data: DataSpec
    teacher: Callable[[int, int], nn.Module]
    student: Callable[[int, int], nn.Module]
    teacher_epochs: int = 30
    teacher_lr: float = 0.05
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return 3 if (self.data.colour or self.data.grey_as_rgb) else 1

    @property
    def num_classes(self) -> int:
        return len(self.data.class_names)

    def make_teacher(self) -> nn.Module:
        return self.teacher(self.num_classes, self.channels)

    def make_student(self) -> nn.Module:
        return self.student(self.num_classes, self.channels)


CASES: dict[str, Case] = {c.name: c for c in (
    Case("vgg-grey32", DataSpec("grey32", 32), vgg_bn, plain_cnn,
         notes="VGG-style CNN with BN, grey digits 32x32, plain CNN student"),
    Case("resnet8-colour-rot32", DataSpec("colour-rot32", 32, colour=True, rotate=25), ResNet8, depthwise_student,
         notes="CIFAR-style ResNet-8, coloured rotated digits 32x32, depthwise-separable student"),
    Case("mbv3-grey32", DataSpec("grey32-rgb", 32, grey_as_rgb=True), mobilenet_v3_small, plain_cnn,
         teacher_epochs=60, teacher_lr=0.02,
         notes="torchvision mobilenet_v3_small, grey digits as 3 channels 32x32, plain CNN"),
    Case("resnet8-grey16", DataSpec("grey16", 16), ResNet8, depthwise_student,
         notes="ResNet-8, grey digits 16x16, depthwise-separable student"),
    Case("vgg-colour16", DataSpec("colour16", 16, colour=True), vgg_bn, plain_cnn,
         notes="VGG-style CNN, coloured digits 16x16, plain CNN student"),
    Case("resnet8-turned20", DataSpec("turned20-grey32", 32, quarter_turn_classes=True), ResNet8, depthwise_student,
         notes="ResNet-8, 20 classes (digits upright and turned), grey 32x32, depthwise-separable student"),
)}

# Run only to check a default after it was chosen on CASES, never to choose one: an image size (48 px), a
# teacher/student pairing and a colour-and-20-class mix that no default was measured on.
HOLDOUT_CASES: dict[str, Case] = {c.name: c for c in (
    Case("holdout-vgg-colour-turned48", DataSpec("colour-turned48", 48, colour=True, quarter_turn_classes=True),
         vgg_bn, depthwise_student,
         notes="hold-out: VGG-style CNN, 20 classes of coloured upright and turned digits 48x48, depthwise student"),
)}
# Run only when named, to measure a choice at an image size CASES does not cover (48 px) before it is checked
# on the hold-out: a different teacher, student and data from the hold-out's, so that case stays unseen.
PROBE_CASES: dict[str, Case] = {c.name: c for c in (
    Case("probe-resnet8-grey48", DataSpec("grey48", 48), ResNet8, plain_cnn,
         notes="probe: ResNet-8, grey digits 48x48, plain CNN student"),
)}
ALL_CASES: dict[str, Case] = {**CASES, **HOLDOUT_CASES, **PROBE_CASES}
