"""Labelled image sets as tensors in [0, 1]: the bundled digits, and torchvision datasets when present.

fastcae itself never needs data (that is the point); these feed teacher training, evaluation and the demo.
What is known about the named datasets (class names, image shape, normalisation) lives in
``fastcae.datasets.DATASETS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageSplit:
    """Images ``[N, C, H, W]`` float32 in [0, 1] and labels ``[N]`` int64."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, classes) -> "ImageSplit":
        keep = torch.isin(self.labels, torch.as_tensor(list(classes)))
        return ImageSplit(self.images[keep], self.labels[keep])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std (to normalise a teacher's input)."""
        x = self.images.transpose(0, 1).reshape(self.images.shape[1], -1)
        return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def load_digits(image_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes), no download.

    A fixed, stratified train/test split (``seed``); pixels 0..16 scaled to [0, 1] and resized bilinearly
    to ``image_size`` (the generator needs sizes divisible by 4; 32 mimics CIFAR's geometry).
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        images = images.clamp(0, 1)
    idx = torch.arange(labels.shape[0]).numpy()
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels.numpy())
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return ImageSplit(images[train_idx], labels[train_idx]), ImageSplit(images[test_idx], labels[test_idx])


TORCHVISION_SETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion-mnist": "FashionMNIST",
                    "svhn": "SVHN"}


def load_torchvision(name: str, root: str, train: bool = True, download: bool = False) -> ImageSplit:
    """A torchvision dataset as tensors in [0, 1] (CIFAR-10/100, MNIST, Fashion-MNIST, SVHN).

    With ``download=False`` (the default) a missing dataset is an error that says where it was looked for.
    """
    import torchvision

    key = name.lower()
    if key not in TORCHVISION_SETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(TORCHVISION_SETS)}")
    cls = getattr(torchvision.datasets, TORCHVISION_SETS[key])
    kwargs = {"split": "train" if train else "test"} if key == "svhn" else {"train": train}
    try:
        ds = cls(root=root, download=download, **kwargs)
    except RuntimeError as err:
        raise FileNotFoundError(f"dataset {name} not found under {root!r} ({err}); pass download=True where the "
                                f"network allows, or copy the files there") from err
    data = ds.data
    data = torch.as_tensor(data)
    if data.dim() == 3:  # [N, H, W] grey
        data = data.unsqueeze(1)
    elif data.shape[-1] in (1, 3):  # [N, H, W, C] (CIFAR)
        data = data.permute(0, 3, 1, 2)
    images = data.float() / 255.0
    labels = torch.as_tensor(getattr(ds, "targets", getattr(ds, "labels", None)), dtype=torch.int64)
    return ImageSplit(images.contiguous(), labels)
