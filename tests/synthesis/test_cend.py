"""CEND: noise statistics per source, round-robin ids, magnitudes and their schedule."""

import math

import pytest
import torch

from fastcae.synthesis.cend import (
    CEND,
    NOISE_SOURCES,
    MagnitudeSchedule,
    balanced_targets,
    counter_noise,
    round_robin_sources,
)


@pytest.mark.parametrize("source", range(4))
def test_each_source_is_zero_mean_unit_variance(source):
    ids = torch.full((400,), source)
    q = counter_noise(seed=1234, offset=0, source_ids=ids, dim=256)
    assert abs(q.mean().item()) < 0.02
    assert abs(q.var().item() - 1.0) < 0.03


def test_sources_have_their_own_shapes():
    n = 200_000
    q = {s: counter_noise(7, 0, torch.full((1,), s), n)[0] for s in range(4)}
    assert set(torch.unique(q[3]).tolist()) == {-1.0, 1.0}  # rademacher
    assert q[1].abs().max() <= math.sqrt(3) + 1e-6  # uniform on [-sqrt3, sqrt3]
    kurt = {s: ((q[s] - q[s].mean()) ** 4).mean().item() / q[s].var().item() ** 2 for s in range(3)}
    assert kurt[0] == pytest.approx(3.0, abs=0.1)  # gaussian
    assert kurt[1] == pytest.approx(1.8, abs=0.05)  # uniform
    assert kurt[2] == pytest.approx(6.0, abs=0.5)  # laplace


def test_counter_noise_is_reproducible_and_advances_with_the_offset():
    ids = round_robin_sources(20, 10, 4)
    a = counter_noise(3, 0, ids, 16)
    assert torch.equal(a, counter_noise(3, 0, ids, 16))
    assert not torch.equal(a, counter_noise(3, 20 * 16, ids, 16))
    assert not torch.equal(a, counter_noise(4, 0, ids, 16))
    # element (i, j) depends on (seed, offset + i * dim + j) only
    assert torch.equal(counter_noise(3, 16, ids[1:], 16), counter_noise(3, 0, ids, 16)[1:])


def test_round_robin_every_class_sees_every_source():
    b, c, n = 400, 10, 4
    y = balanced_targets(b, c)
    s = round_robin_sources(b, c, n)
    counts = torch.zeros(c, n)
    counts.index_put_((y, s), torch.ones(b), accumulate=True)
    assert (counts == b / (c * n)).all()


def test_cend_scale_and_magnitudes():
    emb = torch.nn.functional.normalize(torch.randn(10, 64), dim=1)
    cend = CEND(emb, torch.tensor([0.0, 1.0, 2.0, 0.5]))
    assert cend.scale.item() == pytest.approx(1 / math.sqrt(64), rel=1e-5)
    y = torch.arange(8) % 10
    s = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    noise = torch.randn(8, 64)
    out = cend(y, s, noise)
    assert torch.allclose(out[0], emb[0])  # magnitude 0: the embedding itself
    assert torch.allclose(out[2] - emb[2], 2.0 * cend.scale * noise[2])
    # per-dimension magnitudes
    mags = torch.rand(4, 64)
    out = CEND(emb, mags)(y, s, noise)
    assert torch.allclose(out - emb[y], mags[s] * cend.scale * noise)


def test_cend_rejects_bad_shapes():
    with pytest.raises(ValueError, match="num_classes, dim"):
        CEND(torch.randn(10), torch.ones(4))
    with pytest.raises(ValueError, match="magnitudes"):
        CEND(torch.randn(10, 8), torch.ones(4, 5))


def test_magnitude_schedule():
    sched = MagnitudeSchedule((1.0, 2.0), (0.0, 0.0), "linear")
    assert torch.allclose(sched.at(0.5), torch.tensor([0.5, 1.0]))
    cos = MagnitudeSchedule((1.0,), (0.0,), "cosine")
    assert cos.at(0.0).item() == pytest.approx(1.0) and cos.at(1.0).item() == pytest.approx(0.0, abs=1e-7)
    assert MagnitudeSchedule((0.3,)).at(0.9).item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown magnitude schedule"):
        MagnitudeSchedule((1.0,), kind="exp")
    assert len(NOISE_SOURCES) == 4
