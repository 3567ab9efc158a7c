"""The fidelity suite's natural-images tier: publicly trained CIFAR-10 teachers, scored on CIFAR-10's test images.

Nothing here is trained or downloaded: the teachers are the public ResNets of ``../shared/data`` (the torch.hub
models of chenyaofo/pytorch-cifar-models, read its README), loaded strictly into the zoo's CIFAR ResNet family,
and the 10,000 official test images are for scoring only: no default is tuned on them except through a teacher.
A case is run as a new user would run it: the teacher and a fresh student, ``max_seconds`` and a seed, nothing
else (the class names, image shape and normalisation come with the teacher's ``pretrained_cfg``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from fastcae.apps.data import ImageSplit
from fastcae.models import resolve_model

from .cases import vgg_bn


def shared_data() -> Path:
    """Where the shared data lie: ``$FASTCAE_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("FASTCAE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_images(file: str, what: str) -> ImageSplit:
    """One of the shared ``.npz`` sets (uint8 ``images [N, H, W, 3]``, ``labels``) as ``[N, 3, H, W]`` in [0, 1]."""
    path = shared_data() / file
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {what} is read there (set FASTCAE_SHARED_DATA to the folder "
                                f"that holds it)")
    with np.load(path) as d:
        images = torch.from_numpy(d["images"]).permute(0, 3, 1, 2).float().div_(255)
        labels = torch.from_numpy(d["labels"]).long()
    return ImageSplit(images.contiguous(), labels)


def cifar10_test() -> ImageSplit:
    """CIFAR-10's 10,000 official test images in [0, 1], ``[N, 3, 32, 32]``, with their labels."""
    return shared_images("cifar10_test.npz", "CIFAR-10's test set")


@dataclass(frozen=True)
class NaturalCase:
    """A public teacher (a model spec and its weights file in the shared data) and a fresh student."""

    name: str
    teacher: str  # a fastcae model spec
    weights: str  # file name in the shared data
    student: Callable[[], nn.Module]
    notes: str = ""

    def make_teacher(self) -> nn.Module:
        return resolve_model(self.teacher, weights=shared_data() / self.weights).eval()

    def make_student(self) -> nn.Module:
        return self.student()

    def test_split(self) -> ImageSplit:
        return cifar10_test()

    @property
    def cfg(self) -> dict:
        """What the teacher was trained with (its ``pretrained_cfg``: input size, mean/std, dataset)."""
        return self.make_teacher().pretrained_cfg


def _resnet20() -> nn.Module:
    return resolve_model("cifar10_resnet20")


def _vgg_student() -> nn.Module:
    """VGG-style (conv-BN-ReLU pairs at 32, 64, 128 channels, max-pooled): 0.29 M parameters, about ResNet-20's
    size and compute, from another family."""
    return vgg_bn(10, 3)


NATURAL_CASES: dict[str, NaturalCase] = {c.name: c for c in (
    NaturalCase("cifar10-resnet56-resnet20", "cifar10_resnet56", "cifar10_resnet56.pth", _resnet20,
                notes="public CIFAR-10 ResNet-56 (94.4%) -> fresh ResNet-20"),
    NaturalCase("cifar10-resnet56-vgg", "cifar10_resnet56", "cifar10_resnet56.pth", _vgg_student,
                notes="public CIFAR-10 ResNet-56 -> fresh VGG-style CNN (another family, ResNet-20's size)"),
)}
# Run only when named: another public teacher, to check a default chosen on the cases above.
NATURAL_PROBES: dict[str, NaturalCase] = {c.name: c for c in (
    NaturalCase("probe-cifar10-resnet32-resnet20", "cifar10_resnet32", "cifar10_resnet32.pth", _resnet20,
                notes="probe: public CIFAR-10 ResNet-32 (93.5%) -> fresh ResNet-20"),
)}
