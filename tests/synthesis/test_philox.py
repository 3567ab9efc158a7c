"""fastcae.synthesis.philox against Triton's own tl.rand / tl.randn (interpreted on CPU, compiled on a GPU)."""

import pytest
import torch

from fastcae.synthesis.philox import philox_rand, philox_rand_randn, philox_randn

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _rand_randn_kernel(seed, off_ptr, u_ptr, n_ptr, n_elements, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n_elements
    offsets = tl.load(off_ptr + idx, mask=mask, other=0)
    tl.store(u_ptr + idx, tl.rand(seed, offsets), mask=mask)
    tl.store(n_ptr + idx, tl.randn(seed, offsets), mask=mask)


def _triton_rand_randn(seed: int, offsets: torch.Tensor):
    offsets = offsets.to(DEVICE).contiguous()
    u = torch.full(offsets.shape, float("nan"), dtype=torch.float32, device=DEVICE)
    n = torch.full_like(u, float("nan"))
    block = 1024
    _rand_randn_kernel[(triton.cdiv(offsets.numel(), block),)](seed, offsets, u, n, offsets.numel(), BLOCK=block)
    return u, n


def _offsets():
    return torch.cat(
        [
            torch.arange(300),  # small counters: only the low word varies
            torch.randint(0, 2**62, (400,)),  # both words random
            2**32 - 2 + torch.arange(4),  # across the 32-bit boundary
            torch.tensor([2**63 - 1, 3 * 2**32 + 17]),
        ]
    )


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, 2**31 + 5, 2**40 + 7, -3])
def test_matches_triton(seed):
    offsets = _offsets()
    u_ref, n_ref = _triton_rand_randn(seed, offsets)
    u = philox_rand(seed, offsets.to(DEVICE))
    n = philox_randn(seed, offsets.to(DEVICE))
    assert u.dtype == torch.float32 and n.dtype == torch.float32
    assert torch.equal(u, u_ref), f"rand differs at {torch.nonzero(u != u_ref)[:5].flatten().tolist()}"
    if DEVICE == "cpu":
        # log/cos are torch's here and numpy's in the interpreter: a few ulp apart at most.
        ulp = (n.view(torch.int32).long() - n_ref.view(torch.int32).long()).abs()
        assert int(ulp.max()) <= 4, f"randn differs by {int(ulp.max())} ulp"
    else:
        # the GPU's log/cos may be hardware approximations (a few 1e-7 absolute)
        torch.testing.assert_close(n, n_ref, atol=1e-5, rtol=1e-5)


def test_rand_randn_pair_equals_separate_calls():
    offsets = torch.randint(0, 2**40, (3, 50), device=DEVICE)
    u, n = philox_rand_randn(7, offsets)
    assert torch.equal(u, philox_rand(7, offsets)) and torch.equal(n, philox_randn(7, offsets))


def test_shape_and_range():
    offsets = torch.arange(6 * 7, device=DEVICE).view(6, 7) + 2**33
    u = philox_rand(5, offsets)
    assert u.shape == (6, 7)
    assert bool(((u >= 0) & (u < 1)).all())
    assert philox_randn(5, offsets).shape == (6, 7)


def test_moments():
    offsets = torch.arange(200_000, device=DEVICE) + 2**32 * int(torch.randint(0, 1000, ()))
    seed = int(torch.randint(0, 2**31, ()))
    u = philox_rand(seed, offsets).double()
    n = philox_randn(seed, offsets).double()
    assert abs(u.mean().item() - 0.5) < 5e-3
    assert abs(u.var().item() - 1 / 12) < 2e-3
    assert abs(n.mean().item()) < 1e-2
    assert abs(n.var().item() - 1.0) < 2e-2
    # different seeds and shifted counters give unrelated streams
    u2 = philox_rand(seed + 1, offsets).double()
    u3 = philox_rand(seed, offsets + 1).double()
    assert abs(torch.corrcoef(torch.stack([u, u2]))[0, 1].item()) < 1e-2
    assert abs(torch.corrcoef(torch.stack([u[1:], u3[:-1]]))[0, 1].item()) > 0.999  # same counter, same draw


def test_rejects_non_int64():
    with pytest.raises(TypeError, match="int64"):
        philox_rand(0, torch.arange(4, dtype=torch.int32))
