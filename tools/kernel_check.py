"""Ahead-of-time compile check of the fused Triton kernels for a CUDA target, on a machine without a GPU.

    python tools/kernel_check.py --arch sm_90        # or sm_80; --only cend_linear,logit_loss; --list; -v

A developer tool, not part of the installed library: it imports ``fastcae.kernels`` (installed, editable or
not), never the reverse. Every op module of ``fastcae.kernels`` (``MODULES``: ``kernels/<op>.py``) says which
launches its launchers make on a GPU of a given SM count, at the shapes of a CIFAR run (the generator step's
batch 400 and the student step's 512; 10, 100 and 1000 classes; fp32 and bf16 inputs; the BatchNorm inputs of
the CIFAR teachers): ``aot_launches(n_sm)``, a list of ``fastcae.kernels.shared.Launch``, built from the
module's own launch rules, so this file repeats no tiling rule. Each is compiled here for the target's SM count
with ``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))``. The
Triton wheel carries ptxas, so no driver or GPU is needed; the argument specialisation (pointer alignment,
integers divisible by 16, integers equal to 1) is the one the JIT derives from the arguments the launcher
passes.

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
run without ``TRITON_INTERPRET`` (the interpreter replaces the kernels by Python functions, and the launchers
pick the interpreter's configs).
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
from dataclasses import dataclass, field

from fastcae.kernels import OPS
from fastcae.kernels.shared import Launch, Ptr

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


def launches(name: str, arch: int) -> list[Launch]:
    """What the op module ``fastcae.kernels.<name>`` launches on a GPU of target ``sm_<arch>``'s SM count."""
    return importlib.import_module(f"fastcae.kernels.{name}").aot_launches(TARGETS[arch][0])


@dataclass
class Result:
    module: str  # the op module
    kernel: str  # the kernel's name, "(import)" when the module or its launches failed
    config: str  # what the launcher chose, for the table
    shapes: list = field(default_factory=list)
    regs: int | None = None  # CompiledKernel.n_regs
    n_spills: int | None = None  # CompiledKernel.n_spills: local memory words (spills, and libdevice's arrays)
    spill_bytes: int | None = None  # ptxas: bytes of register spill stores
    shared: int | None = None
    seconds: float = 0.0
    error: str | None = None


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
    from fastcae.kernels.shared import interpreting  # live: Triton's own reading, as the kernels take it

    if interpreting():
        print("kernel_check: unset TRITON_INTERPRET (the interpreter compiles nothing)", file=out)
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
                described = launches(name, arch)
            except Exception as e:  # noqa: BLE001 - reported as a failed import, the other modules still run
                results[(name,)] = Result(name, "(import)", "", [""], error=_error_line(e))
                continue
            for launch in described:
                fn = launch.kernel
                types_, constexprs, hints = _specialise(fn, launch.args)
                key = (name, fn.__name__, tuple(types_.items()), tuple(sorted(hints.items())),
                       tuple((k, str(v)) for k, v in constexprs.items()), launch.num_warps, launch.num_stages)
                if key in results:
                    if launch.shape not in results[key].shapes:
                        results[key].shapes.append(launch.shape)
                    continue
                res = results[key] = Result(name, fn.__name__, launch.config, [launch.shape])
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
                        print(f"--- {name}.{fn.__name__} [{launch.config}]\n{e}", file=out)
                res.seconds = time.time() - t0
                if verbose:
                    print(f"  {res.seconds:5.1f}s {name}.{fn.__name__} [{launch.config}]", file=out, flush=True)

    return _report(results, arch, n_sm, max_shared, time.time() - t_start, out)


def _status(res: Result, max_shared: int) -> str:
    if res.error:
        return "FAIL import" if res.kernel == "(import)" else "FAIL compile"
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
        groups.setdefault((res.module, res.kernel, res.config), []).append(res)
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
    p = argparse.ArgumentParser(prog="python tools/kernel_check.py", description=__doc__.split("\n\n")[0])
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
            for launch in launches(name, arch):
                _specialise(launch.kernel, launch.args)  # raises if the arguments went stale
                print(f"{name}.{launch.kernel.__name__}  {launch.config}  {launch.shape}")
        return 0
    return run(arch, only, a.verbose)


if __name__ == "__main__":
    sys.exit(main())
