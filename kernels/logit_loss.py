"""Fused logit loss of a DFKD step: KD at temperature T, the masked adversarial KL and the teacher's CE.

    loss = kd_w * T^2 * mean_i KL(p_t^T || p_s^T)                      (student step: Hinton KD)
         - adv_w * mean_i [argmax t_i == argmax s_i] * KL(p_t || p_s)   (generator step: adversarial)
         + ce_w * CE(t, targets)                                        (generator step: teacher CE)

Reference: ``fastcae.losses.logit_loss`` (one definition of the math; ``logit_loss`` here has the same
signature, value and gradients; custom ops ``fastcae::logit_loss`` and ``fastcae::logit_loss_backward``).
Shapes: ``teacher_logits``, ``student_logits`` ``[B, C]`` (fp32, bf16 or fp16; fp64 is computed in fp64, for
gradcheck), ``targets`` ``[B]`` integer (``-100`` is ignored, as in ``F.cross_entropy``; a target outside
``[0, C)`` makes the loss nan where the reference raises).
Returns a 0-d fp32 loss (fp64 when an input is fp64).

Bytes-moved floor (elt = bytes per logit): the forward must read both logit matrices once,
``2 * B * C * elt + 8 * B``; a backward must read them again (or a saved gradient) and write each gradient
asked for, ``2 * B * C * elt + n_grads * B * C * elt``. This implementation hits both floors: the forward
keeps only online per-row statistics (four log-sum-exps, two KL sums, two argmaxes, t[y]), 32 bytes a row,
and the backward recomputes the softmaxes from them in one pass. It writes no gradient buffer in the
forward, so a call without grad costs only the forward, and the teacher gradient of the student step
(teacher logits without grad) is neither computed nor allocated. (One pass writing the gradients in the
forward, ``(2 + n_grads) * B * C * elt``, would need ``grad_output`` before the backward runs.)

Kernels: ``_logit_loss_fwd_kernel`` (a block of rows per program, online log-sum-exp over column blocks),
``_logit_loss_reduce_kernel`` (one program: ordered, deterministic batch sums -> the scalar loss and the number
of non-ignored targets) and ``_logit_loss_bwd_kernel`` (same tiling, writes the gradients scaled by
``grad_output``). Terms whose weight is 0.0 are compiled out (constexpr flags); with finite logits they
contribute exactly 0 in the reference too.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .shared import (
    AOT_BATCHES,
    AOT_CLASSES,
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

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: such rows drop out of the CE mean
N_STATS = 8  # rows of the per-row statistics buffer, see _logit_loss_fwd_kernel
# Column block: one block covers C <= 2048 on a GPU (a single pass, every row in registers). The interpreter
# uses a smaller block so the tests (C = 1000, 1271) exercise the multi-block online log-sum-exp.
_MAX_BLOCK_C = 256 if INTERPRET else 2048
# Elements of one [ROWS, BLOCK_C] tile when several rows share a program (short rows). On sm_90 a [8, 128]
# tile of the all-terms forward already takes ~255 registers a thread at 4 warps (the per-row running
# statistics are replicated across a row's threads), so multi-row tiles stay at 1024 elements. The
# interpreter takes bigger tiles: fewer programs, less Python overhead.
_TILE_ELEMS = 4096 if INTERPRET else 1024


# --- kernels ---------------------------------------------------------------------------------------------


@triton.jit
def _logit_loss_fwd_kernel(
    t_ptr,  # [B, C] teacher logits, unit column stride
    s_ptr,  # [B, C] student logits, unit column stride
    y_ptr,  # [B] integer targets (IGNORE_INDEX rows are skipped by the CE term)
    stats_ptr,  # [N_STATS, B] out, ACC dtype: lse(t/T), lse(s/T), KL_T, lse(t), lse(s), KL_1, agree, CE row
    B,  # rows
    C,  # classes
    stride_t,  # row stride of t (elements)
    stride_s,  # row stride of s (elements)
    temperature,  # KD temperature T (float)
    HAS_KD: tl.constexpr,  # kd_weight != 0
    HAS_ADV: tl.constexpr,  # adv_weight != 0
    HAS_CE: tl.constexpr,  # ce_weight != 0
    IGNORE: tl.constexpr,  # ignore index of the CE term
    ROWS: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # columns per block (power of two)
    ACC: tl.constexpr,  # accumulation dtype (fp32, or fp64 for fp64 inputs)
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_ok = rows < B
    # Padded rows of the last program recompute row B-1 (finite values, no -inf - -inf), their stores are masked.
    rows_c = tl.minimum(rows, B - 1)
    t_row = t_ptr + rows_c[:, None] * stride_t
    s_row = s_ptr + rows_c[:, None] * stride_s
    inv_t = div_rn(tl.cast(1.0, ACC), tl.cast(temperature, ACC))
    y = tl.load(y_ptr + rows_c).to(tl.int32)

    neg_inf = tl.full([ROWS], float("-inf"), ACC)
    zero = tl.zeros([ROWS], ACC)
    # KD at T: running max / sum of exp for a = t/T and b = s/T, and sum exp(a - m_a) * (a - b).
    m_a, z_a, w_a, m_b, z_b = neg_inf, zero, zero, neg_inf, zero
    # T = 1: the same for t and s (shared by the adversarial KL and the CE's log-sum-exp).
    m_t, z_t, w_t, m_s, z_s = neg_inf, zero, zero, neg_inf, zero
    # First-index argmax of t and s (torch.argmax's tie rule) and the target logit t[y].
    am_t, am_s = tl.zeros([ROWS], tl.int32), tl.zeros([ROWS], tl.int32)
    t_y = zero

    cols0 = tl.arange(0, BLOCK_C)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + cols0
        mask = (rows_c[:, None] >= 0) & (cols[None, :] < C)
        t = tl.load(t_row + cols[None, :], mask=mask, other=0.0).to(ACC)
        s = tl.load(s_row + cols[None, :], mask=mask, other=0.0).to(ACC)
        if HAS_KD:
            a = t * inv_t
            b = s * inv_t
            a_m = tl.where(mask, a, float("-inf"))
            b_m = tl.where(mask, b, float("-inf"))
            m_new = tl.maximum(m_a, tl.max(a_m, axis=1))
            alpha = tl.exp(m_a - m_new)
            e = tl.exp(a_m - m_new[:, None])  # 0 on masked columns, where a - b = 0 - 0 is finite
            z_a = z_a * alpha + tl.sum(e, axis=1)
            w_a = w_a * alpha + tl.sum(e * (a - b), axis=1)
            m_a = m_new
            m_new = tl.maximum(m_b, tl.max(b_m, axis=1))
            z_b = z_b * tl.exp(m_b - m_new) + tl.sum(tl.exp(b_m - m_new[:, None]), axis=1)
            m_b = m_new
        if HAS_ADV or HAS_CE:
            t_m = tl.where(mask, t, float("-inf"))
            blk_max = tl.max(t_m, axis=1)
            m_new = tl.maximum(m_t, blk_max)
            alpha = tl.exp(m_t - m_new)
            e = tl.exp(t_m - m_new[:, None])
            z_t = z_t * alpha + tl.sum(e, axis=1)
            if HAS_ADV:
                w_t = w_t * alpha + tl.sum(e * (t - s), axis=1)
                s_m = tl.where(mask, s, float("-inf"))
                blk_max_s = tl.max(s_m, axis=1)
                m_new_s = tl.maximum(m_s, blk_max_s)
                z_s = z_s * tl.exp(m_s - m_new_s) + tl.sum(tl.exp(s_m - m_new_s[:, None]), axis=1)
                # First index of the block max; a later block wins only with a strictly larger max.
                idx_t = tl.min(tl.where(t_m == blk_max[:, None], cols[None, :], 2147483647), axis=1)
                idx_s = tl.min(tl.where(s_m == blk_max_s[:, None], cols[None, :], 2147483647), axis=1)
                am_t = tl.where(blk_max > m_t, idx_t, am_t)
                am_s = tl.where(blk_max_s > m_s, idx_s, am_s)
                m_s = m_new_s
            m_t = m_new
            if HAS_CE:
                t_y += tl.sum(tl.where(cols[None, :] == y[:, None], t, 0.0), axis=1)

    stats = stats_ptr + rows
    kl_T = zero
    if HAS_KD:
        lse_a = m_a + tl.log(z_a)
        lse_b = m_b + tl.log(z_b)
        # KL = sum p (a - b) - (lse_a - lse_b), with sum p (a - b) = w_a / z_a. The lse difference is taken as
        # (m_a - m_b) + log(z_a / z_b): subtracting the two rounded lse (~log C each) would cost ~ulp(log C),
        # which T^2 = 400 amplifies (KL_T itself is only ~1e-3 at T = 20).
        kl_T = div_rn(w_a, z_a) - (m_a - m_b) - tl.log(div_rn(z_a, z_b))
        tl.store(stats + 0 * B, lse_a, mask=row_ok)
        tl.store(stats + 1 * B, lse_b, mask=row_ok)
    tl.store(stats + 2 * B, kl_T, mask=row_ok)
    lse_t = zero
    if HAS_ADV or HAS_CE:
        lse_t = m_t + tl.log(z_t)
        tl.store(stats + 3 * B, lse_t, mask=row_ok)
    kl_1 = zero
    agree = zero
    if HAS_ADV:
        lse_s = m_s + tl.log(z_s)
        kl_1 = div_rn(w_t, z_t) - (m_t - m_s) - tl.log(div_rn(z_t, z_s))
        agree = (am_t == am_s).to(ACC)
        tl.store(stats + 4 * B, lse_s, mask=row_ok)
    tl.store(stats + 5 * B, kl_1, mask=row_ok)
    tl.store(stats + 6 * B, agree, mask=row_ok)
    ce = zero
    if HAS_CE:
        ce = tl.where(y != IGNORE, lse_t - t_y, 0.0)
        # A target outside [0, C) (F.cross_entropy raises) would silently read t_y = 0: make the loss nan.
        ce = tl.where((y != IGNORE) & ((y < 0) | (y >= C)), float("nan"), ce)
    tl.store(stats + 7 * B, ce, mask=row_ok)


@triton.jit
def _logit_loss_reduce_kernel(
    stats_ptr,  # [N_STATS, B] per-row statistics from the forward kernel
    y_ptr,  # [B] integer targets
    loss_ptr,  # [] out, ACC dtype: the loss
    nvalid_ptr,  # [1] out, ACC dtype: the number of non-ignored targets (the CE mean's divisor)
    B,  # rows
    temperature,  # T (float)
    kd_weight,  # float
    adv_weight,  # float
    ce_weight,  # float
    HAS_KD: tl.constexpr,
    HAS_ADV: tl.constexpr,
    HAS_CE: tl.constexpr,
    IGNORE: tl.constexpr,
    BLOCK_B: tl.constexpr,  # rows per step of the (single program's) loop
    ACC: tl.constexpr,
):
    # One program, fixed summation order: the loss is bitwise reproducible (no atomics).
    kd = tl.zeros([BLOCK_B], ACC)
    adv = tl.zeros([BLOCK_B], ACC)
    ce = tl.zeros([BLOCK_B], ACC)
    nv = tl.zeros([BLOCK_B], ACC)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B)
        ok = rows < B
        kd += tl.load(stats_ptr + 2 * B + rows, mask=ok, other=0.0)
        adv += tl.load(stats_ptr + 5 * B + rows, mask=ok, other=0.0) * tl.load(
            stats_ptr + 6 * B + rows, mask=ok, other=0.0
        )
        ce += tl.load(stats_ptr + 7 * B + rows, mask=ok, other=0.0)
        y = tl.load(y_ptr + rows, mask=ok, other=IGNORE)
        nv += (y != IGNORE).to(ACC)
    inv_b = div_rn(tl.cast(1.0, ACC), tl.cast(B, ACC))
    n_valid = tl.sum(nv, axis=0)
    temp = tl.cast(temperature, ACC)
    loss = tl.sum(kd, axis=0) * 0.0
    if HAS_KD:
        loss += tl.cast(kd_weight, ACC) * temp * temp * tl.sum(kd, axis=0) * inv_b
    if HAS_ADV:
        loss -= tl.cast(adv_weight, ACC) * tl.sum(adv, axis=0) * inv_b
    if HAS_CE:
        # The CE mean runs over non-ignored rows (0 / 0 = nan when all are ignored, as in F.cross_entropy).
        loss += div_rn(tl.cast(ce_weight, ACC) * tl.sum(ce, axis=0), n_valid)
    tl.store(loss_ptr, loss)
    tl.store(nvalid_ptr, n_valid)


@triton.jit
def _logit_loss_bwd_kernel(
    t_ptr,  # [B, C] teacher logits
    s_ptr,  # [B, C] student logits
    y_ptr,  # [B] integer targets
    stats_ptr,  # [N_STATS, B] per-row statistics from the forward kernel
    nvalid_ptr,  # [1] number of non-ignored targets, from the reduce kernel
    go_ptr,  # [] grad_output of the scalar loss
    dt_ptr,  # [B, C] out: d loss / d teacher logits (teacher dtype), unit column stride; unused if not NEED_DT
    ds_ptr,  # [B, C] out: d loss / d student logits (student dtype), unit column stride; unused if not NEED_DS
    B,
    C,
    stride_t,
    stride_s,
    stride_dt,
    stride_ds,
    temperature,  # T (float)
    kd_weight,  # float
    adv_weight,  # float
    ce_weight,  # float
    HAS_KD: tl.constexpr,
    HAS_ADV: tl.constexpr,
    HAS_CE: tl.constexpr,
    NEED_DT: tl.constexpr,  # write the teacher gradient
    NEED_DS: tl.constexpr,  # write the student gradient
    IGNORE: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_ok = rows < B
    rows_c = tl.minimum(rows, B - 1)
    t_row = t_ptr + rows_c[:, None] * stride_t
    s_row = s_ptr + rows_c[:, None] * stride_s
    dt_row = dt_ptr + rows_c[:, None] * stride_dt
    ds_row = ds_ptr + rows_c[:, None] * stride_ds
    temp = tl.cast(temperature, ACC)
    inv_t = div_rn(tl.cast(1.0, ACC), temp)
    go = tl.load(go_ptr).to(ACC)
    inv_b = div_rn(tl.cast(1.0, ACC), tl.cast(B, ACC))
    stats = stats_ptr + rows_c
    y = tl.load(y_ptr + rows_c).to(tl.int32)

    # d KL(p||q) / d b = q - p and d KL / d a = p * (log p - log q - KL) for p = softmax(a), q = softmax(b);
    # the chain rule through a = t / T times the KD factor T^2 leaves T.
    kd_c = go * tl.cast(kd_weight, ACC) * temp * inv_b
    lse_a = tl.load(stats + 0 * B) if HAS_KD else tl.zeros([ROWS], ACC)
    lse_b = tl.load(stats + 1 * B) if HAS_KD else tl.zeros([ROWS], ACC)
    kl_T = tl.load(stats + 2 * B) if HAS_KD else tl.zeros([ROWS], ACC)
    lse_t = tl.load(stats + 3 * B) if (HAS_ADV or HAS_CE) else tl.zeros([ROWS], ACC)
    lse_s = tl.load(stats + 4 * B) if HAS_ADV else tl.zeros([ROWS], ACC)
    kl_1 = tl.load(stats + 5 * B)
    adv_c = -go * tl.cast(adv_weight, ACC) * inv_b * tl.load(stats + 6 * B)  # [ROWS]: 0 where argmaxes disagree
    n_valid = tl.load(nvalid_ptr).to(ACC)
    ce_c = tl.where(y != IGNORE, div_rn(go * tl.cast(ce_weight, ACC), n_valid), 0.0)  # [ROWS]

    cols0 = tl.arange(0, BLOCK_C)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + cols0
        mask = (rows_c[:, None] >= 0) & (cols[None, :] < C)
        t = tl.load(t_row + cols[None, :], mask=mask, other=0.0).to(ACC)
        s = tl.load(s_row + cols[None, :], mask=mask, other=0.0).to(ACC)
        dt = tl.zeros([ROWS, BLOCK_C], ACC)
        ds = tl.zeros([ROWS, BLOCK_C], ACC)
        if HAS_KD:
            log_p = t * inv_t - lse_a[:, None]
            log_q = s * inv_t - lse_b[:, None]
            p = tl.exp(log_p)
            if NEED_DS:
                ds += kd_c * (tl.exp(log_q) - p)
            if NEED_DT:
                dt += kd_c * p * (log_p - log_q - kl_T[:, None])
        if HAS_ADV or (HAS_CE and NEED_DT):
            log_p1 = t - lse_t[:, None]
            p1 = tl.exp(log_p1)
            if HAS_ADV:
                log_q1 = s - lse_s[:, None]
                if NEED_DS:
                    ds += adv_c[:, None] * (tl.exp(log_q1) - p1)
                if NEED_DT:
                    dt += adv_c[:, None] * p1 * (log_p1 - log_q1 - kl_1[:, None])
            if HAS_CE and NEED_DT:
                dt += ce_c[:, None] * (p1 - tl.where(cols[None, :] == y[:, None], 1.0, 0.0))
        store_mask = row_ok[:, None] & (cols[None, :] < C)
        if NEED_DT:
            tl.store(dt_row + cols[None, :], dt.to(dt_ptr.dtype.element_ty), mask=store_mask)
        if NEED_DS:
            tl.store(ds_row + cols[None, :], ds.to(ds_ptr.dtype.element_ty), mask=store_mask)


# --- launchers -------------------------------------------------------------------------------------------


def _check(teacher_logits: Tensor, student_logits: Tensor, targets: Tensor, temperature: float) -> None:
    t, s = teacher_logits, student_logits
    if t.dim() != 2 or s.dim() != 2:
        raise ValueError(f"logit_loss: logits must be [B, C], got teacher {tuple(t.shape)}, student {tuple(s.shape)}")
    if t.shape != s.shape:
        raise ValueError(f"logit_loss: teacher {tuple(t.shape)} and student {tuple(s.shape)} logits differ in shape")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"logit_loss: empty logits {tuple(t.shape)}")
    if targets.shape != (t.shape[0],):
        raise ValueError(f"logit_loss: targets must be [B] = [{t.shape[0]}], got {tuple(targets.shape)}")
    check_dtype("logit_loss", "teacher_logits", t, FLOAT_DTYPES)
    check_dtype("logit_loss", "student_logits", s, FLOAT_DTYPES)
    check_dtype("logit_loss", "targets", targets, (torch.int64, torch.int32), "int64 (or int32)")
    if not (t.device == s.device == targets.device):
        raise ValueError(f"logit_loss: tensors on different devices: {t.device}, {s.device}, {targets.device}")
    check_device("logit_loss", "teacher_logits", t, "fastcae.losses.logit_loss")
    if not temperature > 0:
        raise ValueError(f"logit_loss: temperature must be > 0, got {temperature}")


def _unit_col(x: Tensor) -> Tensor:
    return x if x.stride(1) == 1 else x.contiguous()


def _launch_config(B: int, C: int, n_sm: int) -> tuple[int, int, int]:
    """(ROWS, BLOCK_C, num_warps) on a device of ``n_sm`` SMs: a whole row per block when C <= _MAX_BLOCK_C;
    several rows per program when rows are short, but not so many that the grid leaves SMs idle (about two
    programs per SM)."""
    block_c = min(triton.next_power_of_2(C), _MAX_BLOCK_C)
    rows = max(1, _TILE_ELEMS // block_c)  # 1 when block_c >= _TILE_ELEMS: one (long) row per program
    if not INTERPRET:
        rows_for_grid = max(1, B // (2 * n_sm))
        rows = min(rows, 1 << (rows_for_grid.bit_length() - 1))  # largest power of two <= B / (2 SMs)
    rows = min(rows, triton.next_power_of_2(B))
    num_warps = 8 if rows * block_c >= 2048 else (4 if rows * block_c >= 512 else 2)
    return rows, block_c, num_warps


def _term_flags(kd_weight: float, adv_weight: float, ce_weight: float) -> dict:
    """The kernels' constexpr flags: a term whose weight is 0.0 is compiled out."""
    return dict(HAS_KD=kd_weight != 0.0, HAS_ADV=adv_weight != 0.0, HAS_CE=ce_weight != 0.0, IGNORE=IGNORE_INDEX)


def _reduce_block(B: int) -> int:
    """BLOCK_B of the one-program reduce kernel."""
    return min(triton.next_power_of_2(B), 1024)


def logit_loss_forward(
    teacher_logits: Tensor,
    student_logits: Tensor,
    targets: Tensor,
    temperature: float,
    kd_weight: float,
    adv_weight: float,
    ce_weight: float,
    *,
    config: tuple[int, int, int] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(loss [], stats [N_STATS, B], n_valid [1])``; ``stats`` and ``n_valid`` feed the backward.

    ``config`` = ``(ROWS, BLOCK_C, num_warps)`` overrides the launch heuristic (tests use it to run the GPU
    tilings through the interpreter).
    """
    _check(teacher_logits, student_logits, targets, temperature)
    t, s = _unit_col(teacher_logits), _unit_col(student_logits)
    targets = targets.contiguous()
    B, C = t.shape
    acc = acc_dtype(t, s)
    tl_acc = tl_dtype(acc)
    stats = torch.empty((N_STATS, B), dtype=acc, device=t.device)
    loss = torch.empty((), dtype=acc, device=t.device)
    n_valid = torch.empty((1,), dtype=acc, device=t.device)
    flags = _term_flags(kd_weight, adv_weight, ce_weight)
    rows, block_c, num_warps = config or _launch_config(B, C, sm_count(t.device))
    _logit_loss_fwd_kernel[(triton.cdiv(B, rows),)](
        t, s, targets, stats, B, C, t.stride(0), s.stride(0), float(temperature),
        **flags, ROWS=rows, BLOCK_C=block_c, ACC=tl_acc, num_warps=num_warps,
    )
    _logit_loss_reduce_kernel[(1,)](
        stats, targets, loss, n_valid, B, float(temperature), float(kd_weight), float(adv_weight), float(ce_weight),
        **flags, BLOCK_B=_reduce_block(B), ACC=tl_acc, num_warps=4,
    )
    return loss, stats, n_valid


def logit_loss_backward(
    grad_output: Tensor,
    teacher_logits: Tensor,
    student_logits: Tensor,
    targets: Tensor,
    stats: Tensor,
    n_valid: Tensor,
    temperature: float,
    kd_weight: float,
    adv_weight: float,
    ce_weight: float,
    need_teacher_grad: bool,
    need_student_grad: bool,
    *,
    config: tuple[int, int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Gradients ``(d teacher, d student)`` in the logits' dtypes; one not asked for is an empty tensor."""
    t, s = _unit_col(teacher_logits), _unit_col(student_logits)
    targets = targets.contiguous()
    B, C = t.shape
    if stats.shape != (N_STATS, B) or n_valid.shape != (1,):
        raise ValueError(
            f"logit_loss_backward: stats {tuple(stats.shape)} / n_valid {tuple(n_valid.shape)} do not match B={B}"
        )
    dt = torch.empty((B, C), dtype=t.dtype, device=t.device) if need_teacher_grad else t.new_empty((0,))
    ds = torch.empty((B, C), dtype=s.dtype, device=s.device) if need_student_grad else s.new_empty((0,))
    if not (need_teacher_grad or need_student_grad):
        return dt, ds
    rows, block_c, num_warps = config or _launch_config(B, C, sm_count(t.device))
    _logit_loss_bwd_kernel[(triton.cdiv(B, rows),)](
        t, s, targets, stats, n_valid, grad_output,
        dt if need_teacher_grad else t, ds if need_student_grad else s,  # dummies are never written
        B, C, t.stride(0), s.stride(0), C, C,
        float(temperature), float(kd_weight), float(adv_weight), float(ce_weight),
        **_term_flags(kd_weight, adv_weight, ce_weight), NEED_DT=need_teacher_grad, NEED_DS=need_student_grad,
        ROWS=rows, BLOCK_C=block_c, ACC=tl_dtype(stats.dtype), num_warps=num_warps,
    )
    return dt, ds


# --- wiring ----------------------------------------------------------------------------------------------


@torch.library.custom_op("fastcae::logit_loss", mutates_args=())
def _logit_loss_op(
    teacher_logits: Tensor,
    student_logits: Tensor,
    targets: Tensor,
    temperature: float,
    kd_weight: float,
    adv_weight: float,
    ce_weight: float,
) -> tuple[Tensor, Tensor, Tensor]:
    return logit_loss_forward(teacher_logits, student_logits, targets, temperature, kd_weight, adv_weight, ce_weight)


@_logit_loss_op.register_fake
def _(teacher_logits, student_logits, targets, temperature, kd_weight, adv_weight, ce_weight):
    acc = acc_dtype(teacher_logits, student_logits)
    B = teacher_logits.shape[0]
    return (
        teacher_logits.new_empty((), dtype=acc),
        teacher_logits.new_empty((N_STATS, B), dtype=acc),
        teacher_logits.new_empty((1,), dtype=acc),
    )


@torch.library.custom_op("fastcae::logit_loss_backward", mutates_args=())
def _logit_loss_backward_op(
    grad_output: Tensor,
    teacher_logits: Tensor,
    student_logits: Tensor,
    targets: Tensor,
    stats: Tensor,
    n_valid: Tensor,
    temperature: float,
    kd_weight: float,
    adv_weight: float,
    ce_weight: float,
    need_teacher_grad: bool,
    need_student_grad: bool,
) -> tuple[Tensor, Tensor]:
    return logit_loss_backward(
        grad_output, teacher_logits, student_logits, targets, stats, n_valid, temperature, kd_weight, adv_weight,
        ce_weight, need_teacher_grad, need_student_grad,
    )


@_logit_loss_backward_op.register_fake
def _(grad_output, teacher_logits, student_logits, targets, stats, n_valid, temperature, kd_weight, adv_weight,
      ce_weight, need_teacher_grad, need_student_grad):
    # row-major like the real op (empty_like would keep a transposed input's strides)
    dt = teacher_logits.new_empty(teacher_logits.shape) if need_teacher_grad else teacher_logits.new_empty((0,))
    ds = student_logits.new_empty(student_logits.shape) if need_student_grad else student_logits.new_empty((0,))
    return dt, ds


def _setup_context(ctx, inputs, output):
    teacher_logits, student_logits, targets, temperature, kd_weight, adv_weight, ce_weight = inputs
    _, stats, n_valid = output
    ctx.save_for_backward(teacher_logits, student_logits, targets, stats, n_valid)
    ctx.args = (temperature, kd_weight, adv_weight, ce_weight)
    ctx.mark_non_differentiable(stats, n_valid)


def _backward(ctx, grad_loss, grad_stats, grad_n_valid):
    teacher_logits, student_logits, targets, stats, n_valid = ctx.saved_tensors
    need_t, need_s = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dt, ds = _logit_loss_backward_op(
        grad_loss, teacher_logits, student_logits, targets, stats, n_valid, *ctx.args, need_t, need_s
    )
    return (dt if need_t else None), (ds if need_s else None), None, None, None, None, None


_logit_loss_op.register_autograd(_backward, setup_context=_setup_context)


# --- public function -------------------------------------------------------------------------------------


def logit_loss(
    teacher_logits: Tensor,
    student_logits: Tensor,
    targets: Tensor,
    *,
    temperature: float,
    kd_weight: float,
    adv_weight: float,
    ce_weight: float,
) -> Tensor:
    """``kd_weight * KD_T(t, s) + adv_weight * ADV(t, s) + ce_weight * CE(t, targets)`` as one fused op.

    Same signature, value and gradients as ``fastcae.losses.logit_loss``; returns a 0-d fp32 tensor.
    Gradients flow to whichever logits require grad (both in the generator step, the student's alone in
    the student step) and come back in the logits' dtype.
    """
    loss, _, _ = _logit_loss_op(
        teacher_logits, student_logits, targets, float(temperature), float(kd_weight), float(adv_weight),
        float(ce_weight),
    )
    return loss


# --- ahead-of-time launches ------------------------------------------------------------------------------

# The calls of a CIFAR run, as (kd, adv, ce weights, teacher gradient?, student gradient?): the student
# step's KD; the generator step's CE (warm-up: the student's logits are the teacher's, detached) and its
# adversarial + CE.
_AOT_CALLS = (((1.0, 0.0, 0.0), False, True), ((0.0, 0.0, 0.5), True, False), ((0.0, 1.33, 0.5), True, True))


def aot_launches(n_sm: int) -> list[Launch]:
    """The launches of ``logit_loss_forward`` and ``logit_loss_backward`` on a GPU of ``n_sm`` SMs, at CIFAR
    shapes (``shared.AOT_*``) and ``_AOT_CALLS``: for ``tools/kernel_check.py``, which compiles them ahead of
    time. Row-major logits, as the launchers make them."""
    launches = []
    for dtype in AOT_DTYPES:
        dt = dtype_name(dtype)
        for B in AOT_BATCHES:
            for C in AOT_CLASSES:
                rows, block_c, nw = _launch_config(B, C, n_sm)
                for (kd, adv, ce), need_dt, need_ds in _AOT_CALLS:
                    flags = _term_flags(kd, adv, ce)
                    weights = dict(kd_weight=kd, adv_weight=adv, ce_weight=ce)
                    tag = "+".join(k[4:] for k, v in flags.items() if k.startswith("HAS_") and v)
                    shape = f"B={B} C={C}"
                    cfg = f"{dt} {tag} ROWS={rows} BLOCK_C={block_c} w={nw}"
                    common = dict(t_ptr=Ptr(dt), s_ptr=Ptr(dt), y_ptr=Ptr("i64"), stats_ptr=Ptr("fp32"), B=B, C=C,
                                  stride_t=C, stride_s=C, temperature=20.0, **flags, ROWS=rows, BLOCK_C=block_c,
                                  ACC=tl.float32)
                    block_b = _reduce_block(B)
                    dirs = "+".join(n for n, on in (("dt", need_dt), ("ds", need_ds)) if on)
                    launches += [
                        Launch(_logit_loss_fwd_kernel, common, nw, None, cfg, shape),
                        Launch(_logit_loss_reduce_kernel,
                               dict(stats_ptr=Ptr("fp32"), y_ptr=Ptr("i64"), loss_ptr=Ptr("fp32"),
                                    nvalid_ptr=Ptr("fp32"), B=B, temperature=20.0, **weights, **flags,
                                    BLOCK_B=block_b, ACC=tl.float32),
                               4, None, f"{tag} BLOCK_B={block_b} w=4", shape),
                        Launch(_logit_loss_bwd_kernel,
                               dict(common, nvalid_ptr=Ptr("fp32"), go_ptr=Ptr("fp32"), dt_ptr=Ptr(dt), ds_ptr=Ptr(dt),
                                    stride_dt=C, stride_ds=C, **weights, NEED_DT=need_dt, NEED_DS=need_ds),
                               nw, None, f"{cfg} {dirs}", shape),
                    ]
    return launches
