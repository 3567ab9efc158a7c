"""Synthesis health numbers: agreement with the requested class, diversity of kept images, one-time warnings."""

import warnings

import pytest
import torch
from torch import nn

from fastcae.health import HealthMonitor, batch_health


class ArgmaxOfMean(nn.Module):
    """A 'teacher' whose class is the image's mean brightness bucket (deterministic, known answers)."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-(m - c / 3) ** 2 for c in range(3)], dim=1)


def test_agreement_counts_images_the_teacher_labels_as_asked():
    images = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 1 / 3, 2 / 3, 0.0)])
    labels = torch.tensor([0, 1, 2, 2])
    h = batch_health(ArgmaxOfMean(), lambda x: x, images, labels, 3)
    assert h["agreement"].item() == pytest.approx(0.75)


def test_diversity_is_zero_for_identical_images_and_grows_with_spread():
    same = torch.rand(1, 1, 4, 4).expand(6, -1, -1, -1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert batch_health(ArgmaxOfMean(), lambda x: x, same, labels, 2)["diversity"].item() == pytest.approx(0, abs=1e-6)
    spread = torch.rand(6, 1, 4, 4)
    d = batch_health(ArgmaxOfMean(), lambda x: x, spread, labels, 2)["diversity"].item()
    reference = torch.stack([spread[:3].std(0).mean(), spread[3:].std(0).mean()]).mean().item()
    assert d == pytest.approx(reference, rel=1e-4)


def test_monitor_warns_once_after_warm_up_only():
    monitor = HealthMonitor()
    bad = {"epoch": 3, "agreement": 0.1, "diversity": 0.001}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.check(bad, settling=True)
        assert not caught
        monitor.check(bad, settling=False)
        monitor.check(bad, settling=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("collapsed" in m for m in messages) and any("not class-conditional" in m for m in messages)


class LeftOrRight(nn.Module):
    """Class 0 when the left half is brighter, else 1: a teacher with a handedness."""

    def forward(self, x):
        w = x.shape[-1] // 2
        d = x[..., :w].mean(dim=(1, 2, 3)) - x[..., w:].mean(dim=(1, 2, 3))
        return torch.stack([d, -d], dim=1)


def test_flip_consistency_tells_a_mirror_invariant_teacher_from_one_with_a_handedness():
    from fastcae.health import flip_consistency

    images = torch.rand(300, 1, 8, 8)
    assert flip_consistency(ArgmaxOfMean(), lambda x: x, images) == pytest.approx(1.0)
    assert flip_consistency(LeftOrRight(), lambda x: x, images, batch_size=64) == pytest.approx(0.0)


def test_no_alarm_in_the_epoch_a_generator_is_re_created():
    from fastcae import distill
    from tests.helpers import TINY, tiny_classifier, trained_like_teacher

    shape = dict(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,))
    for g_life, expect_alarm in ((1, False), (10, True)):  # g_life=1: every epoch after the first is a new one
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            distill(trained_like_teacher(), tiny_classifier(), g_life=g_life, ce_weight=0.0, **shape, **TINY)
        alarms = [w for w in caught if "not class-conditional" in str(w.message)]
        assert bool(alarms) == expect_alarm
