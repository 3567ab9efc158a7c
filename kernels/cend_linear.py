"""Fused CEND front of the ``cae`` generator: gather + counter noise + diffuse + BatchNorm1d + first Linear.

    v[b]   = e_off[y_b] + M[s_b] * scale * q[b]          q[b, d] from (seed, offset + b * D + d), source s_b
    y      = (v - mu) * rsqrt(var + eps) * gamma + beta   batch statistics (training) or running (eval)
    h      = y @ W^T + bias                               [B, O]

Reference: ``fastcae.synthesis.cend.cend_linear_reference(..., noise=counter_noise(seed, offset, source_ids, D), ...)``,
including F.batch_norm's in-place running-stat update when training (done by the Python wrapper from the batch
statistics the op returns). The noise ``q`` and the diffused ``v`` (and ``y``) live only in registers: they
are regenerated from Philox counters wherever needed (one ``tl.philox`` call, as ``tl.randint4x`` makes it, gives
``tl.rand``'s and ``tl.randn``'s words), so no ``[B, D]`` float tensor is ever allocated.

Shapes: embeddings [C, D], targets / source_ids [B] int64, magnitudes [N] or [N, D], scale 0-d, bn params and
running stats [D], weight [O, D], bias [O]. Gradients flow to bn_weight, bn_bias, weight and bias (``v`` is a
constant, so the batch statistics carry no gradient: dgamma = sum_b (dh W)[b] * vhat[b], dbeta = sum_b (dh W)[b]).

Bytes-moved floor (weights in bytes of ``w``, fp32 vectors):
    forward:  W and h: ``w * O * (D + B)``, plus the gathers ``B * (16 + 4 * D)`` (embedding rows) and O(D)
    backward: dh read, W read, dW written: ``w * (B * O + 2 * O * D)`` plus O(D + O)
e.g. B=400, D=512, O=8192 in bf16: forward ~15.8 MB, backward ~23.3 MB. FLOP floor: 2*B*D*O per matmul (three).
What this design trades for the floor: every program regenerates the noise of its row block (Philox-4x32-10,
~100 integer ops per element), once per output-column block; wide O-blocks keep that factor small.
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .shared import (
    AOT_CLASSES,
    AOT_GEN_BATCH,
    FLOAT_DTYPES,
    INTERPRET,
    Launch,
    Ptr,
    acc_dtype,
    check_device,
    check_dtype,
    dtype_name,
    sm_count,
    tl_dtype,
)

# --- constants ---------------------------------------------------------------------------------------------

# Block sizes (BLOCK_B rows, BLOCK_O output columns, BLOCK_D input columns). Under the interpreter: one fixed
# small config (the interpreter is slow; every dot block is still >= 16, so it is also valid compiled code).
# On a GPU: a fixed config per shape class and dot precision (``_wide_o_config``), never a timing-based
# autotune: autotuning made two processes able to sum in different orders (results depending on which config
# won a race of timings) and would time a new shape during a CUDA-graph capture, which breaks the capture.
# The forward's and dW's Philox regeneration work scales with O / BLOCK_O (the dot work does not), so the
# tensor-core configs favour wide output blocks with a thin input block; fp32 "ieee" dots run on the FMA
# units and hold the whole accumulator in registers, so their blocks are smaller. ``tools/kernel_check.py``
# compiles every one of them (``aot_launches``) for sm_80 and sm_90 and fails on any spill.
_INTERP_CFG = dict(BLOCK_B=32, BLOCK_O=32, BLOCK_D=16)
_FP64_CFG = dict(BLOCK_B=32, BLOCK_O=64, BLOCK_D=16, num_warps=4, num_stages=2)  # fp64 (gradcheck) only
_STATS_CFG = dict(BLOCK_B=64, BLOCK_D=16, num_warps=4)


def _wide_o_config(B: int, O: int, precision: str, acc_fp64: bool = False) -> dict:
    """The forward's and dW's block config for a problem of ``B`` rows and ``O`` outputs (GPU)."""
    if acc_fp64:  # the wide configs exceed shared memory with fp64 tiles
        return dict(_FP64_CFG)
    if O <= 128 or B <= 16:  # small problems: all-masked work would dominate a wide block
        return dict(BLOCK_B=16 if B <= 16 else 64, BLOCK_O=64, BLOCK_D=32, num_warps=4, num_stages=2)
    if precision == "ieee_fp32":  # FMA dots: the accumulator and both operand tiles live in registers
        return dict(BLOCK_B=32, BLOCK_O=128, BLOCK_D=16, num_warps=4, num_stages=2)
    # BLOCK_O=512 spilled the bf16 forward (8-12 bytes) with Triton 3.2-3.4; 256 compiles clean on 3.2-3.8
    return dict(BLOCK_B=32, BLOCK_O=256, BLOCK_D=16, num_warps=8, num_stages=3)


def _bn_config(precision: str) -> dict:
    """The dgamma/dbeta kernel's block config (GPU)."""
    if precision == "ieee_fp32":  # 4 warps spilled on sm_90 (3.8)
        return dict(BLOCK_B=32, BLOCK_O=32, BLOCK_D=32, num_warps=8, num_stages=2)
    return dict(BLOCK_B=32, BLOCK_O=64, BLOCK_D=64, num_warps=8, num_stages=3)  # 4 warps spilled on sm_80 (3.6)


# --- kernels -----------------------------------------------------------------------------------------------


# (Float constants are written in the kernels: Triton 3.8's interpreter mishandles tl.constexpr globals in
# arithmetic with tensors.)


@triton.jit
def _word_to_uniform(x):
    """A Philox word -> U[0, 1) exactly as ``tl.rand`` does it (int32 view, fold negatives, scale in fp32)."""
    x = x.to(tl.int32, bitcast=True)
    x = tl.where(x < 0, ~x, x)
    return x.to(tl.float32) * 4.6566127342e-10  # Triton's scale: (2**31 - 1) * s < 1 in fp32


@triton.jit
def _cend_noise(seed, counters, src):
    """Unit-variance noise ``[BB, BD]`` for int64 ``counters``, row source ids ``src`` ``[BB, 1]``.

    Equals ``transform_uniform(tl.rand(seed, c), tl.randn(seed, c), s)``: both come from the same Philox call
    (``tl.rand`` keeps word 0; ``tl.randn`` is Box-Muller on words 0 and 1).
    """
    # tl.randint4x(seed, counters) as Triton >= 3.4 computes it for int64 counters (fastcae.synthesis.philox mirrors
    # it): Philox-4x32 on (lo32, hi32, 0, 0). Spelled out because Triton 3.2/3.3's randint4x runs a 64-bit Philox on
    # int64 counters instead (other numbers, and 64-bit words that _word_to_uniform cannot take).
    lo = counters.to(tl.uint32)
    zero = lo * 0
    w0, w1, _, _ = tl.philox(seed, lo, (counters >> 32).to(tl.uint32), zero, zero)
    u = _word_to_uniform(w0)
    u1 = tl.maximum(1.0e-7, u)
    u2 = _word_to_uniform(w1)
    gauss = tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
    c = u - 0.5
    uniform = 3.4641016151377544 * c  # math.sqrt(3.0) * 2.0 * (u - 1/2), as the reference
    # Laplace inverse CDF: -sign(c) * log1p(-2|c|) / sqrt(2). log1p via log(w) * a / (w - 1) with w = 1 + a
    # (accurate to a few ulp; Triton has no portable log1p). At u = 0, w = 0: -inf, clamped as the reference.
    a = -2.0 * tl.abs(c)
    w = 1.0 + a
    log1p = tl.where(w == 1.0, a, tl.log(w) * (a / (w - 1.0)))
    log1p = tl.maximum(log1p, -30.0)
    sign = tl.where(c > 0, 1.0, tl.where(c < 0, -1.0, 0.0))
    laplace = -sign * log1p / 1.4142135623730951  # scale b = 1/sqrt(2)
    rademacher = tl.where(c >= 0, 1.0, -1.0)
    q = tl.where(src == 0, gauss, uniform)
    q = tl.where(src == 2, laplace, q)
    q = tl.where(src == 3, rademacher, q)
    return q


@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + a @ b``. UPCAST (interpreter + bf16 only): its numpy dot reads bf16 as raw uint16, and fp32
    operands exactly holding the bf16 values give the same sums as a bf16 tensor-core dot."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee", out_dtype=ACC)
    else:
        return tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)


@triton.jit
def _cend_v_tile(
    emb_ptr, mag_ptr, scale, seed, offset, rows, cols, tgt, src, row_mask, col_mask, D, stride_ec, stride_mn,
    MAG_PER_DIM: tl.constexpr,
):
    """Diffused embeddings ``v[rows, cols] = e_off[tgt] + (M[src] * scale) * q`` in fp32; 0 where masked."""
    mask = row_mask[:, None] & col_mask[None, :]
    e = tl.load(emb_ptr + tgt[:, None] * stride_ec + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if MAG_PER_DIM:
        m = tl.load(mag_ptr + src[:, None] * stride_mn + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    else:
        m = tl.load(mag_ptr + src * stride_mn, mask=row_mask, other=0.0).to(tl.float32)[:, None]
    counters = offset + rows[:, None] * D + cols[None, :]  # int64: rows is int64
    q = _cend_noise(seed, counters, src[:, None])
    v = e + (m * scale) * q
    return tl.where(mask, v, 0.0)


@triton.jit
def _cend_linear_stats_kernel(
    mean_ptr,  # [D] out: batch mean of v (ACC dtype)
    var_ptr,  # [D] out: biased batch variance of v (ACC dtype)
    emb_ptr, tgt_ptr, src_ptr, mag_ptr, scale_ptr,  # [C, D], [B], [B], [N] or [N, D], 0-d
    noise_state_ptr, B, D,  # noise_state: int64 [2] = (Philox seed, counter offset), read on the device
    stride_ec, stride_mn,
    MAG_PER_DIM: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per column block: per-column mean and variance over the batch, Chan's merge of row blocks
    (each block is centred in registers, so no E[v^2] - E[v]^2 cancellation for non-zero-mean embeddings)."""
    seed = tl.load(noise_state_ptr)  # from memory, not a launch argument: a captured graph sees new noise
    offset = tl.load(noise_state_ptr + 1)
    pid = tl.program_id(0)
    cols = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    scale = tl.load(scale_ptr).to(tl.float32)
    mean = tl.zeros((BLOCK_D,), dtype=ACC)
    m2 = tl.zeros((BLOCK_D,), dtype=ACC)
    n_prev = tl.zeros((BLOCK_D,), dtype=ACC)  # rows merged so far
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        row_mask = rows < B
        tgt = tl.load(tgt_ptr + rows, mask=row_mask, other=0)
        src = tl.load(src_ptr + rows, mask=row_mask, other=0)
        v = _cend_v_tile(emb_ptr, mag_ptr, scale, seed, offset, rows, cols, tgt, src, row_mask, col_mask, D,
                         stride_ec, stride_mn, MAG_PER_DIM).to(ACC)
        n_blk = tl.sum(row_mask.to(ACC), axis=0)
        blk_mean = tl.sum(v, axis=0) / n_blk
        dv = tl.where(row_mask[:, None], v - blk_mean[None, :], 0.0)
        blk_m2 = tl.sum(dv * dv, axis=0)
        delta = blk_mean - mean
        n_tot = n_prev + n_blk
        mean = mean + delta * (n_blk / n_tot)
        m2 = m2 + blk_m2 + delta * delta * (n_prev * n_blk / n_tot)
        n_prev = n_tot
    tl.store(mean_ptr + cols, mean, mask=col_mask)
    tl.store(var_ptr + cols, m2 / B, mask=col_mask)


@triton.jit
def _cend_y_tile(
    emb_ptr, mag_ptr, scale, seed, offset, rows, cols, tgt, src, row_mask, col_mask, D, stride_ec, stride_mn,
    mean_ptr, var_ptr, gamma_ptr, beta_ptr, eps,
    MAG_PER_DIM: tl.constexpr, ACC: tl.constexpr, AFFINE: tl.constexpr,
):
    """Normalised ``vhat`` (AFFINE=False) or ``y = vhat * gamma + beta`` (AFFINE=True), 0 on masked rows."""
    v = _cend_v_tile(emb_ptr, mag_ptr, scale, seed, offset, rows, cols, tgt, src, row_mask, col_mask, D,
                     stride_ec, stride_mn, MAG_PER_DIM).to(ACC)
    mean = tl.load(mean_ptr + cols, mask=col_mask, other=0.0).to(ACC)
    # other=0.0, not 1.0: masked columns are zeroed below either way, and a non-zero fill here breaks Triton
    # 3.2's layout propagation for fp32 "ieee" dots ('arith.select' shape mismatch).
    var = tl.load(var_ptr + cols, mask=col_mask, other=0.0).to(ACC)
    rstd = 1.0 / tl.sqrt(var + eps)
    out = (v - mean[None, :]) * rstd[None, :]
    if AFFINE:
        gamma = tl.load(gamma_ptr + cols, mask=col_mask, other=0.0).to(ACC)
        beta = tl.load(beta_ptr + cols, mask=col_mask, other=0.0).to(ACC)
        out = out * gamma[None, :] + beta[None, :]
    return tl.where(row_mask[:, None] & col_mask[None, :], out, 0.0)


@triton.jit
def _cend_linear_fwd_kernel(
    out_ptr,  # [B, O] out: h, in the weight dtype
    emb_ptr, tgt_ptr, src_ptr, mag_ptr, scale_ptr,  # CEND inputs: [C, D], [B], [B], [N] or [N, D], 0-d
    mean_ptr, var_ptr, gamma_ptr, beta_ptr,  # [D] each: normalisation statistics and BN affine parameters
    w_ptr, bias_ptr,  # [O, D] Linear weight (any strides), [O] bias
    noise_state_ptr, eps, B, D, O,  # noise_state: int64 [2] = (seed, offset)
    stride_ec, stride_mn, stride_wo, stride_wd, stride_hb,
    MAG_PER_DIM: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (row block, output-column block): h tile = sum over D blocks of y_tile @ W^T_tile + bias,
    y regenerated from the counters. Row blocks vary fastest so programs sharing a W block run together."""
    seed = tl.load(noise_state_ptr)  # from memory, not a launch argument: a captured graph sees new noise
    offset = tl.load(noise_state_ptr + 1)
    pid_b = tl.program_id(0)
    pid_o = tl.program_id(1)
    eps = tl.cast(eps, ACC)  # a Python float under the interpreter; Triton <= 3.6 exports no tl.to_tensor
    rows = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    ocols = pid_o.to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    row_mask = rows < B
    o_mask = ocols < O
    tgt = tl.load(tgt_ptr + rows, mask=row_mask, other=0)
    src = tl.load(src_ptr + rows, mask=row_mask, other=0)
    scale = tl.load(scale_ptr).to(tl.float32)
    acc = tl.zeros((BLOCK_B, BLOCK_O), dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        col_mask = cols < D
        y = _cend_y_tile(emb_ptr, mag_ptr, scale, seed, offset, rows, cols, tgt, src, row_mask, col_mask, D,
                         stride_ec, stride_mn, mean_ptr, var_ptr, gamma_ptr, beta_ptr, eps,
                         MAG_PER_DIM, ACC, True)
        w_t = tl.load(w_ptr + ocols[None, :] * stride_wo + cols[:, None] * stride_wd,
                      mask=o_mask[None, :] & col_mask[:, None], other=0.0)  # [BLOCK_D, BLOCK_O] = W^T tile
        acc = _dot(y.to(w_t.dtype), w_t, acc, DOT_PRECISION, ACC, UPCAST_DOT)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + ocols, mask=o_mask, other=0.0).to(ACC)[None, :]
    tl.store(out_ptr + rows[:, None] * stride_hb + ocols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=row_mask[:, None] & o_mask[None, :])


@triton.jit
def _cend_linear_bwd_bn_kernel(
    dgamma_part_ptr,  # [O_SPLITS * cdiv(B, BLOCK_B), D] out: partial sums of (dh W) * vhat (ACC dtype)
    dbeta_part_ptr,  # [O_SPLITS * cdiv(B, BLOCK_B), D] out: partial sums of (dh W)
    dh_ptr,  # [B, O] upstream gradient (weight dtype, any strides)
    emb_ptr, tgt_ptr, src_ptr, mag_ptr, scale_ptr, mean_ptr, var_ptr, w_ptr,
    noise_state_ptr, eps, B, D, O, o_per_split,  # o_per_split: output columns per split, a multiple of BLOCK_O
    stride_ec, stride_mn, stride_wo, stride_wd, stride_gb, stride_go,
    MAG_PER_DIM: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (row block, column block, O split): dy = dh @ W over the split's O blocks, then the BN affine
    gradients' partial sums with vhat regenerated once. The O split (linear in dy) gives a small batch enough
    programs; partials are summed in a fixed order afterwards (deterministic)."""
    seed = tl.load(noise_state_ptr)  # from memory, not a launch argument: a captured graph sees new noise
    offset = tl.load(noise_state_ptr + 1)
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_s = tl.program_id(2)
    eps = tl.cast(eps, ACC)  # a Python float under the interpreter; Triton <= 3.6 exports no tl.to_tensor
    rows = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    row_mask = rows < B
    col_mask = cols < D
    acc = tl.zeros((BLOCK_B, BLOCK_D), dtype=ACC)
    o_begin = pid_s * o_per_split
    o_end = tl.minimum(o_begin + o_per_split, O)
    for o0 in range(o_begin, o_end, BLOCK_O):
        ocols = o0 + tl.arange(0, BLOCK_O)
        o_mask = ocols < o_end
        dh = tl.load(dh_ptr + rows[:, None] * stride_gb + ocols[None, :] * stride_go,
                     mask=row_mask[:, None] & o_mask[None, :], other=0.0)
        w = tl.load(w_ptr + ocols[:, None] * stride_wo + cols[None, :] * stride_wd,
                    mask=o_mask[:, None] & col_mask[None, :], other=0.0)
        acc = _dot(dh.to(w.dtype), w, acc, DOT_PRECISION, ACC, UPCAST_DOT)
    tgt = tl.load(tgt_ptr + rows, mask=row_mask, other=0)
    src = tl.load(src_ptr + rows, mask=row_mask, other=0)
    scale = tl.load(scale_ptr).to(tl.float32)
    vhat = _cend_y_tile(emb_ptr, mag_ptr, scale, seed, offset, rows, cols, tgt, src, row_mask, col_mask, D,
                        stride_ec, stride_mn, mean_ptr, var_ptr, mean_ptr, mean_ptr, eps,
                        MAG_PER_DIM, ACC, False)
    part = (pid_s * tl.num_programs(0) + pid_b).to(tl.int64) * D + cols
    tl.store(dgamma_part_ptr + part, tl.sum(acc * vhat, axis=0), mask=col_mask)
    tl.store(dbeta_part_ptr + part, tl.sum(acc, axis=0), mask=col_mask)


@triton.jit
def _cend_linear_bwd_w_kernel(
    dw_ptr,  # [O, D] out: weight gradient (weight dtype, contiguous)
    dbias_ptr,  # [O] out: bias gradient (written by the column-block-0 programs)
    dh_ptr,  # [B, O] upstream gradient (weight dtype, any strides)
    emb_ptr, tgt_ptr, src_ptr, mag_ptr, scale_ptr, mean_ptr, var_ptr, gamma_ptr, beta_ptr,
    noise_state_ptr, eps, B, D, O,
    stride_ec, stride_mn, stride_gb, stride_go,
    MAG_PER_DIM: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (output-column block, column block): dW^T tile = sum over row blocks of y^T_tile @ dh_tile,
    y regenerated from the counters; dbias = column sums of dh, accumulated alongside (column block 0)."""
    seed = tl.load(noise_state_ptr)  # from memory, not a launch argument: a captured graph sees new noise
    offset = tl.load(noise_state_ptr + 1)
    pid_o = tl.program_id(0)
    pid_d = tl.program_id(1)
    eps = tl.cast(eps, ACC)  # a Python float under the interpreter; Triton <= 3.6 exports no tl.to_tensor
    ocols = pid_o.to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    o_mask = ocols < O
    col_mask = cols < D
    scale = tl.load(scale_ptr).to(tl.float32)
    acc = tl.zeros((BLOCK_D, BLOCK_O), dtype=ACC)
    dbias = tl.zeros((BLOCK_O,), dtype=ACC)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        row_mask = rows < B
        tgt = tl.load(tgt_ptr + rows, mask=row_mask, other=0)
        src = tl.load(src_ptr + rows, mask=row_mask, other=0)
        y = _cend_y_tile(emb_ptr, mag_ptr, scale, seed, offset, rows, cols, tgt, src, row_mask, col_mask, D,
                         stride_ec, stride_mn, mean_ptr, var_ptr, gamma_ptr, beta_ptr, eps,
                         MAG_PER_DIM, ACC, True)
        dh = tl.load(dh_ptr + rows[:, None] * stride_gb + ocols[None, :] * stride_go,
                     mask=row_mask[:, None] & o_mask[None, :], other=0.0)  # [BLOCK_B, BLOCK_O]
        acc = _dot(tl.trans(y.to(dh.dtype)), dh, acc, DOT_PRECISION, ACC, UPCAST_DOT)
        dbias += tl.sum(dh.to(ACC), axis=0)
    tl.store(dw_ptr + ocols[None, :] * D + cols[:, None], acc.to(dw_ptr.dtype.element_ty),
             mask=o_mask[None, :] & col_mask[:, None])
    tl.store(dbias_ptr + ocols, dbias.to(dbias_ptr.dtype.element_ty), mask=o_mask & (pid_d == 0))


# --- launchers ---------------------------------------------------------------------------------------------


def _dot_precision(weight: Tensor) -> str:
    # fp32 weights follow torch's own matmul setting (TF32 only when the user allowed it), like F.linear.
    if weight.dtype == torch.float32 and weight.is_cuda and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def _upcast_dot(dtype: torch.dtype) -> bool:
    return INTERPRET and dtype == torch.bfloat16


def _config_family(dtype: torch.dtype, precision: str) -> str:
    """Which config family a dot of ``dtype`` weights at ``precision`` takes: "ieee_fp32" (FMA) or
    "tensor_core" (tf32, bf16, fp16)."""
    return "ieee_fp32" if dtype == torch.float32 and precision == "ieee" else "tensor_core"


def _config_class(weight: Tensor) -> str:
    """The config family of ``weight``'s dot (``_config_family``)."""
    return _config_family(weight.dtype, _dot_precision(weight))


def _launch_wide_o(kernel, grid, B: int, O: int, weight: Tensor, *args, **meta):
    """Launch a wide-O kernel at its fixed config (the interpreter's, or ``_wide_o_config``'s on a GPU).
    ``grid`` maps the block sizes to the launch grid."""
    if INTERPRET:
        cfg = dict(_INTERP_CFG)
    else:
        cfg = _wide_o_config(B, O, _config_class(weight), meta["ACC"] == tl.float64)
    kernel[grid(cfg)](*args, **meta, **cfg)


def _o_splits(programs: int, n_blocks_o: int, n_sm: int) -> int:
    """How many O splits give the dgamma/dbeta kernel about two waves of programs on ``n_sm`` SMs."""
    if INTERPRET:
        target = 2 * programs  # exercise the split path in the tests
    else:
        target = 2 * n_sm
    return max(1, min(n_blocks_o, triton.cdiv(target, programs)))


def _bn_grid(B: int, D: int, O: int, cfg: dict, n_sm: int) -> tuple[int, int, int, int]:
    """``(n_b, n_d, n_split, o_per_split)``: the dgamma/dbeta kernel's grid ``(n_b, n_d, n_split)`` at block
    config ``cfg`` on ``n_sm`` SMs, each O split ``o_per_split`` columns wide."""
    n_b, n_d = triton.cdiv(B, cfg["BLOCK_B"]), triton.cdiv(D, cfg["BLOCK_D"])
    n_blocks_o = triton.cdiv(O, cfg["BLOCK_O"])
    blocks_per_split = triton.cdiv(n_blocks_o, _o_splits(n_b * n_d, n_blocks_o, n_sm))
    return n_b, n_d, triton.cdiv(n_blocks_o, blocks_per_split), blocks_per_split * cfg["BLOCK_O"]


def _check_inputs(embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, weight, bias):
    if embeddings.dim() != 2:
        raise ValueError(f"cend_linear: embeddings must be a float [num_classes, dim] tensor, got "
                         f"{tuple(embeddings.shape)}")
    check_dtype("cend_linear", "embeddings", embeddings, lambda dtype: dtype.is_floating_point, "floating point")
    d = embeddings.shape[1]
    if targets.dim() != 1 or source_ids.shape != targets.shape:
        raise ValueError(f"cend_linear: targets and source_ids must be [B] and equal, got {tuple(targets.shape)} "
                         f"and {tuple(source_ids.shape)}")
    check_dtype("cend_linear", "targets", targets, (torch.int64,))
    check_dtype("cend_linear", "source_ids", source_ids, (torch.int64,))
    if magnitudes.dim() not in (1, 2) or (magnitudes.dim() == 2 and magnitudes.shape[1] != d):
        raise ValueError(f"cend_linear: magnitudes must be [N] or [N, {d}], got {tuple(magnitudes.shape)}")
    if scale.numel() != 1:
        raise ValueError(f"cend_linear: scale must hold one value, got shape {tuple(scale.shape)}")
    if weight.dim() != 2 or weight.shape[1] != d:
        raise ValueError(f"cend_linear: weight must be [out, {d}], got {tuple(weight.shape)}")
    check_dtype("cend_linear", "weight", weight, FLOAT_DTYPES)
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"cend_linear: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if t.shape != (d,):
            raise ValueError(f"cend_linear: {name} must be [{d}], got {tuple(t.shape)}")
    if noise_state.shape != (2,):
        raise ValueError(f"cend_linear: noise_state must be an int64 [2] tensor (seed, offset), got "
                         f"{tuple(noise_state.shape)}")
    check_dtype("cend_linear", "noise_state", noise_state, (torch.int64,), "an int64 [2] tensor (seed, offset)")
    tensors = [embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, weight]
    devices = {t.device for t in tensors + ([bias] if bias is not None else [])}
    if len(devices) != 1:
        raise ValueError(f"cend_linear: all tensors must be on one device, got {sorted(map(str, devices))}")
    check_device("cend_linear", "weight", weight, "fastcae.synthesis.cend.cend_linear_reference")


def cend_linear_forward(
    embeddings: Tensor, targets: Tensor, source_ids: Tensor, magnitudes: Tensor, scale: Tensor,
    noise_state: Tensor, bn_weight: Tensor, bn_bias: Tensor, running_mean: Optional[Tensor],
    running_var: Optional[Tensor], use_batch_stats: bool, eps: float, weight: Tensor, bias: Optional[Tensor],
    out: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the forward. Returns ``(h [B, O] in weight.dtype, mean [D], var [D])``: the statistics used to
    normalise (the batch's, biased variance, when ``use_batch_stats``; else copies of the running ones).
    ``out`` (tests) receives ``h`` instead of a fresh tensor."""
    _check_inputs(embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, weight, bias)
    B, D, O = targets.shape[0], embeddings.shape[1], weight.shape[0]
    dev = weight.device
    stats_dtype = acc_dtype(weight)
    emb, noise_state, mag, tgt, src, bn_weight, bn_bias = (
        t.contiguous() for t in (embeddings, noise_state, magnitudes, targets, source_ids, bn_weight, bn_bias)
    )  # the kernels read rows of emb / mag and the [D] vectors with stride 1
    acc = tl_dtype(acc_dtype(weight))
    mag_per_dim = mag.dim() == 2
    if use_batch_stats:
        if B < 2:
            raise ValueError(f"cend_linear: expected more than 1 value per channel when training, got batch {B}")
        mean = torch.empty(D, device=dev, dtype=stats_dtype)
        var = torch.empty(D, device=dev, dtype=stats_dtype)
        cfg = dict(BLOCK_B=32, BLOCK_D=16) if INTERPRET else dict(_STATS_CFG)
        grid = (triton.cdiv(D, cfg["BLOCK_D"]),)
        _cend_linear_stats_kernel[grid](
            mean, var, emb, tgt, src, mag, scale, noise_state, B, D, emb.stride(0), mag.stride(0),
            MAG_PER_DIM=mag_per_dim, ACC=acc, **cfg,
        )
    else:
        if running_mean is None or running_var is None:
            raise ValueError("cend_linear: running_mean and running_var must be defined in evaluation mode")
        mean = running_mean.detach().to(stats_dtype, copy=True)
        var = running_var.detach().to(stats_dtype, copy=True)
    if out is None:
        out = torch.empty((B, O), device=dev, dtype=weight.dtype)
    elif out.shape != (B, O) or out.dtype != weight.dtype or out.stride(1) != 1:
        raise ValueError(f"cend_linear: out must be a row-major [{B}, {O}] {weight.dtype} tensor")
    _launch_wide_o(
        _cend_linear_fwd_kernel,
        lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(O, meta["BLOCK_O"])), B, O, weight,
        out, emb, tgt, src, mag, scale, mean, var, bn_weight, bn_bias, weight,
        bias if bias is not None else weight,  # never read without HAS_BIAS
        noise_state, float(eps), B, D, O,
        emb.stride(0), mag.stride(0), weight.stride(0), weight.stride(1), out.stride(0),
        MAG_PER_DIM=mag_per_dim, HAS_BIAS=bias is not None, ACC=acc, DOT_PRECISION=_dot_precision(weight),
        UPCAST_DOT=_upcast_dot(weight.dtype),
    )
    return out, mean, var


def cend_linear_backward(
    grad_out: Tensor, embeddings: Tensor, targets: Tensor, source_ids: Tensor, magnitudes: Tensor, scale: Tensor,
    noise_state: Tensor, bn_weight: Tensor, bn_bias: Tensor, mean: Tensor, var: Tensor, eps: float,
    weight: Tensor, bias_dtype: Optional[torch.dtype] = None, need_bn: bool = True, need_weight: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Launch the backward: ``(d_bn_weight, d_bn_bias, d_weight, d_bias)`` for upstream ``grad_out [B, O]``,
    with ``mean``/``var`` the statistics the forward normalised with. Gradients not asked for are zeros."""
    B, D, O = targets.shape[0], embeddings.shape[1], weight.shape[0]
    if grad_out.shape != (B, O):
        raise ValueError(f"cend_linear: grad_out must be [{B}, {O}], got {tuple(grad_out.shape)}")
    dev = weight.device
    emb, noise_state, mag, tgt, src, bn_weight, bn_bias = (
        t.contiguous() for t in (embeddings, noise_state, magnitudes, targets, source_ids, bn_weight, bn_bias)
    )  # the kernels read rows of emb / mag and the [D] vectors with stride 1
    acc = tl_dtype(acc_dtype(weight))
    mag_per_dim = mag.dim() == 2
    precision = _dot_precision(weight)
    if grad_out.dtype != weight.dtype:
        grad_out = grad_out.to(weight.dtype)
    bias_dtype = weight.dtype if bias_dtype is None else bias_dtype
    if need_bn:
        cfg = dict(_INTERP_CFG) if INTERPRET else _bn_config(_config_class(weight))
        n_b, n_d, n_split, o_per_split = _bn_grid(B, D, O, cfg, sm_count(dev))
        dgamma_part = torch.empty((n_split * n_b, D), device=dev, dtype=mean.dtype)
        dbeta_part = torch.empty((n_split * n_b, D), device=dev, dtype=mean.dtype)
        _cend_linear_bwd_bn_kernel[(n_b, n_d, n_split)](
            dgamma_part, dbeta_part, grad_out, emb, tgt, src, mag, scale, mean, var, weight,
            noise_state, float(eps), B, D, O, o_per_split,
            emb.stride(0), mag.stride(0), weight.stride(0), weight.stride(1), grad_out.stride(0),
            grad_out.stride(1),
            MAG_PER_DIM=mag_per_dim, ACC=acc, DOT_PRECISION=precision, UPCAST_DOT=_upcast_dot(weight.dtype), **cfg,
        )
        d_bn_weight = dgamma_part.sum(0).to(bn_weight.dtype)
        d_bn_bias = dbeta_part.sum(0).to(bn_bias.dtype)
    else:
        d_bn_weight = torch.zeros_like(bn_weight)
        d_bn_bias = torch.zeros_like(bn_bias)
    d_weight = torch.empty((O, D), device=dev, dtype=weight.dtype)
    d_bias = torch.empty(O, device=dev, dtype=bias_dtype)
    if need_weight:
        _launch_wide_o(
            _cend_linear_bwd_w_kernel,
            lambda meta: (triton.cdiv(O, meta["BLOCK_O"]), triton.cdiv(D, meta["BLOCK_D"])), B, O, weight,
            d_weight, d_bias, grad_out, emb, tgt, src, mag, scale, mean, var, bn_weight, bn_bias,
            noise_state, float(eps), B, D, O,
            emb.stride(0), mag.stride(0), grad_out.stride(0), grad_out.stride(1),
            MAG_PER_DIM=mag_per_dim, ACC=acc, DOT_PRECISION=precision, UPCAST_DOT=_upcast_dot(weight.dtype),
        )
    else:
        d_weight.zero_()
        d_bias.zero_()
    return d_bn_weight, d_bn_bias, d_weight, d_bias


# --- wiring: custom ops (torch.compile traces them as opaque nodes) ------------------------------------------


@torch.library.custom_op("fastcae::cend_linear", mutates_args=())
def _cend_linear_op(
    embeddings: Tensor, targets: Tensor, source_ids: Tensor, magnitudes: Tensor, scale: Tensor,
    noise_state: Tensor, bn_weight: Tensor, bn_bias: Tensor, running_mean: Optional[Tensor],
    running_var: Optional[Tensor], use_batch_stats: bool, eps: float, weight: Tensor, bias: Optional[Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    return cend_linear_forward(embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight,
                               bn_bias, running_mean, running_var, use_batch_stats, eps, weight, bias)


@_cend_linear_op.register_fake
def _(embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, running_mean,
      running_var, use_batch_stats, eps, weight, bias):
    B, D, O = targets.shape[0], embeddings.shape[1], weight.shape[0]
    stats_dtype = acc_dtype(weight)
    return (weight.new_empty((B, O)), weight.new_empty((D,), dtype=stats_dtype),
            weight.new_empty((D,), dtype=stats_dtype))


@torch.library.custom_op("fastcae::cend_linear_backward", mutates_args=())
def _cend_linear_backward_op(
    grad_out: Tensor, embeddings: Tensor, targets: Tensor, source_ids: Tensor, magnitudes: Tensor,
    scale: Tensor, noise_state: Tensor, bn_weight: Tensor, bn_bias: Tensor, mean: Tensor, var: Tensor,
    eps: float, weight: Tensor, bias_dtype: torch.dtype, need_bn: bool, need_weight: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return cend_linear_backward(grad_out, embeddings, targets, source_ids, magnitudes, scale, noise_state,
                                bn_weight, bn_bias, mean, var, eps, weight, bias_dtype, need_bn, need_weight)


@_cend_linear_backward_op.register_fake
def _(grad_out, embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, mean, var,
      eps, weight, bias_dtype, need_bn, need_weight):
    # row-major like the real op (empty_like would keep a transposed weight's strides)
    return (bn_weight.new_empty(bn_weight.shape), bn_bias.new_empty(bn_bias.shape), weight.new_empty(weight.shape),
            weight.new_empty((weight.shape[0],), dtype=bias_dtype))


def _setup_context(ctx, inputs, output):
    (embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, _running_mean,
     _running_var, _use_batch_stats, eps, weight, bias) = inputs
    _, mean, var = output
    ctx.mark_non_differentiable(mean, var)  # statistics of the constant v: no gradient flows through them
    ctx.save_for_backward(embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias,
                          weight, mean, var)
    ctx.eps = eps
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else weight.dtype


def _backward(ctx, grad_out, _grad_mean, _grad_var):
    (embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias, weight, mean,
     var) = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_bn = bool(need[6] or need[7])
    need_weight = bool(need[12] or (ctx.has_bias and need[13]))
    d_gamma, d_beta, d_weight, d_bias = torch.ops.fastcae.cend_linear_backward(
        grad_out, embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias,
        mean, var, ctx.eps, weight, ctx.bias_dtype, need_bn, need_weight,
    )
    return (None, None, None, None, None, None, d_gamma if need[6] else None, d_beta if need[7] else None,
            None, None, None, None, d_weight if need[12] else None,
            d_bias if (ctx.has_bias and need[13]) else None)


_cend_linear_op.register_autograd(_backward, setup_context=_setup_context)


# --- public function -----------------------------------------------------------------------------------------


def cend_linear(
    embeddings: Tensor,
    targets: Tensor,
    source_ids: Tensor,
    magnitudes: Tensor,
    scale: Tensor,
    noise_state: Tensor | tuple[int, int],
    bn_weight: Optional[Tensor],
    bn_bias: Optional[Tensor],
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    *,
    training: bool,
    momentum: float,
    eps: float,
    weight: Tensor,
    bias: Optional[Tensor],
) -> Tensor:
    """``Linear(BN1d(e_off[y] + M[s] * scale * q))`` -> ``[B, O]`` with ``q`` drawn in-kernel from (seed, offset).

    ``noise_state``: ``(seed, offset)`` as Python ints, or an int64 ``[2]`` tensor holding them on the device.
    The kernels read the tensor from memory, so a compiled or CUDA-graph-captured step sees new noise when the
    caller updates it in place (``CENDInput.new_batch``); Python ints would be baked into the graph.

    Same semantics as ``cend_linear_reference(..., noise=counter_noise(seed, offset, source_ids, D), ...)``:
    training uses batch statistics and updates ``running_mean``/``running_var`` in place (momentum, unbiased
    variance), like F.batch_norm; under autocast the Linear runs in the autocast dtype, like F.linear. The
    output has the (possibly autocast) weight's dtype. Gradients: bn_weight, bn_bias, weight, bias.
    """
    D = embeddings.shape[1]
    if not isinstance(noise_state, Tensor):
        seed, offset = noise_state
        noise_state = torch.tensor([int(seed), int(offset)], dtype=torch.int64, device=embeddings.device)
    if torch.is_grad_enabled() and (embeddings.requires_grad or magnitudes.requires_grad or scale.requires_grad):
        raise NotImplementedError("cend_linear: embeddings, magnitudes and scale are buffers (no gradient); "
                                  "use fastcae.synthesis.cend.cend_linear_reference to differentiate through them")
    if bn_weight is None:  # BatchNorm1d(affine=False)
        bn_weight = torch.ones(D, device=embeddings.device, dtype=torch.float32)
    if bn_bias is None:
        bn_bias = torch.zeros(D, device=embeddings.device, dtype=torch.float32)
    if torch.is_autocast_enabled(weight.device.type):
        low = torch.get_autocast_dtype(weight.device.type)
        weight = weight.to(low)
        bias = bias.to(low) if bias is not None else None
    use_batch_stats = bool(training)
    # training never reads the running statistics in the op (the wrapper updates them afterwards)
    h, mean, var = torch.ops.fastcae.cend_linear(
        embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias,
        None if use_batch_stats else running_mean, None if use_batch_stats else running_var,
        use_batch_stats, float(eps), weight, bias,
    )
    if use_batch_stats and running_mean is not None and running_var is not None:
        n = targets.shape[0]
        with torch.no_grad():
            running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1.0 - momentum).add_((var * (n / (n - 1))).to(running_var.dtype), alpha=momentum)
    return h


# --- ahead-of-time launches ----------------------------------------------------------------------------------

_AOT_TEXT_DIMS = (512, 384)  # the embeddings' width: CLIP ViT-B/32, all-MiniLM-L6-v2
_AOT_OUT = 2 * 64 * 8 * 8  # the generator's first Linear at 32x32, ngf = 64: 2 ngf * (H/4) * (W/4)
# (weight dtype, dot precision): fp32 weights take "ieee" by default, "tf32" when the user allows TF32 matmuls
# (_dot_precision)
_AOT_WEIGHTS = ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.bfloat16, "ieee"))


def aot_launches(n_sm: int) -> list[Launch]:
    """The launches of ``cend_linear_forward`` and ``cend_linear_backward`` on a GPU of ``n_sm`` SMs, at the
    generator step's batch (``shared.AOT_*``) for each embedding width, class count and weight dtype and
    precision, with per-source magnitudes [N] and a bias: for ``tools/kernel_check.py``, which compiles them
    ahead of time."""
    launches = []
    B, O = AOT_GEN_BATCH, _AOT_OUT
    f32, i64 = Ptr("fp32"), Ptr("i64")
    for D in _AOT_TEXT_DIMS:
        for n_cls in AOT_CLASSES:
            shape = f"B={B} D={D} O={O} classes={n_cls}"
            cend = dict(emb_ptr=f32, tgt_ptr=i64, src_ptr=i64, mag_ptr=f32, scale_ptr=f32, noise_state_ptr=i64,
                        B=B, D=D, stride_ec=D, stride_mn=1, MAG_PER_DIM=False)  # magnitudes [N]: stride 1
            stats = dict(_STATS_CFG)
            nw = stats.pop("num_warps")
            launches.append(Launch(_cend_linear_stats_kernel, dict(cend, mean_ptr=f32, var_ptr=f32, ACC=tl.float32,
                                                                    **stats),
                                   nw, None, " ".join(f"{k}={v}" for k, v in stats.items()) + f" w={nw}", shape))
            for dtype, precision in _AOT_WEIGHTS:
                wdt, w = dtype_name(dtype), Ptr(dtype_name(dtype))
                norm = dict(mean_ptr=f32, var_ptr=f32, gamma_ptr=f32, beta_ptr=f32, eps=1e-5, O=O, ACC=tl.float32,
                            DOT_PRECISION=precision, UPCAST_DOT=_upcast_dot(dtype))
                fwd = dict(cend, **norm, out_ptr=w, w_ptr=w, bias_ptr=w, stride_wo=D, stride_wd=1, stride_hb=O,
                           HAS_BIAS=True)
                bwd_w = dict(cend, **norm, dw_ptr=w, dbias_ptr=w, dh_ptr=w, stride_gb=O, stride_go=1)
                family = _config_family(dtype, precision)
                for kernel, args in ((_cend_linear_fwd_kernel, fwd), (_cend_linear_bwd_w_kernel, bwd_w)):
                    c = _wide_o_config(B, O, family)
                    nw, ns = c.pop("num_warps"), c.pop("num_stages")
                    launches.append(Launch(kernel, dict(args, **c), nw, ns,
                                           f"{wdt} {precision} " + " ".join(f"{k}={v}" for k, v in c.items())
                                           + f" w={nw} s={ns}", shape))
                cfg = _bn_config(family)
                nw, ns = cfg.pop("num_warps"), cfg.pop("num_stages")
                o_per_split = _bn_grid(B, D, O, cfg, n_sm)[3]
                launches.append(Launch(_cend_linear_bwd_bn_kernel,
                                       dict(cend, dgamma_part_ptr=f32, dbeta_part_ptr=f32, dh_ptr=w, mean_ptr=f32,
                                            var_ptr=f32, w_ptr=w, eps=1e-5, O=O, o_per_split=o_per_split,
                                            stride_wo=D, stride_wd=1, stride_gb=O, stride_go=1, ACC=tl.float32,
                                            DOT_PRECISION=precision, UPCAST_DOT=_upcast_dot(dtype), **cfg),
                                       nw, ns, f"{wdt} {precision} " + " ".join(f"{k}={v}" for k, v in cfg.items())
                                       + f" w={nw} s={ns}", shape))
    return launches
