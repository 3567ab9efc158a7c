"""BN-statistics hooks: active only during synthesis, EMA as NAYER, clear error without BatchNorm."""

import pytest
import torch
from torch import nn

from fastcae import losses
from fastcae.bn_stats import BNStatsLoss


def _teacher():
    t = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                      nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    t(torch.randn(2, 1, 6, 6))
    for m in t.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    return t.eval()


def test_hooks_fire_only_inside_active():
    t = _teacher()
    bn = BNStatsLoss(t)
    t(torch.randn(3, 1, 6, 6))
    with pytest.raises(RuntimeError, match="no BN statistics"):
        bn.loss()
    with bn.active():
        t(torch.randn(3, 1, 6, 6))
    assert bn.loss().item() > 0
    assert not any(m._forward_hooks for m in bn.layers)  # removed after the block


def test_loss_equals_sum_of_reference_per_layer():
    t = _teacher()
    bn = BNStatsLoss(t)
    x = torch.randn(5, 1, 6, 6)
    inputs = []
    handles = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in bn.layers]
    with bn.active():
        t(x)
    for h in handles:
        h.remove()
    want = sum(losses.bn_stats_loss(a, m.running_mean, m.running_var, torch.zeros(4), torch.zeros(4), 0.0)[0]
               for a, m in zip(inputs, bn.layers))
    assert bn.loss().item() == pytest.approx(want.item(), rel=1e-5)


def test_ema_update_follows_nayer():
    t = _teacher()
    bn = BNStatsLoss(t, momentum=0.9)
    with bn.active():
        t(torch.randn(5, 1, 6, 6))
    bn.loss()
    first = [s[0].clone() for s in bn._stats]
    bn.update_ema()  # first update: ema = batch statistics
    assert torch.allclose(bn.ema_mean[0], first[0]) and bn.ema_weight.item() == pytest.approx(0.9)
    with bn.active():
        t(torch.randn(5, 1, 6, 6) + 1)
    bn.loss()
    second = bn._stats[0][0].clone()
    bn.update_ema()  # then ema = 0.9 * ema + 0.1 * batch
    assert torch.allclose(bn.ema_mean[0], 0.9 * first[0] + 0.1 * second, atol=1e-6)


def test_teacher_without_batchnorm_is_a_clear_error():
    with pytest.raises(ValueError, match="no BatchNorm2d.*bn_weight=0"):
        BNStatsLoss(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_first_weight_multiplies_only_the_first_layers_term():
    t = _teacher()
    x = torch.randn(5, 1, 6, 6)
    per_layer = []
    for weight in (1.0, 10.0):
        bn = BNStatsLoss(t, first_weight=weight)
        with bn.active():
            t(x)
        per_layer.append([float(v) for v in bn._losses])
        total = bn.loss().item()
        assert total == pytest.approx(sum(per_layer[-1]), rel=1e-6)
    assert per_layer[1][0] == pytest.approx(10 * per_layer[0][0], rel=1e-6)
    assert per_layer[1][1:] == pytest.approx(per_layer[0][1:], rel=1e-6)
