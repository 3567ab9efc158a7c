"""Batched crop/flip/CutMix/normalise on tensors."""

import torch

from fastcae.augment import Augment, cutmix, random_crop, random_flip


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


def _boxes(x, out):
    """Per sample: the mask of pixels that differ from the input."""
    return (out != x).any(1)


def test_cutmix_pastes_one_box_from_the_neighbour_and_labels_by_the_larger_part():
    torch.manual_seed(0)
    x = torch.rand(256, 3, 12, 10) + 1  # every pixel of every image differs from its neighbour's
    labels = torch.arange(256)
    out, mixed_labels = cutmix(x, labels, 1.0)
    assert out.shape == x.shape and mixed_labels.shape == labels.shape
    neighbour = x.roll(1, 0)
    changed = _boxes(x, out)
    for b in range(256):
        assert torch.equal(out[b][:, changed[b]], neighbour[b][:, changed[b]])  # pasted from the neighbour only
        rows, cols = changed[b].any(1).nonzero(), changed[b].any(0).nonzero()
        if len(rows):  # one rectangle: its bounding box is all changed
            assert changed[b, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        covered = changed[b].float().mean()
        assert mixed_labels[b] == (labels[b - 1] if covered > 0.5 else labels[b])
    area = changed.float().mean((1, 2))
    assert 0.35 < area.mean() < 0.6  # box areas uniform on [0, 1], rounded down to whole pixels
    assert (area > 0.5).any() and (area < 0.5).any()


def test_cutmix_share_is_the_share_of_samples_mixed():
    torch.manual_seed(1)
    x, labels = torch.rand(2000, 1, 16, 16) + 1, torch.zeros(2000, dtype=torch.long)
    out, same = cutmix(x, labels, 0.0)
    assert torch.equal(out, x) and torch.equal(same, labels)
    out, _ = cutmix(x, labels, 0.5)
    mixed = _boxes(x, out).flatten(1).any(1).float().mean()
    assert 0.44 < mixed < 0.56  # half, within 5 sd (0.011) of 2,000 draws
