"""Each reference loss against a hand computation (these are the oracles of the fused kernels)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastcae import losses


def test_kd_loss_matches_hand_computation():
    t = torch.tensor([[2.0, 0.0, -1.0]])
    s = torch.tensor([[0.5, 0.5, 0.0]])
    T = 2.0
    pt = torch.softmax(t / T, 1)
    ps = torch.softmax(s / T, 1)
    hand = (pt * (pt.log() - ps.log())).sum() * T * T
    assert losses.kd_loss(t, s, T).item() == pytest.approx(hand.item(), rel=1e-6)
    # matches torch's batchmean KL as well
    ref = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T
    assert losses.kd_loss(t, s, T).item() == pytest.approx(ref.item(), rel=1e-6)


def test_kd_loss_is_zero_for_identical_logits():
    x = torch.randn(8, 10)
    assert losses.kd_loss(x, x.clone(), 20.0).item() == pytest.approx(0.0, abs=1e-6)


def test_adversarial_counts_only_agreeing_rows():
    t = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # row 0 agrees (argmax 0), row 1 disagrees
    kl0 = losses.kl_rows(t[:1], s[:1], 1.0).item()
    # mean over the whole batch, rows that disagree count as 0
    assert losses.adversarial_loss(t, s).item() == pytest.approx(-kl0 / 2, rel=1e-6)


def test_logit_loss_is_the_weighted_sum():
    t, s = torch.randn(6, 5), torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    got = losses.logit_loss(t, s, y, temperature=4.0, kd_weight=0.3, adv_weight=1.33, ce_weight=0.5)
    want = 0.3 * losses.kd_loss(t, s, 4.0) + 1.33 * losses.adversarial_loss(t, s) + 0.5 * F.cross_entropy(t, y)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_bn_stats_loss_hand_computation_and_ema_blend():
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    rm, rv = torch.randn(3), torch.rand(3) + 0.5
    em, ev = torch.randn(3), torch.rand(3) + 0.5
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    # no EMA yet (w = 0): plain L2 norms
    loss, m, v = losses.bn_stats_loss(x, rm, rv, em, ev, torch.tensor(0.0))
    assert torch.allclose(m, mean, atol=1e-5) and torch.allclose(v, var, atol=1e-5)
    assert loss.item() == pytest.approx((torch.norm(rv - var) + torch.norm(rm - mean)).item(), rel=1e-5)
    # with EMA (w = 0.9): blended = 0.1 * batch + 0.9 * ema
    loss, _, _ = losses.bn_stats_loss(x, rm, rv, em, ev, torch.tensor(0.9))
    bm, bv = 0.1 * mean + 0.9 * em, 0.1 * var + 0.9 * ev
    assert loss.item() == pytest.approx((torch.norm(rv - bv) + torch.norm(rm - bm)).item(), rel=1e-5)


def test_bn_stats_loss_is_accurate_for_non_zero_means():
    x = torch.randn(64, 2, 16, 16, dtype=torch.float64) + 1000.0
    _, m, v = losses.bn_stats_loss(x.float(), torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2), 0.0)
    assert torch.allclose(v.double(), x.var(dim=(0, 2, 3), unbiased=False), rtol=1e-2)


def test_supcon_hand_computation():
    z = F.normalize(torch.randn(5, 4), dim=1)
    y = torch.tensor([0, 0, 1, 1, 2])  # anchor 4 has no positive
    tau = 0.5
    sim = z @ z.T / tau
    per = []
    for i in range(5):
        others = [a for a in range(5) if a != i]
        pos = [p for p in others if y[p] == y[i]]
        if not pos:
            continue
        lse = torch.logsumexp(sim[i, others], 0)
        per.append(-sum(sim[i, p] - lse for p in pos) / len(pos))
    hand = torch.stack(per).mean()
    assert losses.supcon_loss(z, y, tau).item() == pytest.approx(hand.item(), rel=1e-5)


def test_supcon_without_positives_is_zero_and_finite():
    z = F.normalize(torch.randn(4, 8), dim=1)
    loss = losses.supcon_loss(z, torch.arange(4), 0.1)
    assert loss.item() == 0.0 and math.isfinite(loss.item())


def test_supcon_prefers_clustered_classes():
    y = torch.tensor([0, 0, 1, 1])
    clustered = F.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]), dim=1)
    mixed = F.normalize(torch.tensor([[1.0, 0], [0, 1.0], [0.9, 0.1], [0.1, 0.9]]), dim=1)
    assert losses.supcon_loss(clustered, y, 0.1) < losses.supcon_loss(mixed, y, 0.1)
