"""Ahead-of-time compile check of the fused Triton kernels for a CUDA target, on a machine without a GPU.

    python -m fastcae.kernels.check --arch sm_90        # or sm_80; --only cend_linear,logit_loss; --list; -v

Every kernel of the op modules of ``fastcae.kernels`` (``MODULES``: ``fastcae/kernels/<op>.py``) is compiled
at the configurations its launcher picks at CIFAR shapes (the generator step's batch 400 and the student
step's 512; 10, 100 and 1000 classes; fp32 and bf16 inputs; the BatchNorm inputs of the CIFAR teachers), with
``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))``. The block
sizes come from the launchers' own helpers (``_launch_config``, ``_plan``, ``_o_splits``, ``_wide_o_config``,
``_bn_config``), run against a stand-in device with the target's SM count, so this file
repeats no tiling rule. The Triton wheel carries ptxas, so no driver or GPU is needed; the argument
specialisation (pointer alignment, integers divisible by 16, integers equal to 1) is the one the JIT derives
from the arguments the launcher passes.

The table has one row per (kernel, launcher config); ``n`` counts its distinct compilations (integer
specialisations differ between shapes), and registers, spills and shared memory are given as ranges over
them. ``regs`` and ``n_spills`` are what ``CompiledKernel.n_regs`` / ``.n_spills`` report on a GPU (the
driver's NUM_REGS and LOCAL_SIZE_BYTES / 4; read here from the cubin with the wheel's ``cuobjdump``, since
``CompiledKernel`` fills them in only when it loads onto a device). ``n_spills`` counts all local memory: a
kernel calling ``tl.cos`` shows 8 words of libdevice's range-reduction array without spilling, so a spill is
judged by ptxas's own log (``spill B``: bytes of spill stores). Exit status 1 on a compile error, a spill, or
shared memory beyond the target's per-block limit.

``_compile`` absorbs the ``ASTSource`` API change of Triton 3.3, so the check runs with Triton 3.2 through 3.8
(before 3.4 Triton prints no ptxas log; the spills then come from a ``ptxas -v`` rerun, close but not
identical flags). It needs torch importable (the kernel modules register their custom ops at import) but no
CUDA (no kernel is autotuned: every config is fixed by its launcher, so this table is what runs). It must
run without ``TRITON_INTERPRET`` (the interpreter replaces the kernels by Python functions).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field

from . import OPS

# --- targets -------------------------------------------------------------------------------------------------

# capability -> (SMs of the GPU the launchers' heuristics are evaluated for, max shared memory per block with
# opt-in, in bytes: what Triton checks when it loads a kernel)
TARGETS = {
    80: (108, 166912),  # A100
    86: (84, 101376),  # RTX 30xx / A40 class
    89: (128, 101376),  # L40 / RTX 40xx class
    90: (132, 232448),  # H100 / H200 SXM
}
MODULES = OPS  # every op module of fastcae.kernels

# CIFAR shapes
GEN_BATCH, STUDENT_BATCH = 400, 512  # DistillConfig.synth_batch_size, .student_batch_size
BATCHES = (GEN_BATCH, STUDENT_BATCH)
CLASSES = (10, 100, 1000)
DTYPES = ("fp32", "bf16")
CNCL_DIM = 128  # DistillConfig.cncl_dim
TEXT_DIMS = (512, 384)  # CLIP ViT-B/32, all-MiniLM-L6-v2 embeddings
GEN_LINEAR_OUT = 2 * 64 * 8 * 8  # generator's first Linear at 32x32, ngf = 64: 2 ngf * (H/4) * (W/4)
# BatchNorm inputs [N, C, H, W] of the CIFAR teachers as (C, H*W): resnet18/34 (64@32x32 .. 512@4x4),
# wrn40_2 (16@32x32 .. 128@8x8), vgg11_bn (64@32x32 .. 512@2x2)
BN_LAYERS = ((16, 1024), (32, 1024), (64, 1024), (64, 256), (128, 256), (128, 64), (256, 64), (512, 16),
             (512, 4))


# --- launch descriptions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ptr:
    """A pointer argument to a tensor of element type ``ty`` (Triton's name: fp32, bf16, i64, ...), allocated
    by torch (16-byte aligned)."""

    ty: str


@dataclass
class Launch:
    module: str
    kernel: str  # attribute name of the @triton.jit function in the module
    args: dict  # every kernel argument by name: Ptr, int, float, or the constexpr value
    num_warps: int
    num_stages: int | None  # None: Triton's default (the launcher passes none)
    config: str  # what the launcher chose (block sizes, flags), for the table
    shape: str  # the problem it was chosen for


@dataclass
class Result:
    launch: Launch
    shapes: list = field(default_factory=list)
    regs: int | None = None  # CompiledKernel.n_regs
    n_spills: int | None = None  # CompiledKernel.n_spills: local memory words (spills, and libdevice's arrays)
    spill_bytes: int | None = None  # ptxas: bytes of register spill stores
    shared: int | None = None
    seconds: float = 0.0
    error: str | None = None


@contextlib.contextmanager
def _stand_in_device(n_sm: int):
    """``torch.cuda.get_device_properties`` answers with ``n_sm`` SMs, so the launchers' heuristics run here.
    ``shared.sm_count`` caches its answers: emptied on the way in and out, so no count outlives its target."""
    import torch

    from .shared import _sms

    real = torch.cuda.get_device_properties
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(multi_processor_count=n_sm)
    _sms.cache_clear()
    try:
        yield torch.device("cuda", 0)
    finally:
        torch.cuda.get_device_properties = real
        _sms.cache_clear()


def _torch_dtype(name):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _logit_loss_launches(mod, n_sm):
    import triton
    import triton.language as tl

    # (flags, NEED_DT, NEED_DS, step): the student step's KD; the generator step's CE (warm-up: the student's
    # logits are the teacher's, detached) and adversarial + CE.
    combos = (
        (dict(HAS_KD=True, HAS_ADV=False, HAS_CE=False), False, True, "student KD"),
        (dict(HAS_KD=False, HAS_ADV=False, HAS_CE=True), True, False, "generator CE (warm-up)"),
        (dict(HAS_KD=False, HAS_ADV=True, HAS_CE=True), True, True, "generator ADV+CE"),
    )
    with _stand_in_device(n_sm) as dev:
        for dt in DTYPES:
            for B in BATCHES:
                for C in CLASSES:
                    rows, block_c, nw = mod._launch_config(B, C, dev)
                    for flags, need_dt, need_ds, step in combos:
                        flags = dict(flags, IGNORE=mod.IGNORE_INDEX)
                        tag = "+".join(k[4:] for k, v in flags.items() if k.startswith("HAS_") and v)
                        shape = f"B={B} C={C}"
                        cfg = f"{dt} {tag} ROWS={rows} BLOCK_C={block_c} w={nw}"
                        common = dict(t_ptr=Ptr(dt), s_ptr=Ptr(dt), y_ptr=Ptr("i64"), B=B, C=C, stride_t=C,
                                      stride_s=C, temperature=20.0, ROWS=rows, BLOCK_C=block_c, ACC=tl.float32)
                        yield Launch("logit_loss", "_logit_loss_fwd_kernel",
                                     dict(common, stats_ptr=Ptr("fp32"), **flags), nw, None, cfg, shape)
                        yield Launch("logit_loss", "_logit_loss_reduce_kernel",
                                     dict(stats_ptr=Ptr("fp32"), y_ptr=Ptr("i64"), loss_ptr=Ptr("fp32"),
                                          nvalid_ptr=Ptr("fp32"), B=B, temperature=20.0, kd_weight=1.0,
                                          adv_weight=1.33, ce_weight=0.5, **flags,
                                          BLOCK_B=min(triton.next_power_of_2(B), 1024), ACC=tl.float32),
                                     4, None, f"{tag} BLOCK_B={min(triton.next_power_of_2(B), 1024)} w=4", shape)
                        dirs = "+".join(n for n, on in (("dt", need_dt), ("ds", need_ds)) if on)
                        yield Launch("logit_loss", "_logit_loss_bwd_kernel",
                                     dict(common, stats_ptr=Ptr("fp32"), nvalid_ptr=Ptr("fp32"), go_ptr=Ptr("fp32"),
                                          dt_ptr=Ptr(dt), ds_ptr=Ptr(dt), stride_dt=C, stride_ds=C, kd_weight=1.0,
                                          adv_weight=1.33, ce_weight=0.5, **flags, NEED_DT=need_dt,
                                          NEED_DS=need_ds),
                                     nw, None, f"{cfg} {dirs}", shape)


def _supcon_loss_launches(mod, n_sm):
    import triton
    import triton.language as tl

    d = CNCL_DIM
    with _stand_in_device(n_sm) as dev:
        for dt in DTYPES:
            precision = mod.FP32_DOT_PRECISION if dt == "fp32" else "ieee"  # supcon_loss._dot_precision
            for B in BATCHES:
                bm, bn, d_pad, nw = mod._launch_config(B, d, _torch_dtype(dt), dev)
                shape = f"B={B} d={d}"
                cfg = f"{dt} {precision} BLOCK_M={bm} BLOCK_N={bn} D_PAD={d_pad} w={nw}"
                common = dict(z_ptr=Ptr(dt), lab_ptr=Ptr("i64"), stats_ptr=Ptr("fp32"), B=B, d=d, stride_z=d,
                              temperature=0.1, BLOCK_M=bm, BLOCK_N=bn, D_PAD=d_pad, DOT_PRECISION=precision,
                              UPCAST_DOT=False, ACC=tl.float32)
                yield Launch("supcon_loss", "_supcon_fwd_kernel", common, nw, None, cfg, shape)
                block_b = min(triton.next_power_of_2(B), 1024)
                yield Launch("supcon_loss", "_supcon_reduce_kernel",
                             dict(stats_ptr=Ptr("fp32"), loss_ptr=Ptr("fp32"), nanchor_ptr=Ptr("fp32"), B=B,
                                  BLOCK_B=block_b, ACC=tl.float32), 4, None, f"BLOCK_B={block_b} w=4", shape)
                yield Launch("supcon_loss", "_supcon_bwd_kernel",
                             dict(common, nanchor_ptr=Ptr("fp32"), go_ptr=Ptr("fp32"), dz_ptr=Ptr(dt), stride_dz=d,
                                  SPLIT_G=dt != "fp32"), nw, None, cfg + (" SPLIT_G" if dt != "fp32" else ""),
                             shape)


def _bn_stats_loss_launches(mod, n_sm):
    import torch
    import triton
    import triton.language as tl

    N = GEN_BATCH
    for dt in DTYPES:
        for channels_last in (False, True):
            layout = "channels_last" if channels_last else "NCHW"
            for C, S in BN_LAYERS:
                hw = int(S ** 0.5)
                x = torch.empty((N, C, hw, hw), device="meta", dtype=_torch_dtype(dt))
                if channels_last:
                    x = x.to(memory_format=torch.channels_last)
                x, cl, sn, sc, ss = mod._nsc_view(x)
                shape = f"[{N},{C},{hw},{hw}] {layout}"
                itemsize = x.element_size()
                fwd = mod._plan(tuple(x.shape), cl, itemsize, n_sm, mod._FWD_PROGRAMS_PER_SM, mod._MAX_PARTIALS,
                                None, None)
                view = dict(N=N, C=C, S=S, stride_n=sn, stride_c=sc, stride_s=ss)
                yield Launch("bn_stats_loss", "_bn_stats_loss_fwd_kernel",
                             dict(x_ptr=Ptr(dt), part_ptr=Ptr("fp32"), **view, UNITS=fwd["units"],
                                  UNITS_PER_PROG=fwd["units_per_prog"], S_BLOCKS=fwd["s_blocks"],
                                  CHANNELS_LAST=cl, UNIFORM=fwd["uniform"], BLOCK_R=fwd["block_r"],
                                  BLOCK_K=fwd["block_k"], ACC=tl.float32),
                             mod._NUM_WARPS, None,
                             f"{dt} {'CL' if cl else 'NCHW'}{' UNIFORM' if fwd['uniform'] else ''} "
                             f"BLOCK_R={fwd['block_r']} BLOCK_K={fwd['block_k']} w={mod._NUM_WARPS}", shape)
                block_c = min(triton.next_power_of_2(C), mod._FIN_BLOCK_C)
                block_sp = max(1, min(mod._FIN_TILE // block_c, triton.next_power_of_2(fwd["split"])))
                f32 = Ptr("fp32")
                yield Launch("bn_stats_loss", "_bn_stats_loss_fin_kernel",
                             dict(part_ptr=f32, rm_ptr=f32, rv_ptr=f32, em_ptr=f32, ev_ptr=f32, w_ptr=f32,
                                  w_value=0.0, loss_ptr=f32, mean_ptr=f32, var_ptr=f32, aux_ptr=f32, C=C,
                                  SPLIT=fwd["split"], HAS_W_PTR=True, BLOCK_SP=block_sp, BLOCK_C=block_c,
                                  ACC=tl.float32),
                             mod._NUM_WARPS, None, f"BLOCK_SP={block_sp} BLOCK_C={block_c} w={mod._NUM_WARPS}",
                             shape)
                bwd = mod._plan(tuple(x.shape), cl, itemsize, n_sm, mod._BWD_PROGRAMS_PER_SM, None,
                                mod._BWD_TILE[itemsize], None)
                yield Launch("bn_stats_loss", "_bn_stats_loss_bwd_kernel",
                             dict(x_ptr=Ptr(dt), dx_ptr=Ptr(dt), go_ptr=f32, mean_ptr=f32, aux_ptr=f32, **view,
                                  UNITS=bwd["units"], UNITS_PER_PROG=bwd["units_per_prog"], S_BLOCKS=bwd["s_blocks"],
                                  CHANNELS_LAST=cl, BLOCK_R=bwd["block_r"], BLOCK_K=bwd["block_k"], ACC=tl.float32),
                             mod._NUM_WARPS, None,
                             f"{dt} {'CL' if cl else 'NCHW'} BLOCK_R={bwd['block_r']} BLOCK_K={bwd['block_k']} "
                             f"w={mod._NUM_WARPS}", shape)


def _cend_linear_launches(mod, n_sm):
    import triton
    import triton.language as tl

    B, O = GEN_BATCH, GEN_LINEAR_OUT
    # fp32 weights: "ieee" by default, "tf32" when the user allows TF32 matmuls (cend_linear._dot_precision)
    weights = (("fp32", "ieee"), ("fp32", "tf32"), ("bf16", "ieee"))
    f32, i64 = Ptr("fp32"), Ptr("i64")
    with _stand_in_device(n_sm) as dev:
        for D in TEXT_DIMS:
            for n_cls in CLASSES:
                shape = f"B={B} D={D} O={O} classes={n_cls}"
                cend = dict(emb_ptr=f32, tgt_ptr=i64, src_ptr=i64, mag_ptr=f32, scale_ptr=f32, noise_state_ptr=i64,
                            B=B, D=D, stride_ec=D, stride_mn=1, MAG_PER_DIM=False)  # magnitudes [N]: stride 1
                stats = dict(mod._STATS_CFG)
                nw = stats.pop("num_warps")
                yield Launch("cend_linear", "_cend_linear_stats_kernel",
                             dict(cend, mean_ptr=f32, var_ptr=f32, ACC=tl.float32, **stats), nw, None,
                             " ".join(f"{k}={v}" for k, v in stats.items()) + f" w={nw}", shape)
                for wdt, precision in weights:
                    w = Ptr(wdt)
                    norm = dict(mean_ptr=f32, var_ptr=f32, gamma_ptr=f32, beta_ptr=f32, eps=1e-5, O=O,
                                ACC=tl.float32, DOT_PRECISION=precision, UPCAST_DOT=False)
                    fwd = dict(cend, **norm, out_ptr=w, w_ptr=w, bias_ptr=w, stride_wo=D, stride_wd=1,
                               stride_hb=O, HAS_BIAS=True)
                    bwd_w = dict(cend, **norm, dw_ptr=w, dbias_ptr=w, dh_ptr=w, stride_gb=O, stride_go=1)
                    family = "ieee_fp32" if (wdt, precision) == ("fp32", "ieee") else "tensor_core"
                    for kernel, args in (("_cend_linear_fwd_kernel", fwd), ("_cend_linear_bwd_w_kernel", bwd_w)):
                        c = mod._wide_o_config(B, O, family)
                        nw, ns = c.pop("num_warps"), c.pop("num_stages")
                        yield Launch("cend_linear", kernel, dict(args, **c), nw, ns,
                                     f"{wdt} {precision} " + " ".join(f"{k}={v}" for k, v in c.items())
                                     + f" w={nw} s={ns}", shape)
                    cfg = mod._bn_config(family)
                    nw, ns = cfg.pop("num_warps"), cfg.pop("num_stages")
                    n_b, n_d = triton.cdiv(B, cfg["BLOCK_B"]), triton.cdiv(D, cfg["BLOCK_D"])
                    n_blocks_o = triton.cdiv(O, cfg["BLOCK_O"])
                    blocks_per_split = triton.cdiv(n_blocks_o, mod._o_splits(n_b * n_d, n_blocks_o, dev))
                    yield Launch("cend_linear", "_cend_linear_bwd_bn_kernel",
                                 dict(cend, dgamma_part_ptr=f32, dbeta_part_ptr=f32, dh_ptr=w, mean_ptr=f32,
                                      var_ptr=f32, w_ptr=w, eps=1e-5, O=O,
                                      o_per_split=blocks_per_split * cfg["BLOCK_O"], stride_wo=D, stride_wd=1,
                                      stride_gb=O, stride_go=1, ACC=tl.float32, DOT_PRECISION=precision,
                                      UPCAST_DOT=False, **cfg),
                                 nw, ns, f"{wdt} {precision} " + " ".join(f"{k}={v}" for k, v in cfg.items())
                                 + f" w={nw} s={ns}", shape)


LAUNCHES = {
    "logit_loss": _logit_loss_launches,
    "supcon_loss": _supcon_loss_launches,
    "bn_stats_loss": _bn_stats_loss_launches,
    "cend_linear": _cend_linear_launches,
}


# --- compiling -----------------------------------------------------------------------------------------------


def _specialise(fn, args):
    """Split ``args`` as the JIT would: ``(types, constexprs, hints)`` over the kernel's parameters in order.

    types: name -> Triton type string ("constexpr" for a constexpr); constexprs: name -> value (constexpr
    parameters, and integers equal to 1, which the JIT folds); hints: parameter index -> 16 (pointer, or an
    integer divisible by 16) or 1 (an integer equal to 1).
    """
    names = list(fn.arg_names)
    missing = [n for n in names if n not in args]
    extra = [n for n in args if n not in names]
    if missing or extra:
        raise TypeError(f"{fn.__name__}: missing arguments {missing}, unknown arguments {extra}")
    types_, constexprs, hints = {}, {}, {}
    for i, p in enumerate(fn.params):
        v = args[p.name]
        if p.is_constexpr:
            types_[p.name], constexprs[p.name] = "constexpr", v
        elif isinstance(v, Ptr):
            types_[p.name], hints[i] = "*" + v.ty, 16
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{fn.__name__}: argument {p.name}={v!r} is not a pointer, int or float")
        elif isinstance(v, int):
            types_[p.name] = "i32" if -2**31 <= v < 2**31 else "i64"
            if v == 1:
                constexprs[p.name], hints[i] = 1, 1
            elif v % 16 == 0:
                hints[i] = 16
        else:
            types_[p.name] = "fp32"
    return types_, constexprs, hints


def _compile(fn, args, target, options):
    """``triton.compile`` of the JIT function ``fn`` for ``args`` (see ``_specialise``), on any Triton 3.2-3.8.

    Triton >= 3.3: ``ASTSource(fn, signature, constexprs, attrs)``, signature over every parameter ("constexpr"
    for constexprs and folded 1s), constexprs and attrs keyed by parameter path ``(index,)``, attrs as
    ``[["tt.divisibility", 16]]``. Triton 3.2: ``ASTSource(fn, signature, constants, attrs)``, signature over
    the non-constexpr parameters only, constants keyed by name, attrs an ``AttrsDescriptor`` from hints.
    """
    import triton
    from triton.compiler import ASTSource

    types_, constexprs, hints = _specialise(fn, args)
    index = {n: i for i, n in enumerate(fn.arg_names)}
    if "constexprs" in inspect.signature(ASTSource.__init__).parameters:
        signature = {n: ("constexpr" if n in constexprs else t) for n, t in types_.items()}
        attrs = {(i,): [["tt.divisibility", 16]] for i, h in hints.items() if h == 16}
        src = ASTSource(fn, signature, {(index[n],): v for n, v in constexprs.items()}, attrs)
    else:
        from triton.backends.compiler import AttrsDescriptor

        signature = {n: t for n, t in types_.items() if t != "constexpr"}
        src = ASTSource(fn, signature, dict(constexprs), AttrsDescriptor.from_hints(hints))
    return triton.compile(src, target=target, options=options)


def _nvidia_tool(name):
    import triton.backends.nvidia as nv

    path = os.path.join(os.path.dirname(nv.__file__), "bin", name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{name} not found at {path} (the Triton wheel ships it)")
    return path


def _n_regs_spills(cubin: bytes):
    """``(n_regs, n_spills)`` of the cubin's one kernel, the numbers Triton's ``CompiledKernel`` reports once
    loaded on a GPU: the driver's NUM_REGS, and LOCAL_SIZE_BYTES / 4, i.e. the per-thread local memory (stack
    frame plus local arrays) in words. Read with the wheel's cuobjdump (REG, STACK + LOCAL)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_nvidia_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    regs, stack, local = re.search(r"REG:(\d+)\s+STACK:(\d+).*?LOCAL:(\d+)", out, re.S).groups()
    return int(regs), (int(stack) + int(local)) // 4


def _spill_stores(log: str):
    """Bytes of register spill stores in a ``ptxas -v`` log (None if the log has no such line)."""
    m = re.search(r"(\d+) bytes spill stores", log)
    return int(m.group(1)) if m else None


def _ptxas_spill_stores(ptx: str, arch: int):
    """Fallback where Triton cannot print its ptxas log (before 3.4): ``ptxas -v`` on the kernel's PTX with
    Triton's target name; other ptxas flags may differ from Triton's, so this is close, not exact."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
        r = subprocess.run([_nvidia_tool("ptxas"), "-v", "-lineinfo", f"--gpu-name={gpu}", src, "-o",
                            os.path.join(tmp, "k.cubin")], capture_output=True, text=True, check=True)
    return _spill_stores(r.stderr)


def _error_line(e: BaseException) -> str:
    """The innermost cause of ``e`` (a CompilationError wraps the real error once per inlined call), one line."""
    while (e.__cause__ or e.__context__) is not None and type(e).__name__ == "CompilationError":
        e = e.__cause__ or e.__context__
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if type(e).__name__ == "CompilationError":  # no cause recorded: the message ends with the source excerpt
        lines = [ln for ln in lines if not ln.startswith("^")] or lines
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(arch: int, only=None, verbose=False, out=None) -> int:
    """Compile everything for ``sm_<arch>``, print the table (to ``out``, default stdout); returns the exit
    status: 0 clean, 1 a failure, 2 not run (under the interpreter)."""
    out = out or sys.stdout
    from .shared import interpreting  # live: Triton's own reading of TRITON_INTERPRET, as the kernels take it

    if interpreting():
        print("fastcae.kernels.check: unset TRITON_INTERPRET (the interpreter compiles nothing)", file=out)
        return 2
    from triton.backends.compiler import GPUTarget

    n_sm, max_shared = TARGETS[arch]
    target = GPUTarget("cuda", arch, 32)
    results: dict = {}
    t_start = time.time()
    # Triton >= 3.4 prints its own ptxas -v log (the spill counts) when asked, on a compile that is not a
    # cache hit: recompile everything (about a second a kernel).
    with _env(TRITON_DUMP_PTXAS_LOG="1", TRITON_ALWAYS_COMPILE="1"):
        for name in only or MODULES:
            try:
                mod = importlib.import_module(f"fastcae.kernels.{name}")
                launches = list(LAUNCHES[name](mod, n_sm))
            except Exception as e:  # noqa: BLE001 - reported as a failed import, the other modules still run
                launch = Launch(name, "(import)", {}, 0, None, "", "")
                results[(name,)] = Result(launch, [""], error=_error_line(e))
                continue
            for launch in launches:
                fn = getattr(mod, launch.kernel)
                types_, constexprs, hints = _specialise(fn, launch.args)
                key = (name, launch.kernel, tuple(types_.items()), tuple(sorted(hints.items())),
                       tuple((k, str(v)) for k, v in constexprs.items()), launch.num_warps, launch.num_stages)
                if key in results:
                    if launch.shape not in results[key].shapes:
                        results[key].shapes.append(launch.shape)
                    continue
                res = results[key] = Result(launch, [launch.shape])
                options = {"num_warps": launch.num_warps}
                if launch.num_stages is not None:
                    options["num_stages"] = launch.num_stages
                t0 = time.time()
                log = io.StringIO()
                try:
                    with contextlib.redirect_stdout(log):
                        compiled = _compile(fn, launch.args, target, options)
                    res.shared = compiled.metadata.shared
                    res.regs, res.n_spills = _n_regs_spills(compiled.asm["cubin"])
                    res.spill_bytes = _spill_stores(log.getvalue())
                    if res.spill_bytes is None:
                        res.spill_bytes = _ptxas_spill_stores(compiled.asm["ptx"], arch)
                except Exception as e:  # noqa: BLE001 - reported in the table, fails the check
                    res.error = _error_line(e)
                    if verbose:
                        print(f"--- {name}.{launch.kernel} [{launch.config}]\n{e}", file=out)
                res.seconds = time.time() - t0
                if verbose:
                    print(f"  {res.seconds:5.1f}s {name}.{launch.kernel} [{launch.config}]", file=out, flush=True)

    return _report(results, arch, n_sm, max_shared, time.time() - t_start, out)


def _status(res: Result, max_shared: int) -> str:
    if res.error:
        return "FAIL import" if res.launch.kernel == "(import)" else "FAIL compile"
    if res.spill_bytes:
        return "FAIL spills"
    if res.shared > max_shared:
        return "FAIL over smem"
    return "ok"


def _span(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _report(results, arch, n_sm, max_shared, seconds, out) -> int:
    """One row per (kernel, launcher config): the distinct compilations under it (integer specialisations
    differ between shapes) as a count, their registers / spills / shared memory as a range."""
    import triton

    groups: dict = {}
    for res in results.values():
        launch = res.launch
        groups.setdefault((launch.module, launch.kernel, launch.config), []).append(res)
    rows, errors, failed = [], [], 0
    for (module, kernel, config), members in groups.items():
        statuses = [_status(r, max_shared) for r in members]
        status = next((st for st in statuses if st.startswith("FAIL")), None) or next(
            (st for st in statuses if st != "ok"), "ok")
        failed += sum(st.startswith("FAIL") for st in statuses)
        shapes = [sh for r in members for sh in r.shapes]
        for r in members:
            if r.error and r.error not in errors:
                errors.append(r.error)
        rows.append((f"{module}.{kernel.strip('_')}", config,
                     shapes[0] + (f" (+{len(shapes) - 1})" if len(shapes) > 1 else ""), str(len(members)),
                     _span(r.regs for r in members), _span(r.n_spills for r in members),
                     _span(r.spill_bytes for r in members),
                     _span(r.shared for r in members), status))
    header = ("kernel", "config", "shape (+more)", "n", "regs", "n_spills", "spill B", "smem", "status")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'>' if 3 <= i <= 7 else '<'}{w}}}" for i, w in enumerate(widths)).rstrip()
    print(f"triton {triton.__version__}, target sm_{arch} ({n_sm} SMs, {max_shared} B shared memory per block): "
          f"{len(results)} distinct compilations in {seconds:.0f}s", file=out)
    print(fmt.format(*header).rstrip(), file=out)
    print(fmt.format(*("-" * w for w in widths)).rstrip(), file=out)
    for r in rows:
        print(fmt.format(*r).rstrip(), file=out)
    print("n: distinct compilations (integer specialisations differ between shapes). regs, n_spills: what\n"
          "CompiledKernel.n_regs / .n_spills report on a GPU; n_spills is local memory in words, register spills\n"
          "and also libdevice's local arrays (sin/cos range reduction: 8 words). spill B: bytes of register spill\n"
          "stores in ptxas's log; a spill fails the check.", file=out)
    for e in errors:
        print(f"error: {e}", file=out)
    print(f"{len(results) - failed} compiled clean, {failed} failed", file=out)
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastcae.kernels.check", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="sm_90", choices=[f"sm_{a}" for a in TARGETS], help="CUDA target")
    p.add_argument("--only", default=None, help=f"comma-separated kernel modules (default: all of {MODULES})")
    p.add_argument("--list", action="store_true",
                   help="list the launches (checking their arguments against the kernels) and exit, compiling nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="print each compilation and full errors")
    a = p.parse_args(argv)
    only = a.only.split(",") if a.only else None
    for name in only or ():
        if name not in MODULES:
            p.error(f"unknown kernel module {name!r}; known: {', '.join(MODULES)}")
    arch = int(a.arch[3:])
    if a.list:
        for name in only or MODULES:
            mod = importlib.import_module(f"fastcae.kernels.{name}")
            for launch in LAUNCHES[name](mod, TARGETS[arch][0]):
                _specialise(getattr(mod, launch.kernel), launch.args)  # raises if the arguments went stale
                print(f"{name}.{launch.kernel}  {launch.config}  {launch.shape}")
        return 0
    return run(arch, only, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
