"""Batched crop/flip/normalise on tensors."""

import torch

from fastcae.augment import Augment, random_crop, random_flip


def test_random_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop(x, 2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):  # each output is one of the 25 windows of its padded input
        windows = [padded[b, :, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)


def test_random_crop_varies_per_sample():
    x = torch.rand(64, 1, 8, 8) + 1
    out = random_crop(x, 2)
    same = [(torch.equal(out[i], x[i])) for i in range(64)]
    assert 0 < sum(same) < 64


def test_flip_and_normalise():
    x = torch.rand(200, 3, 4, 4)
    out = random_flip(x)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(200)]
    assert 50 < sum(flipped) < 150
    aug = Augment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), padding=0, flip=False)
    assert torch.allclose(aug(x), (x - 0.5) / 0.25)
