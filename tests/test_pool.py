"""The in-memory pool: storage, sampling, and the policy when full."""

import pytest
import torch

from fastcae.pool import SyntheticPool


def _batch(b, start, shape=(1, 4, 4)):
    x = torch.rand(b, *shape)
    y = torch.arange(start, start + b)
    return x, y, y % 4


def test_push_and_sample_roundtrip_uint8():
    pool = SyntheticPool(10, (1, 4, 4))
    x, y, s = _batch(6, 0)
    pool.push(x, y, s)
    assert len(pool) == 6
    imgs, labels, sources = pool.tensors()
    assert torch.allclose(imgs, x, atol=0.5 / 255 + 1e-6)  # uint8 quantisation only
    assert torch.equal(labels, y) and torch.equal(sources, s)
    xs, ys, ss = pool.sample(32)
    assert xs.shape == (32, 1, 4, 4) and ys.min() >= 0 and ys.max() < 6


def test_fifo_replaces_the_oldest():
    pool = SyntheticPool(8, (1, 4, 4), policy="fifo")
    for start in (0, 5, 10):
        pool.push(*_batch(5, start))
    assert len(pool) == 8 and pool.pushed == 15
    _, labels, _ = pool.tensors()
    assert sorted(labels.tolist()) == list(range(7, 15))  # the 8 newest


def test_reservoir_keeps_a_uniform_sample():
    torch.manual_seed(0)
    hits = torch.zeros(100)
    for _ in range(300):
        pool = SyntheticPool(20, (1, 2, 2), policy="reservoir")
        for start in range(0, 100, 10):
            pool.push(*_batch(10, start, (1, 2, 2)))
        hits[pool.tensors()[1]] += 1
    frac = hits / 300  # each of 100 images kept with probability 20/100
    assert frac[:20].mean().item() == pytest.approx(0.2, abs=0.04)
    assert frac[80:].mean().item() == pytest.approx(0.2, abs=0.04)


def test_bfloat16_pool_and_errors():
    pool = SyntheticPool(4, (1, 4, 4), dtype="bfloat16")
    x, y, s = _batch(2, 0)
    pool.push(x, y, s)
    assert torch.allclose(pool.tensors()[0], x, atol=1e-2)
    with pytest.raises(ValueError, match="shape"):
        pool.push(torch.rand(2, 3, 4, 4), y, s)
    with pytest.raises(RuntimeError, match="empty"):
        SyntheticPool(4, (1, 4, 4)).sample(2)
    with pytest.raises(ValueError, match="policy"):
        SyntheticPool(4, (1, 4, 4), policy="lru")


def test_state_dict_roundtrip():
    pool = SyntheticPool(8, (1, 4, 4))
    pool.push(*_batch(5, 0))
    other = SyntheticPool(8, (1, 4, 4))
    other.load_state_dict(pool.state_dict())
    assert other.pushed == 5
    for a, b in zip(pool.tensors(), other.tensors()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="capacity"):
        SyntheticPool(9, (1, 4, 4)).load_state_dict(pool.state_dict())
