"""Fused supervised-contrastive loss (CNCL, Khosla et al. 2020) without the B x B similarity matrix.

    s_ij = z_i . z_j / tau,   LSE_i = logsumexp_{j != i} s_ij,   P(i) = {j != i : y_j = y_i},  n_i = |P(i)|
    l_i  = LSE_i - (1 / n_i) sum_{p in P(i)} s_ip
    loss = sum_{i : n_i > 0} l_i / max(1, #{i : n_i > 0})

Reference: ``fastcae.losses.supcon_loss`` (``supcon_loss`` here has the same signature, value and gradient;
custom ops ``fastcae::supcon_loss`` and ``fastcae::supcon_loss_backward``).
Shapes: ``z`` ``[B, d]`` (fp32, bf16 or fp16; fp64 is computed in fp64, for gradcheck), ``d <= 256``;
``labels`` ``[B]`` integer. Returns a 0-d fp32 loss (fp64 for fp64 ``z``). The rows of ``z`` are usually
L2-normalised, but nothing here assumes it.

Floors. Bytes: the forward must read ``z`` and the labels once, ``B * d * elt + 8 * B``; the backward must
also write ``dz``, ``B * d * elt``. FLOPs: the forward's similarity tiles cost ``2 * B^2 * d``; the backward
recomputes them (``2 * B^2 * d``) and multiplies the gradient tiles back (``2 * B^2 * d``). The op is
compute-bound for B >> d; the reference moves the B x B matrix through memory several times instead. Each
program re-reads all of ``z`` (from L2: 2 MiB at [4096, 128] fp32). With 16-bit ``z`` the backward's
gradient tile goes through the tensor cores as two 16-bit parts (hi + lo), one extra MMA per tile.

Kernels: ``_supcon_fwd_kernel`` takes a block of anchors per program and sweeps column blocks with an online
log-sum-exp (``tl.dot`` similarity tiles), keeping per-anchor LSE, positive count and positive-similarity
sum; ``_supcon_reduce_kernel`` (one program, ordered sums) gives the loss and the number of anchors with a
positive; ``_supcon_bwd_kernel`` re-sweeps the columns and accumulates
``dz_i = (1/tau) sum_j (G_ij + G_ji) z_j`` with ``G_ij = g * h_i / A * (softmax_ij - [j in P(i)] / n_i)``:
the anchor term and the "i as a column of anchor j" term, from the saved per-row LSE and counts. Each
program owns its rows of ``dz``: no atomics, deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .shared import (
    AOT_BATCHES,
    AOT_DTYPES,
    FLOAT_DTYPES,
    INTERPRET,
    Launch,
    Ptr,
    acc_dtype,
    check_device,
    check_dtype,
    div_rn,
    dtype_name,
    sm_count,
    tl_dtype,
)

# --- constants -------------------------------------------------------------------------------------------

N_STATS = 3  # rows of the per-anchor statistics buffer: LSE, positive count, per-anchor loss (0 if none)
MAX_D = 256  # one feature block per tile; wider projections would need a loop over d
# fp32 inputs: "tf32x3" (three tf32 tensor-core products, ~fp32 accuracy). Plain "tf32" rounds z to 10
# mantissa bits, errors ~1e-3 * |s_ij| in the logits (1/tau = 10 scales them up); "ieee" is exact fp32 FMA
# but, compiled for sm_90, a [32, 64] x d=128 tile spills kilobytes of registers (checked with ptxas).
FP32_DOT_PRECISION = "tf32x3"


# --- kernels ---------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # UPCAST is set only under the interpreter for bf16 operands: it keeps bf16 as raw uint16 bits and its
    # dot multiplies those integers. The values are exact in fp32, so the result is the same.
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _supcon_fwd_kernel(
    z_ptr,  # [B, d] projections, unit column stride
    lab_ptr,  # [B] integer labels
    stats_ptr,  # [N_STATS, B] out, ACC dtype: LSE_i, n_i, l_i (0 where n_i = 0)
    B,  # anchors
    d,  # feature dim
    stride_z,  # row stride of z (elements)
    temperature,  # tau (float)
    BLOCK_M: tl.constexpr,  # anchors per program (>= 16, power of two)
    BLOCK_N: tl.constexpr,  # columns per step (>= 16, power of two)
    D_PAD: tl.constexpr,  # d padded to a power of two >= 16
    DOT_PRECISION: tl.constexpr,  # tl.dot input_precision for fp32 inputs
    UPCAST_DOT: tl.constexpr,  # interpreter + bf16 only: dot in fp32 (see _dot)
    ACC: tl.constexpr,  # accumulation dtype (fp32, or fp64 for fp64 inputs)
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B
    dk = tl.arange(0, D_PAD)
    dmask = dk[None, :] < d
    zi = tl.load(z_ptr + rows[:, None] * stride_z + dk[None, :], mask=row_ok[:, None] & dmask, other=0.0)
    yi = tl.load(lab_ptr + rows, mask=row_ok, other=0)
    inv_tau = div_rn(tl.cast(1.0, ACC), tl.cast(temperature, ACC))

    m = tl.full([BLOCK_M], float("-inf"), ACC)  # running max of s_ij over j != i
    l = tl.zeros([BLOCK_M], ACC)  # running sum of exp(s_ij - m)
    pos_sum = tl.zeros([BLOCK_M], ACC)  # sum of s_ij over positives
    n_pos = tl.zeros([BLOCK_M], ACC)  # number of positives
    for n0 in range(0, B, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        col_ok = cols < B
        zj = tl.load(z_ptr + cols[:, None] * stride_z + dk[None, :], mask=col_ok[:, None] & dmask, other=0.0)
        yj = tl.load(lab_ptr + cols, mask=col_ok, other=0)
        s = _dot(zi, tl.trans(zj), DOT_PRECISION, UPCAST_DOT).to(ACC) * inv_tau  # [BLOCK_M, BLOCK_N]
        valid = col_ok[None, :] & (rows[:, None] != cols[None, :])
        s_m = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s_m, axis=1))
        # Guard the all -inf case (B = 1, or a tile whose only valid column is the anchor itself, seen first):
        # exp(-inf - -inf) would be nan, exp(-inf - 0) is 0.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp(m - m_safe) + tl.sum(tl.exp(s_m - m_safe[:, None]), axis=1)
        m = m_new
        pos = valid & (yi[:, None] == yj[None, :])
        pos_sum += tl.sum(tl.where(pos, s, 0.0), axis=1)
        n_pos += tl.sum(pos.to(ACC), axis=1)

    # l >= 1 once m is finite (the max term is exp(0)); the clamp only keeps log(0) away when B = 1, where
    # the anchor has no other sample and lse = m = -inf.
    lse = m + tl.log(tl.maximum(l, 1e-30))
    loss_i = tl.where(n_pos > 0, lse - div_rn(pos_sum, tl.maximum(n_pos, 1.0)), 0.0)
    tl.store(stats_ptr + rows, lse, mask=row_ok)
    tl.store(stats_ptr + B + rows, n_pos, mask=row_ok)
    tl.store(stats_ptr + 2 * B + rows, loss_i, mask=row_ok)


@triton.jit
def _supcon_reduce_kernel(
    stats_ptr,  # [N_STATS, B] per-anchor statistics from the forward kernel
    loss_ptr,  # [] out, ACC dtype: the loss
    nanchor_ptr,  # [1] out, ACC dtype: A = number of anchors with a positive
    B,
    BLOCK_B: tl.constexpr,  # rows per step of the (single program's) loop
    ACC: tl.constexpr,
):
    # One program, fixed summation order: bitwise reproducible.
    acc = tl.zeros([BLOCK_B], ACC)
    cnt = tl.zeros([BLOCK_B], ACC)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B)
        ok = rows < B
        acc += tl.load(stats_ptr + 2 * B + rows, mask=ok, other=0.0)
        cnt += (tl.load(stats_ptr + B + rows, mask=ok, other=0.0) > 0).to(ACC)
    n_anchor = tl.sum(cnt, axis=0)
    tl.store(loss_ptr, div_rn(tl.sum(acc, axis=0), tl.maximum(n_anchor, 1.0)))
    tl.store(nanchor_ptr, n_anchor)


@triton.jit
def _supcon_bwd_kernel(
    z_ptr,  # [B, d] projections, unit column stride
    lab_ptr,  # [B] integer labels
    stats_ptr,  # [N_STATS, B] per-anchor statistics from the forward kernel
    nanchor_ptr,  # [1] A, from the reduce kernel
    go_ptr,  # [] grad_output of the scalar loss
    dz_ptr,  # [B, d] out: d loss / d z (z's dtype), unit column stride
    B,
    d,
    stride_z,
    stride_dz,
    temperature,  # tau (float)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    SPLIT_G: tl.constexpr,  # 16-bit z: multiply g into z as two 16-bit parts (hi + lo)
    ACC: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B
    dk = tl.arange(0, D_PAD)
    dmask = dk[None, :] < d
    zi = tl.load(z_ptr + rows[:, None] * stride_z + dk[None, :], mask=row_ok[:, None] & dmask, other=0.0)
    yi = tl.load(lab_ptr + rows, mask=row_ok, other=0)
    inv_tau = div_rn(tl.cast(1.0, ACC), tl.cast(temperature, ACC))
    # g / (tau * A): the 1/tau of ds/dz folded into the per-row weights.
    scale = div_rn(tl.load(go_ptr).to(ACC) * inv_tau, tl.maximum(tl.load(nanchor_ptr).to(ACC), 1.0))
    lse_i = tl.load(stats_ptr + rows, mask=row_ok, other=0.0)
    n_i = tl.load(stats_ptr + B + rows, mask=row_ok, other=0.0)
    w_i = tl.where(n_i > 0, scale, 0.0)  # weight of the softmax term; 0 for anchors without a positive
    c_i = div_rn(w_i, tl.maximum(n_i, 1.0))  # weight of each positive

    acc = tl.zeros([BLOCK_M, D_PAD], ACC)
    for n0 in range(0, B, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        col_ok = cols < B
        zj = tl.load(z_ptr + cols[:, None] * stride_z + dk[None, :], mask=col_ok[:, None] & dmask, other=0.0)
        yj = tl.load(lab_ptr + cols, mask=col_ok, other=0)
        lse_j = tl.load(stats_ptr + cols, mask=col_ok, other=0.0)
        n_j = tl.load(stats_ptr + B + cols, mask=col_ok, other=0.0)
        w_j = tl.where(n_j > 0, scale, 0.0)
        c_j = div_rn(w_j, tl.maximum(n_j, 1.0))
        s = _dot(zi, tl.trans(zj), DOT_PRECISION, UPCAST_DOT).to(ACC) * inv_tau
        # Padded anchor rows are masked too: with B = 1, exp(s - lse_j) = exp(+inf) there.
        valid = row_ok[:, None] & col_ok[None, :] & (rows[:, None] != cols[None, :])
        pos = valid & (yi[:, None] == yj[None, :])
        # where() before exp: a valid column has a finite LSE on both sides, masked ones never reach exp.
        p_ij = tl.exp(tl.where(valid, s - lse_i[:, None], float("-inf")))  # softmax of anchor i at j
        p_ji = tl.exp(tl.where(valid, s - lse_j[None, :], float("-inf")))  # softmax of anchor j at i (s symmetric)
        g = w_i[:, None] * p_ij + w_j[None, :] * p_ji - tl.where(pos, c_i[:, None] + c_j[None, :], 0.0)
        if SPLIT_G:
            # 16-bit z: the tensor-core product takes g in z's dtype. One rounding (as flash attention does
            # with P) costs ~1% of |dz| here, because g's softmax and positive terms cancel in the sum over j;
            # g = hi + lo in two 16-bit parts keeps ~16 mantissa bits for one more MMA.
            g_hi = g.to(zj.dtype)
            g_lo = (g - g_hi.to(ACC)).to(zj.dtype)
            acc += _dot(g_hi, zj, DOT_PRECISION, UPCAST_DOT).to(ACC)
            acc += _dot(g_lo, zj, DOT_PRECISION, UPCAST_DOT).to(ACC)
        else:
            acc += _dot(g.to(zj.dtype), zj, DOT_PRECISION, UPCAST_DOT).to(ACC)

    tl.store(dz_ptr + rows[:, None] * stride_dz + dk[None, :], acc.to(dz_ptr.dtype.element_ty),
             mask=row_ok[:, None] & dmask)


# --- launchers -------------------------------------------------------------------------------------------


def _check(z: Tensor, labels: Tensor, temperature: float) -> None:
    if z.dim() != 2:
        raise ValueError(f"supcon_loss: z must be [B, d], got {tuple(z.shape)}")
    B, d = z.shape
    if B == 0 or d == 0:
        raise ValueError(f"supcon_loss: empty z {tuple(z.shape)}")
    if d > MAX_D:
        raise ValueError(f"supcon_loss: the kernel holds d in one block, d <= {MAX_D}; got d = {d}")
    if labels.shape != (B,):
        raise ValueError(f"supcon_loss: labels must be [B] = [{B}], got {tuple(labels.shape)}")
    check_dtype("supcon_loss", "z", z, FLOAT_DTYPES)
    check_dtype("supcon_loss", "labels", labels, _is_integer, "integers")
    if z.device != labels.device:
        raise ValueError(f"supcon_loss: z on {z.device} but labels on {labels.device}")
    check_device("supcon_loss", "z", z, "fastcae.losses.supcon_loss")
    if not temperature > 0:
        raise ValueError(f"supcon_loss: temperature must be > 0, got {temperature}")


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _dot_precision(dtype: torch.dtype) -> str:
    # Only fp32 operands read it; fp64 dots must be "ieee".
    return FP32_DOT_PRECISION if dtype == torch.float32 else "ieee"


def _upcast_dot(dtype: torch.dtype) -> bool:
    return INTERPRET and dtype == torch.bfloat16  # see _dot


def _split_g(dtype: torch.dtype) -> bool:
    return dtype in (torch.bfloat16, torch.float16)  # see _supcon_bwd_kernel's SPLIT_G


def _reduce_block(B: int) -> int:
    """BLOCK_B of the one-program reduce kernel."""
    return min(triton.next_power_of_2(B), 1024)


def _launch_config(B: int, d: int, dtype: torch.dtype, n_sm: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, D_PAD, num_warps) for ``z [B, d]`` of ``dtype`` on a device of ``n_sm`` SMs.

    On a GPU: the largest anchor block that still gives every SM a program (B = 4096 -> 32 rows, 128
    programs), among the tiles that compile without register spills on sm_90 at 8 warps (ptxas, triton 3.8;
    the backward is the tighter one): 16-bit z up to 64 x 32 / 32 x 64 (32 x 32 for d = 256); fp32 z
    (tf32x3 splits every operand in two) up to 32 x 64, and 16 x 32 for d = 256 (which still spills ~120
    bytes in the backward).
    """
    d_pad = max(16, triton.next_power_of_2(d))
    if INTERPRET:
        return 32, 32, d_pad, 4
    if dtype == torch.float64:  # a test path; fp64 has no tensor cores
        return 16, 16, d_pad, 4
    if dtype == torch.float32:
        tiles = ((32, 64), (16, 64)) if d_pad <= 128 else ((16, 32),)
    else:
        tiles = ((64, 32), (32, 64), (16, 64)) if d_pad <= 128 else ((32, 32), (16, 32))
    block_m, block_n = tiles[-1]
    for bm, bn in tiles:
        if triton.cdiv(B, bm) >= n_sm:
            block_m, block_n = bm, bn
            break
    return block_m, block_n, d_pad, 8


def supcon_loss_forward(
    z: Tensor, labels: Tensor, temperature: float, *, config: tuple[int, int, int] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(loss [], stats [N_STATS, B], n_anchor [1])``; ``stats`` and ``n_anchor`` feed the backward.

    ``config`` = ``(BLOCK_M, BLOCK_N, num_warps)`` overrides the launch heuristic (tests use it to run the
    GPU tilings through the interpreter).
    """
    _check(z, labels, temperature)
    if z.stride(1) != 1:
        z = z.contiguous()
    labels = labels.contiguous()
    B, d = z.shape
    acc = acc_dtype(z)
    tl_acc = tl_dtype(acc)
    stats = torch.empty((N_STATS, B), dtype=acc, device=z.device)
    loss = torch.empty((), dtype=acc, device=z.device)
    n_anchor = torch.empty((1,), dtype=acc, device=z.device)
    block_m, block_n, d_pad, num_warps = _launch_config(B, d, z.dtype, sm_count(z.device))
    if config is not None:
        block_m, block_n, num_warps = config
    _supcon_fwd_kernel[(triton.cdiv(B, block_m),)](
        z, labels, stats, B, d, z.stride(0), float(temperature),
        BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=d_pad, DOT_PRECISION=_dot_precision(z.dtype),
        UPCAST_DOT=_upcast_dot(z.dtype),
        ACC=tl_acc,
        num_warps=num_warps,
    )
    _supcon_reduce_kernel[(1,)](
        stats, loss, n_anchor, B, BLOCK_B=_reduce_block(B), ACC=tl_acc, num_warps=4,
    )
    return loss, stats, n_anchor


def supcon_loss_backward(
    grad_output: Tensor,
    z: Tensor,
    labels: Tensor,
    stats: Tensor,
    n_anchor: Tensor,
    temperature: float,
    *,
    config: tuple[int, int, int] | None = None,
) -> Tensor:
    """``d loss / d z`` in ``z``'s dtype."""
    if z.stride(1) != 1:
        z = z.contiguous()
    labels = labels.contiguous()
    B, d = z.shape
    if stats.shape != (N_STATS, B) or n_anchor.shape != (1,):
        raise ValueError(
            f"supcon_loss_backward: stats {tuple(stats.shape)} / n_anchor {tuple(n_anchor.shape)} do not match B={B}"
        )
    dz = torch.empty_like(z, memory_format=torch.contiguous_format)
    block_m, block_n, d_pad, num_warps = _launch_config(B, d, z.dtype, sm_count(z.device))
    if config is not None:
        block_m, block_n, num_warps = config
    _supcon_bwd_kernel[(triton.cdiv(B, block_m),)](
        z, labels, stats, n_anchor, grad_output, dz, B, d, z.stride(0), dz.stride(0), float(temperature),
        BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=d_pad, DOT_PRECISION=_dot_precision(z.dtype),
        UPCAST_DOT=_upcast_dot(z.dtype),
        SPLIT_G=_split_g(z.dtype), ACC=tl_dtype(acc_dtype(z)),
        num_warps=num_warps,
    )
    return dz


# --- wiring ----------------------------------------------------------------------------------------------


@torch.library.custom_op("fastcae::supcon_loss", mutates_args=())
def _supcon_op(z: Tensor, labels: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    return supcon_loss_forward(z, labels, temperature)


@_supcon_op.register_fake
def _(z, labels, temperature):
    acc = acc_dtype(z)
    return z.new_empty((), dtype=acc), z.new_empty((N_STATS, z.shape[0]), dtype=acc), z.new_empty((1,), dtype=acc)


@torch.library.custom_op("fastcae::supcon_loss_backward", mutates_args=())
def _supcon_backward_op(
    grad_output: Tensor, z: Tensor, labels: Tensor, stats: Tensor, n_anchor: Tensor, temperature: float
) -> Tensor:
    return supcon_loss_backward(grad_output, z, labels, stats, n_anchor, temperature)


@_supcon_backward_op.register_fake
def _(grad_output, z, labels, stats, n_anchor, temperature):
    return torch.empty_like(z, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    z, labels, temperature = inputs
    _, stats, n_anchor = output
    ctx.save_for_backward(z, labels, stats, n_anchor)
    ctx.temperature = temperature
    ctx.mark_non_differentiable(stats, n_anchor)


def _backward(ctx, grad_loss, grad_stats, grad_n_anchor):
    z, labels, stats, n_anchor = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None
    return _supcon_backward_op(grad_loss, z, labels, stats, n_anchor, ctx.temperature), None, None


_supcon_op.register_autograd(_backward, setup_context=_setup_context)


# --- public function -------------------------------------------------------------------------------------


def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised-contrastive loss of ``z [B, d]`` with positives = same label, as one fused op.

    Same signature, value and gradient as ``fastcae.losses.supcon_loss``: the mean over anchors with at least
    one positive of ``LSE_{a != i}(z_i.z_a / tau) - mean_{p in P(i)} z_i.z_p / tau`` (0 if no anchor has a
    positive). Returns a 0-d fp32 tensor; the gradient comes back in ``z``'s dtype.
    """
    loss, _, _ = _supcon_op(z, labels, float(temperature))
    return loss


# --- ahead-of-time launches ------------------------------------------------------------------------------

_AOT_DIM = 128  # DistillConfig.cncl_dim: the projection head's width


def aot_launches(n_sm: int) -> list[Launch]:
    """The launches of ``supcon_loss_forward`` and ``supcon_loss_backward`` on a GPU of ``n_sm`` SMs, at CIFAR
    shapes (``shared.AOT_*``, ``d = _AOT_DIM``): for ``tools/kernel_check.py``, which compiles them ahead of
    time. Row-major ``z`` and ``dz``, as the launchers make them."""
    launches = []
    d = _AOT_DIM
    for dtype in AOT_DTYPES:
        dt, precision = dtype_name(dtype), _dot_precision(dtype)
        for B in AOT_BATCHES:
            bm, bn, d_pad, nw = _launch_config(B, d, dtype, n_sm)
            shape = f"B={B} d={d}"
            cfg = f"{dt} {precision} BLOCK_M={bm} BLOCK_N={bn} D_PAD={d_pad} w={nw}"
            common = dict(z_ptr=Ptr(dt), lab_ptr=Ptr("i64"), stats_ptr=Ptr("fp32"), B=B, d=d, stride_z=d,
                          temperature=0.1, BLOCK_M=bm, BLOCK_N=bn, D_PAD=d_pad, DOT_PRECISION=precision,
                          UPCAST_DOT=_upcast_dot(dtype), ACC=tl.float32)
            block_b = _reduce_block(B)
            split_g = _split_g(dtype)
            launches += [
                Launch(_supcon_fwd_kernel, common, nw, None, cfg, shape),
                Launch(_supcon_reduce_kernel,
                       dict(stats_ptr=Ptr("fp32"), loss_ptr=Ptr("fp32"), nanchor_ptr=Ptr("fp32"), B=B, BLOCK_B=block_b,
                            ACC=tl.float32), 4, None, f"BLOCK_B={block_b} w=4", shape),
                Launch(_supcon_bwd_kernel,
                       dict(common, nanchor_ptr=Ptr("fp32"), go_ptr=Ptr("fp32"), dz_ptr=Ptr(dt), stride_dz=d,
                            SPLIT_G=split_g), nw, None, cfg + (" SPLIT_G" if split_g else ""), shape),
            ]
    return launches
