"""Fused BatchNorm-statistics loss (DeepInversion / NAYER), one teacher BN layer per call.

Reference: ``fastcae.losses.bn_stats_loss``. For a BN input ``x [N, C, H, W]`` with ``M = N*H*W``::

    mean_c = sum_{n,h,w} x / M,   var_c = sum (x - mean_c)^2 / M                   (biased)
    dm = running_mean - ((1 - w) mean + w ema_mean),   dv = running_var - ((1 - w) var + w ema_var)
    loss = ||dv||_2 + ||dm||_2,   returns (loss, mean, var) with mean/var detached, fp32 [C]
    dx = g * [ -(1-w) dm_c / (||dm|| M)  -  2 (1-w) dv_c (x - mean_c) / (||dv|| M) ]   (0 where a norm is 0)

Bytes-moved floor (``b = x.element_size()``): forward reads ``x`` once, ``N*C*H*W*b`` bytes (plus O(C) for the
stats); backward reads ``x`` and writes ``dx``, ``2*N*C*H*W*b``. One forward + backward: ``3*N*C*H*W*b``.

Kernels:

- ``_bn_stats_loss_fwd_kernel``: grid ``(channel groups, SPLIT)``. Each program streams a contiguous range of
  tiles of its channel(s) once and keeps a Welford state (mean, M2, count) per tile lane in fp32, merged at
  the end exactly (weighted mean, then the correction and between-lane spread around it): accurate for
  large ``M`` and means far from 0, unlike sum/sum-of-squares. It writes one ``(mean, M2, count)`` partial
  per (split, channel).
- ``_bn_stats_loss_fin_kernel``: one program. Merges the ``SPLIT`` partials of every channel in a fixed order
  (blocks of partials merged as above, blocks chained with Chan's pairwise formula; deterministic, no
  atomics), blends with the EMA, writes ``mean``/``var``, the loss, and what the backward needs:
  ``aux = [(1-w) dm (C), (1-w) dv (C), 1/||dm||, 1/||dv||]``.
- ``_bn_stats_loss_bwd_kernel``: same tiling; ``dx = a_c + b_c (x - mean_c)`` with ``a_c, b_c`` from ``aux`` and
  the loss gradient, read in-kernel (no host sync). One read of ``x``, one write of ``dx``.

Layouts: ``x`` is viewed as ``[N, C, S = H*W]`` through its strides. Contiguous (NCHW) inputs are tiled
``[BLOCK_R rows of n, BLOCK_K spatial positions]`` of one channel; channels_last inputs as a row-major
``[N*S, C]`` matrix tiled ``[BLOCK_R positions, BLOCK_K channels]`` with channels contiguous. Any other
layout is copied to contiguous first (the only copy; the two BN layouts never take it).

fp64 inputs are accumulated and returned in fp64 (the reference casts to fp32) so ``gradcheck`` can run.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .shared import (
    AOT_DTYPES,
    AOT_GEN_BATCH,
    FLOAT_DTYPES,
    Launch,
    Ptr,
    acc_dtype,
    check_device,
    check_dtype,
    div_rn,
    dtype_name,
    sm_count,
    sqrt_rn,
    tl_dtype,
)

# ---------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------
# Elements per tile (per loop iteration of a program): 16 KiB of fp32, 8 KiB of bf16, 16 KiB of fp64, so
# every thread of the 8 warps keeps 16 (8 for fp64) elements in flight.
_TILE = {2: 4096, 4: 4096, 8: 2048}
# The backward holds x, the upstream terms and dx per element: half the fp32 tile (8 elements per thread)
# keeps it out of local memory (4096 spilled 4 bytes for fp32 NCHW 16x256 on sm_80 and sm_90).
_BWD_TILE = {2: 4096, 4: 2048, 8: 1024}
_NUM_WARPS = 8
# channels_last: channels per tile row (32 fp32 = 128 B contiguous per row).
_CL_BLOCK_C = 32
# NCHW with H*W > tile: the smallest spatial tile (a power of 2 dividing H*W) kept before falling back to
# per-lane counts.
_MIN_SPATIAL_BLOCK = 32
# Programs per SM the reduction aims for (split each channel's reduction over several programs so that even
# C = 64 fills an H100), and for the elementwise backward.
_FWD_PROGRAMS_PER_SM = 8
_BWD_PROGRAMS_PER_SM = 16
# Upper bound on (split x channel) partials, all merged by the single finalize program (L2-resident).
_MAX_PARTIALS = 16384
# Finalize tile: [splits, channels] elements merged per iteration, at most _FIN_BLOCK_C channels wide.
_FIN_TILE = 4096
_FIN_BLOCK_C = 256


# ---------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def _sum_axis(v, AXIS: tl.constexpr):
    """``tl.sum`` over ``AXIS`` of a 2-D tile, or over both axes when ``AXIS`` is None."""
    if AXIS is None:
        return tl.sum(tl.sum(v, axis=1), axis=0)
    else:
        return tl.sum(v, axis=AXIS)


@triton.jit
def _merge_lanes(mean, m2, cnt, AXIS: tl.constexpr):
    """Merge per-lane Welford summaries (mean, M2, count) of a 2-D tile along ``AXIS`` (None: all).

    Two passes over the lane summaries instead of a pairwise ``tl.reduce`` (whose combine function the
    interpreter runs element by element): a first weighted mean ``m0``, then the exact correction
    ``sum c (mean - m0)`` and the between-lane spread ``sum c (mean - m0)^2``. Empty lanes (count 0) weigh 0.
    """
    n = _sum_axis(cnt, AXIS)
    n_safe = tl.maximum(n, 1.0)
    m0 = _sum_axis(cnt * mean, AXIS) / n_safe
    if AXIS == 0:
        dev = mean - m0[None, :]
    elif AXIS == 1:
        dev = mean - m0[:, None]
    else:
        dev = mean - m0
    corr = _sum_axis(cnt * dev, AXIS)
    spread = _sum_axis(m2 + cnt * dev * dev, AXIS)
    return m0 + corr / n_safe, spread - corr * corr / n_safe, n


@triton.jit
def _chan_merge(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Chan et al.'s pairwise merge of two (mean, M2, count) summaries; a count-0 summary is neutral."""
    n = n_a + n_b
    frac_b = n_b / tl.maximum(n, 1.0)
    delta = mean_b - mean_a
    return mean_a + delta * frac_b, m2_a + m2_b + delta * delta * n_a * frac_b, n


@triton.jit
def _tile(u, pid_c, N, C, S, stride_n, stride_c, stride_s, S_BLOCKS,
          CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Element offsets (int64) and validity of tile ``u`` of channel group ``pid_c``: ``[BLOCK_R, BLOCK_K]``."""
    r = tl.arange(0, BLOCK_R)[:, None]
    k = tl.arange(0, BLOCK_K)[None, :]
    if CHANNELS_LAST:
        # Row-major [N*S, C] matrix, channels contiguous: rows = flattened (n, h, w).
        rows = u * BLOCK_R + r
        cols = pid_c * BLOCK_K + k
        ok = (rows < N * S) & (cols < C)
        offs = rows.to(tl.int64) * stride_s + cols
    else:
        # One channel: [N, S] with S contiguous; tile u = (block of n, block of s).
        nb = u // S_BLOCKS
        sb = u - nb * S_BLOCKS
        n_idx = nb * BLOCK_R + r
        s_idx = sb * BLOCK_K + k
        ok = (n_idx < N) & (s_idx < S)
        offs = pid_c * stride_c + n_idx.to(tl.int64) * stride_n + s_idx
    return offs, ok


@triton.jit
def _bn_stats_loss_fwd_kernel(
    x_ptr,  # [N, C, H, W] input (fp32/bf16/fp16/fp64), addressed as [N, C, S] through the strides below
    part_ptr,  # [3, SPLIT, C] ACC out: per (split, channel) mean, M2, count
    N,  # batch size
    C,  # channels
    S,  # H * W
    stride_n,  # element stride of n (NCHW path)
    stride_c,  # element stride of c (NCHW path; 1 on the channels_last path)
    stride_s,  # element stride of the flattened spatial index (1 on the NCHW path)
    UNITS,  # tiles per channel group
    UNITS_PER_PROG,  # tiles per program (contiguous range)
    S_BLOCKS,  # NCHW path: spatial tiles per row of n
    CHANNELS_LAST: tl.constexpr,  # tile [positions, channels] (True) or [n, spatial] of one channel (False)
    UNIFORM: tl.constexpr,  # a lane valid at a tile is valid at all earlier tiles of the program
    BLOCK_R: tl.constexpr,  # tile rows
    BLOCK_K: tl.constexpr,  # tile columns (contiguous in memory)
    ACC: tl.constexpr,  # accumulation dtype (fp32, fp64 for fp64 inputs)
):
    pid_c = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    split = tl.num_programs(1)
    # Welford state per tile lane: each lane sees at most UNITS_PER_PROG values, so fp32 stays accurate.
    mean = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
    m2 = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
    u_start = pid_s * UNITS_PER_PROG
    u_end = tl.minimum(u_start + UNITS_PER_PROG, UNITS)
    if UNIFORM:
        # A lane's valid tiles are a prefix of the program's range (tails are in the last row block only;
        # invalid columns are invalid in every tile): at tile j every valid lane holds j values, so the
        # Welford weight 1/(j+1) is a scalar (no per-element division, no count registers). Invalid lanes
        # see x = mean: no update.
        for u in range(u_start, u_end):
            offs, ok = _tile(u, pid_c, N, C, S, stride_n, stride_c, stride_s, S_BLOCKS,
                             CHANNELS_LAST, BLOCK_R, BLOCK_K)
            xv = tl.where(ok, tl.load(x_ptr + offs, mask=ok, other=0.0).to(ACC), mean)
            delta = xv - mean
            mean += delta * (1.0 / (u - u_start + 1).to(ACC))
            m2 += delta * (xv - mean)
        # Count per lane: row r of a tile is valid in tiles u < u_lim(r); the column mask is fixed.
        r = tl.arange(0, BLOCK_R)[:, None]
        k = tl.arange(0, BLOCK_K)[None, :]
        if CHANNELS_LAST:
            u_lim = (N * S - r + BLOCK_R - 1) // BLOCK_R
            col_ok = pid_c * BLOCK_K + k < C
        else:
            u_lim = S_BLOCKS * ((N - r + BLOCK_R - 1) // BLOCK_R)
            col_ok = k < S
        n_valid = tl.maximum(tl.minimum(u_lim, u_end) - u_start, 0)
        cnt = tl.where(col_ok, n_valid, 0).to(ACC)
    else:
        # Spatial tails inside the program's range (H*W > tile, not a multiple of it): per-lane counts.
        cnt = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
        for u in range(u_start, u_end):
            offs, ok = _tile(u, pid_c, N, C, S, stride_n, stride_c, stride_s, S_BLOCKS,
                             CHANNELS_LAST, BLOCK_R, BLOCK_K)
            xv = tl.load(x_ptr + offs, mask=ok, other=0.0).to(ACC)
            cnt_new = cnt + ok.to(ACC)
            delta = xv - mean
            mean_new = mean + delta / tl.maximum(cnt_new, 1.0)
            mean = tl.where(ok, mean_new, mean)
            m2 = tl.where(ok, m2 + delta * (xv - mean_new), m2)
            cnt = cnt_new
    if CHANNELS_LAST:
        p_mean, p_m2, p_cnt = _merge_lanes(mean, m2, cnt, 0)
        ch = pid_c * BLOCK_K + tl.arange(0, BLOCK_K)
        ch_ok = ch < C
        offs_p = pid_s * C + ch
        tl.store(part_ptr + offs_p, p_mean, mask=ch_ok)
        tl.store(part_ptr + split * C + offs_p, p_m2, mask=ch_ok)
        tl.store(part_ptr + 2 * split * C + offs_p, p_cnt, mask=ch_ok)
    else:
        p_mean, p_m2, p_cnt = _merge_lanes(mean, m2, cnt, None)
        offs_p = pid_s * C + pid_c
        tl.store(part_ptr + offs_p, p_mean)
        tl.store(part_ptr + split * C + offs_p, p_m2)
        tl.store(part_ptr + 2 * split * C + offs_p, p_cnt)


@triton.jit
def _bn_stats_loss_fin_kernel(
    part_ptr,  # [3, SPLIT, C] ACC partials from the forward kernel
    rm_ptr,  # [C] running_mean (any float dtype)
    rv_ptr,  # [C] running_var
    em_ptr,  # [C] ema_mean
    ev_ptr,  # [C] ema_var
    w_ptr,  # [] ema weight tensor (read when HAS_W_PTR)
    w_value,  # ema weight as a scalar (used when not HAS_W_PTR)
    loss_ptr,  # [] ACC out: ||dv|| + ||dm||
    mean_ptr,  # [C] ACC out: batch mean
    var_ptr,  # [C] ACC out: batch biased variance
    aux_ptr,  # [2C + 2] ACC out: (1-w) dm, (1-w) dv, 1/||dm||, 1/||dv|| (0 where the norm is 0)
    C,  # channels
    SPLIT,  # partials per channel
    HAS_W_PTR: tl.constexpr,
    BLOCK_SP: tl.constexpr,  # partials merged per iteration
    BLOCK_C: tl.constexpr,  # channels per iteration
    ACC: tl.constexpr,
):
    if HAS_W_PTR:
        w = tl.load(w_ptr).to(ACC)
    else:
        w = tl.cast(w_value, ACC)  # Inductor passes fp64 scalars: fix the type here
    one_minus_w = 1.0 - w
    sq_m = tl.zeros([BLOCK_C], dtype=ACC)
    sq_v = tl.zeros([BLOCK_C], dtype=ACC)
    sp = tl.arange(0, BLOCK_SP)[:, None]
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        ch_ok = ch < C
        run_mean = tl.zeros([BLOCK_C], dtype=ACC)
        run_m2 = tl.zeros([BLOCK_C], dtype=ACC)
        run_n = tl.zeros([BLOCK_C], dtype=ACC)
        # Fixed order (deterministic): BLOCK_SP partials at a time, then left to right over the blocks.
        for s0 in range(0, SPLIT, BLOCK_SP):
            rows = s0 + sp
            ok = (rows < SPLIT) & ch_ok[None, :]
            offs = rows * C + ch[None, :]
            pm = tl.load(part_ptr + offs, mask=ok, other=0.0)
            pm2 = tl.load(part_ptr + SPLIT * C + offs, mask=ok, other=0.0)
            pn = tl.load(part_ptr + 2 * SPLIT * C + offs, mask=ok, other=0.0)
            b_mean, b_m2, b_n = _merge_lanes(pm, pm2, pn, 0)
            run_mean, run_m2, run_n = _chan_merge(run_mean, run_m2, run_n, b_mean, b_m2, b_n)
        run_m2 = tl.maximum(run_m2, 0.0)
        var = div_rn(run_m2, tl.maximum(run_n, 1.0))
        tl.store(mean_ptr + ch, run_mean, mask=ch_ok)
        tl.store(var_ptr + ch, var, mask=ch_ok)
        rm = tl.load(rm_ptr + ch, mask=ch_ok, other=0.0).to(ACC)
        rv = tl.load(rv_ptr + ch, mask=ch_ok, other=0.0).to(ACC)
        em = tl.load(em_ptr + ch, mask=ch_ok, other=0.0).to(ACC)
        ev = tl.load(ev_ptr + ch, mask=ch_ok, other=0.0).to(ACC)
        dm = tl.where(ch_ok, rm - (one_minus_w * run_mean + w * em), 0.0)
        dv = tl.where(ch_ok, rv - (one_minus_w * var + w * ev), 0.0)
        tl.store(aux_ptr + ch, one_minus_w * dm, mask=ch_ok)
        tl.store(aux_ptr + C + ch, one_minus_w * dv, mask=ch_ok)
        sq_m += dm * dm
        sq_v += dv * dv
    norm_m = sqrt_rn(tl.sum(sq_m, axis=0))
    norm_v = sqrt_rn(tl.sum(sq_v, axis=0))
    tl.store(loss_ptr, norm_v + norm_m)
    # d||d||/dd = d / ||d||, and 0 at d = 0 (torch's convention for vector_norm at the origin).
    one = tl.cast(1.0, norm_m.dtype)
    tl.store(aux_ptr + 2 * C, tl.where(norm_m > 0, div_rn(one, tl.where(norm_m > 0, norm_m, one)), 0.0))
    tl.store(aux_ptr + 2 * C + 1, tl.where(norm_v > 0, div_rn(one, tl.where(norm_v > 0, norm_v, one)), 0.0))


@triton.jit
def _bn_stats_loss_bwd_kernel(
    x_ptr,  # [N, C, H, W] input, same view/strides as in the forward
    dx_ptr,  # [N, C, H, W] out, same strides as x, dtype of x
    go_ptr,  # [] gradient of the loss
    mean_ptr,  # [C] ACC batch mean from the forward
    aux_ptr,  # [2C + 2] ACC from the forward's finalize
    N,
    C,
    S,
    stride_n,
    stride_c,
    stride_s,
    UNITS,
    UNITS_PER_PROG,
    S_BLOCKS,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ACC: tl.constexpr,
):
    pid_c = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    go = tl.load(go_ptr).to(ACC)
    inv_count = div_rn(tl.cast(1.0, ACC), (N * S).to(ACC))
    # dL/dmean_c = -(1-w) dm_c / ||dm||, dmean/dx = 1/M; dL/dvar_c = -(1-w) dv_c / ||dv||, dvar/dx = 2(x-mean)/M.
    scale_a = -go * tl.load(aux_ptr + 2 * C) * inv_count
    scale_b = -2.0 * go * tl.load(aux_ptr + 2 * C + 1) * inv_count
    u_start = pid_s * UNITS_PER_PROG
    u_end = tl.minimum(u_start + UNITS_PER_PROG, UNITS)
    if CHANNELS_LAST:
        ch = pid_c * BLOCK_K + tl.arange(0, BLOCK_K)
        ch_ok = ch < C
        mu = tl.load(mean_ptr + ch, mask=ch_ok, other=0.0)[None, :]
        a = (tl.load(aux_ptr + ch, mask=ch_ok, other=0.0) * scale_a)[None, :]
        b = (tl.load(aux_ptr + C + ch, mask=ch_ok, other=0.0) * scale_b)[None, :]
    else:
        mu = tl.load(mean_ptr + pid_c)
        a = tl.load(aux_ptr + pid_c) * scale_a
        b = tl.load(aux_ptr + C + pid_c) * scale_b
    for u in range(u_start, u_end):
        offs, ok = _tile(u, pid_c, N, C, S, stride_n, stride_c, stride_s, S_BLOCKS,
                         CHANNELS_LAST, BLOCK_R, BLOCK_K)
        xv = tl.load(x_ptr + offs, mask=ok, other=0.0).to(ACC)
        dx = a + b * (xv - mu)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------
def _nsc_view(x: Tensor) -> tuple[Tensor, bool, int, int, int]:
    """``(x or a contiguous copy, channels_last path?, stride_n, stride_c, stride_s)`` for ``[N, C, S]``.

    channels_last path: channels unit-stride and (n, h, w) mergeable into one row index of stride
    ``stride_s``. NCHW path: (h, w) mergeable into one unit-stride index. Anything else is copied.
    """
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    s = h * w
    if s == 1:
        ss = None  # no spatial extent: any stride works
    elif h == 1:
        ss = sw
    elif w == 1 or sh == w * sw:
        ss = sh if w == 1 else sw
    else:
        ss = -1  # not mergeable
    if c > 1 and sc == 1 and ss != -1:
        if s == 1:
            return x, True, 0, 1, (sn if n > 1 else c)
        if n == 1 or sn == s * ss:
            return x, True, 0, 1, ss
    if ss is None or ss == 1:
        return x, False, sn, sc, 1
    x = x.contiguous()
    return x, False, c * s, s, 1


@functools.lru_cache(maxsize=1024)
def _plan(shape, channels_last: bool, itemsize: int, num_sms: int, programs_per_sm: int,
          max_partials: Optional[int], tile: Optional[int], split: Optional[int]):
    """Tile shape and the (channel groups, SPLIT) grid (cached: host time counts at small shapes).

    ``tile``/``split`` override the defaults (tests use them to force several tiles/programs per channel).
    """
    n, c, h, w = shape
    s = h * w
    tile = tile or _TILE[itemsize]
    if channels_last:
        block_k = min(_CL_BLOCK_C, triton.next_power_of_2(c), tile)
        block_r = tile // block_k
        groups = triton.cdiv(c, block_k)
        s_blocks = 1
        units = triton.cdiv(n * s, block_r)
        uniform = True
    else:
        pow2_divisor = s & -s
        if s <= tile:  # one spatial tile per row of n: only the last row block has a tail
            block_k, uniform = triton.next_power_of_2(s), True
        elif pow2_divisor >= _MIN_SPATIAL_BLOCK:  # e.g. 56x56 = 49 * 64: tiles of 64 divide every row
            block_k, uniform = min(pow2_divisor, tile), True
        else:  # spatial tails in every row: per-lane counts
            block_k, uniform = tile, False
        block_r = tile // block_k
        groups = c
        s_blocks = triton.cdiv(s, block_k)
        units = triton.cdiv(n, block_r) * s_blocks
    if split is None:
        split = triton.cdiv(programs_per_sm * num_sms, groups)
        if max_partials is not None:
            split = min(split, max(1, max_partials // (groups * block_k if channels_last else groups)))
    split = max(1, min(split, units))
    units_per_prog = triton.cdiv(units, split)
    split = triton.cdiv(units, units_per_prog)  # no empty programs
    return dict(block_r=block_r, block_k=block_k, groups=groups, s_blocks=s_blocks, units=units,
                units_per_prog=units_per_prog, split=split, uniform=uniform)


def _fwd_plan(x: Tensor, channels_last: bool, n_sm: int, tile=None, split=None):
    """The forward's ``_plan`` for ``x`` (an ``_nsc_view``) on a device of ``n_sm`` SMs."""
    return _plan(tuple(x.shape), channels_last, x.element_size(), n_sm, _FWD_PROGRAMS_PER_SM, _MAX_PARTIALS,
                 tile, split)


def _bwd_plan(x: Tensor, channels_last: bool, n_sm: int, tile=None, split=None):
    """The backward's ``_plan``: more programs per SM, a smaller tile (``_BWD_TILE``), no partials."""
    return _plan(tuple(x.shape), channels_last, x.element_size(), n_sm, _BWD_PROGRAMS_PER_SM, None,
                 tile or _BWD_TILE[x.element_size()], split)


def _fin_blocks(c: int, split: int) -> tuple[int, int]:
    """``(BLOCK_SP, BLOCK_C)`` of the finalize kernel: ``split`` partials of ``c`` channels, _FIN_TILE at a time."""
    block_c = min(triton.next_power_of_2(c), _FIN_BLOCK_C)
    return max(1, min(_FIN_TILE // block_c, triton.next_power_of_2(split))), block_c


def _check_inputs(x, running_mean, running_var, ema_mean, ema_var, ema_weight):
    if x.dim() != 4:
        raise ValueError(f"bn_stats_loss: x must be [N, C, H, W], got shape {tuple(x.shape)}")
    check_dtype("bn_stats_loss", "x", x, FLOAT_DTYPES)
    n, c, h, w = x.shape
    if n * h * w == 0 or c == 0:
        raise ValueError(f"bn_stats_loss: x has no elements per channel, shape {tuple(x.shape)}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("ema_mean", ema_mean),
                    ("ema_var", ema_var)):
        if t.shape != (c,):
            raise ValueError(f"bn_stats_loss: {name} must have shape [{c}], got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"bn_stats_loss: {name} is on {t.device}, x on {x.device}")
        check_dtype("bn_stats_loss", name, t, lambda dtype: dtype.is_floating_point, "floating point")
    if ema_weight is not None and ema_weight.numel() != 1:
        raise ValueError(f"bn_stats_loss: ema_weight must hold one value, got shape {tuple(ema_weight.shape)}")
    check_device("bn_stats_loss", "x", x, "fastcae.losses.bn_stats_loss")


def bn_stats_loss_forward(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    ema_mean: Tensor,
    ema_var: Tensor,
    ema_weight: Optional[Tensor],
    ema_weight_value: float = 0.0,
    *,
    out: Optional[tuple[Tensor, Tensor, Tensor, Tensor]] = None,
    tile: Optional[int] = None,
    split: Optional[int] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(loss [], mean [C], var [C], aux [2C+2])`` in fp32 (fp64 for fp64 ``x``); one read of ``x``.

    ``ema_weight`` (a tensor, read on device) wins over ``ema_weight_value``. ``out`` (preallocated outputs),
    ``tile`` and ``split`` exist for tests.
    """
    _check_inputs(x, running_mean, running_var, ema_mean, ema_var, ema_weight)
    x, channels_last, sn, sc, ss = _nsc_view(x)
    n, c, h, w = x.shape
    acc = acc_dtype(x)
    plan = _fwd_plan(x, channels_last, sm_count(x.device), tile, split)
    if out is None:
        loss = torch.empty((), dtype=acc, device=x.device)
        mean = torch.empty(c, dtype=acc, device=x.device)
        var = torch.empty(c, dtype=acc, device=x.device)
        aux = torch.empty(2 * c + 2, dtype=acc, device=x.device)
    else:
        loss, mean, var, aux = out
    partials = torch.empty((3, plan["split"], c), dtype=acc, device=x.device)
    _bn_stats_loss_fwd_kernel[(plan["groups"], plan["split"])](
        x, partials, n, c, h * w, sn, sc, ss,
        plan["units"], plan["units_per_prog"], plan["s_blocks"],
        CHANNELS_LAST=channels_last, UNIFORM=plan["uniform"], BLOCK_R=plan["block_r"], BLOCK_K=plan["block_k"],
        ACC=tl_dtype(acc), num_warps=_NUM_WARPS,
    )
    has_w_ptr = ema_weight is not None
    w_arg = ema_weight if has_w_ptr else loss  # loss: an unused placeholder pointer
    if has_w_ptr and w_arg.device != x.device:  # e.g. a CPU scalar tensor
        w_arg = w_arg.to(x.device)
    block_sp, block_c = _fin_blocks(c, plan["split"])
    _bn_stats_loss_fin_kernel[(1,)](
        partials, running_mean, running_var, ema_mean, ema_var, w_arg, float(ema_weight_value),
        loss, mean, var, aux, c, plan["split"],
        HAS_W_PTR=has_w_ptr, BLOCK_SP=block_sp, BLOCK_C=block_c, ACC=tl_dtype(acc), num_warps=_NUM_WARPS,
    )
    return loss, mean, var, aux


def bn_stats_loss_backward(
    grad_loss: Tensor,
    x: Tensor,
    mean: Tensor,
    aux: Tensor,
    *,
    out: Optional[Tensor] = None,
    tile: Optional[int] = None,
    split: Optional[int] = None,
) -> Tensor:
    """``dx`` (dtype and strides of ``x``) from the forward's ``mean``/``aux`` and ``grad_loss`` (0-d)."""
    if x.dim() != 4:
        raise ValueError(f"bn_stats_loss_backward: x must be [N, C, H, W], got {tuple(x.shape)}")
    c = x.shape[1]
    if mean.shape != (c,) or aux.shape != (2 * c + 2,):
        raise ValueError(f"bn_stats_loss_backward: mean/aux must be [{c}]/[{2 * c + 2}], got "
                         f"{tuple(mean.shape)}/{tuple(aux.shape)}")
    if grad_loss.numel() != 1:
        raise ValueError(f"bn_stats_loss_backward: grad_loss must hold one value, got {tuple(grad_loss.shape)}")
    x_view, channels_last, sn, sc, ss = _nsc_view(x)
    dx = torch.empty_like(x_view) if out is None else out
    if dx.stride() != x_view.stride():  # x not dense (e.g. expanded): write a dense dx from a dense copy
        x_view, channels_last, sn, sc, ss = _nsc_view(x.contiguous())
        if dx.stride() != x_view.stride():
            dx = torch.empty_like(x_view)
    if grad_loss.device != x.device:
        grad_loss = grad_loss.to(x.device)
    n, _, h, w = x_view.shape
    acc = acc_dtype(x_view)
    plan = _bwd_plan(x_view, channels_last, sm_count(x_view.device), tile, split)
    _bn_stats_loss_bwd_kernel[(plan["groups"], plan["split"])](
        x_view, dx, grad_loss, mean, aux, n, c, h * w, sn, sc, ss,
        plan["units"], plan["units_per_prog"], plan["s_blocks"],
        CHANNELS_LAST=channels_last, BLOCK_R=plan["block_r"], BLOCK_K=plan["block_k"], ACC=tl_dtype(acc),
        num_warps=_NUM_WARPS,
    )
    return dx


# ---------------------------------------------------------------------------------------------------------
# Wiring: custom ops (forward, backward) + fakes + autograd
# ---------------------------------------------------------------------------------------------------------
@torch.library.custom_op("fastcae::bn_stats_loss", mutates_args=())
def _bn_stats_loss_op(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    ema_mean: Tensor,
    ema_var: Tensor,
    ema_weight: Optional[Tensor],
    ema_weight_value: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return bn_stats_loss_forward(x, running_mean, running_var, ema_mean, ema_var, ema_weight, ema_weight_value)


@_bn_stats_loss_op.register_fake
def _bn_stats_loss_fake(x, running_mean, running_var, ema_mean, ema_var, ema_weight, ema_weight_value):
    c = x.shape[1]
    acc = acc_dtype(x)
    return (x.new_empty((), dtype=acc), x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc),
            x.new_empty((2 * c + 2,), dtype=acc))


@torch.library.custom_op("fastcae::bn_stats_loss_backward", mutates_args=())
def _bn_stats_loss_backward_op(grad_loss: Tensor, x: Tensor, mean: Tensor, aux: Tensor) -> Tensor:
    return bn_stats_loss_backward(grad_loss, x, mean, aux)


@_bn_stats_loss_backward_op.register_fake
def _bn_stats_loss_backward_fake(grad_loss, x, mean, aux):
    return torch.empty_like(x)


def _bn_stats_loss_setup_context(ctx, inputs, output):
    x = inputs[0]
    _, mean, var, aux = output
    ctx.save_for_backward(x, mean, aux)
    ctx.mark_non_differentiable(mean, var, aux)


def _bn_stats_loss_autograd(ctx, grad_loss, grad_mean, grad_var, grad_aux):
    x, mean, aux = ctx.saved_tensors
    dx = None
    if ctx.needs_input_grad[0]:
        dx = torch.ops.fastcae.bn_stats_loss_backward(grad_loss, x, mean, aux)
    return dx, None, None, None, None, None, None


_bn_stats_loss_op.register_autograd(_bn_stats_loss_autograd, setup_context=_bn_stats_loss_setup_context)


# ---------------------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------------------
def bn_stats_loss(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    ema_mean: Tensor,
    ema_var: Tensor,
    ema_weight: Tensor | float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused ``fastcae.losses.bn_stats_loss``: ``(loss, batch_mean, batch_var)``, stats detached, fp32 ``[C]``.

    ``x [N, C, H, W]`` (fp32/bf16/fp16, contiguous or channels_last) is read once forward and once backward.
    ``ema_weight`` is a 0-d tensor (read on device, no sync) or a Python float. Gradient flows to ``x`` only;
    the running statistics, the EMA and its weight are buffers.
    """
    if isinstance(ema_weight, Tensor):
        w_tensor, w_value = ema_weight, 0.0
    else:
        w_tensor, w_value = None, float(ema_weight)
    loss, mean, var, _ = torch.ops.fastcae.bn_stats_loss(x, running_mean, running_var, ema_mean, ema_var,
                                                         w_tensor, w_value)
    return loss, mean, var


# ---------------------------------------------------------------------------------------------------------
# Ahead-of-time launches
# ---------------------------------------------------------------------------------------------------------
# The BatchNorm inputs [N, C, H, W] of the CIFAR teachers as (C, H*W): resnet18/34 (64@32x32 .. 512@4x4),
# wrn40_2 (16@32x32 .. 128@8x8), vgg11_bn (64@32x32 .. 512@2x2).
_AOT_LAYERS = ((16, 1024), (32, 1024), (64, 1024), (64, 256), (128, 256), (128, 64), (256, 64), (512, 16),
               (512, 4))


def aot_launches(n_sm: int) -> list[Launch]:
    """The launches of ``bn_stats_loss_forward`` and ``bn_stats_loss_backward`` on a GPU of ``n_sm`` SMs, for
    every BN layer of ``_AOT_LAYERS`` at the generator step's batch (``shared.AOT_*``), NCHW and channels_last,
    with the EMA weight as a tensor: for ``tools/kernel_check.py``, which compiles them ahead of time."""
    launches = []
    N, f32 = AOT_GEN_BATCH, Ptr("fp32")
    for dtype in AOT_DTYPES:
        dt = dtype_name(dtype)
        for channels_last in (False, True):
            layout = "channels_last" if channels_last else "NCHW"
            for C, S in _AOT_LAYERS:
                hw = int(S ** 0.5)
                x = torch.empty((N, C, hw, hw), device="meta", dtype=dtype)
                if channels_last:
                    x = x.to(memory_format=torch.channels_last)
                x, cl, sn, sc, ss = _nsc_view(x)
                shape = f"[{N},{C},{hw},{hw}] {layout}"
                view = dict(N=N, C=C, S=S, stride_n=sn, stride_c=sc, stride_s=ss)
                fwd, bwd = _fwd_plan(x, cl, n_sm), _bwd_plan(x, cl, n_sm)
                block_sp, block_c = _fin_blocks(C, fwd["split"])
                launches += [
                    Launch(_bn_stats_loss_fwd_kernel,
                           dict(x_ptr=Ptr(dt), part_ptr=f32, **view, UNITS=fwd["units"],
                                UNITS_PER_PROG=fwd["units_per_prog"], S_BLOCKS=fwd["s_blocks"], CHANNELS_LAST=cl,
                                UNIFORM=fwd["uniform"], BLOCK_R=fwd["block_r"], BLOCK_K=fwd["block_k"],
                                ACC=tl.float32),
                           _NUM_WARPS, None,
                           f"{dt} {'CL' if cl else 'NCHW'}{' UNIFORM' if fwd['uniform'] else ''} "
                           f"BLOCK_R={fwd['block_r']} BLOCK_K={fwd['block_k']} w={_NUM_WARPS}", shape),
                    Launch(_bn_stats_loss_fin_kernel,
                           dict(part_ptr=f32, rm_ptr=f32, rv_ptr=f32, em_ptr=f32, ev_ptr=f32, w_ptr=f32, w_value=0.0,
                                loss_ptr=f32, mean_ptr=f32, var_ptr=f32, aux_ptr=f32, C=C, SPLIT=fwd["split"],
                                HAS_W_PTR=True, BLOCK_SP=block_sp, BLOCK_C=block_c, ACC=tl.float32),
                           _NUM_WARPS, None, f"BLOCK_SP={block_sp} BLOCK_C={block_c} w={_NUM_WARPS}", shape),
                    Launch(_bn_stats_loss_bwd_kernel,
                           dict(x_ptr=Ptr(dt), dx_ptr=Ptr(dt), go_ptr=f32, mean_ptr=f32, aux_ptr=f32, **view,
                                UNITS=bwd["units"], UNITS_PER_PROG=bwd["units_per_prog"], S_BLOCKS=bwd["s_blocks"],
                                CHANNELS_LAST=cl, BLOCK_R=bwd["block_r"], BLOCK_K=bwd["block_k"], ACC=tl.float32),
                           _NUM_WARPS, None,
                           f"{dt} {'CL' if cl else 'NCHW'} BLOCK_R={bwd['block_r']} BLOCK_K={bwd['block_k']} "
                           f"w={_NUM_WARPS}", shape),
                ]
    return launches
