"""THE KERNEL SEAM: every loss and fused op of the hot path is called through here.

Each function routes to a fused Triton kernel (``fastcae.kernels``) or to its PyTorch reference
(``fastcae.losses`` / ``fastcae.synthesis.cend``), which is the one definition of the math:

- ``auto`` (default): CUDA tensors go to Triton; CPU tensors go to the reference, or to Triton when
  ``TRITON_INTERPRET=1`` (the interpreter, used by the tests);
- ``triton``: always the kernels (CPU tensors then need ``TRITON_INTERPRET=1``);
- ``reference``: always plain PyTorch.

Choose with the environment variable ``FASTCAE_KERNELS`` or :func:`set_backend` / :func:`backend`.
If Triton is not installed, ``auto`` quietly uses the references and ``triton`` raises.

A fused kernel that fails never takes a run down (``auto``): the first call of an op for a new device and
dtype runs its forward *and backward* once on copies of the inputs (compiling both), and any failure there
or in a later forward (a Triton that cannot compile it, a launch out of resources) sends that op to its
reference for the rest of the process, with one warning naming the kernel and the error. :func:`kernel_report`
says which ops ran fused; ``DistillResult.kernels`` and the profile report carry it. Under ``triton`` the error
is raised instead (the tests and benchmarks must see it).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings

import torch
from torch import Tensor

from . import losses
from .kernels import OPS  # the op list; the package itself imports no Triton
from .synthesis.cend import cend_linear_reference

BACKENDS = ("auto", "triton", "reference")
_backend = os.environ.get("FASTCAE_KERNELS", "auto")
if _backend not in BACKENDS:
    raise ValueError(f"FASTCAE_KERNELS={_backend!r} is not a kernel backend; known: {', '.join(BACKENDS)}")
_kernel_modules: dict[str, object] = {}
try:
    from .kernels.shared import INTERPRET as _INTERPRET
except ImportError:  # no Triton: nothing can interpret
    _INTERPRET = False
_failed: dict[str, str] = {}  # op -> the error that sent it to its reference for the rest of the process
_checked: set[tuple] = set()  # (op, device type, dtypes) whose fused forward and backward ran once
_ran: dict[str, str] = {}  # op -> "fused" or "reference", as last called
_trace_notes: list[set] = []  # collectors opened by ``notes_while_tracing``


@torch._dynamo.assume_constant_result
def _note_traced(op: str, how: str) -> bool:
    """Called once per trace, at trace time, not in the graph (nothing for Dynamo to guard on)."""
    if _trace_notes:
        _trace_notes[-1].add((op, how))
    return True


def _note(op: str, how: str) -> None:
    """Record how ``op`` ran. Inside a trace the record goes to the trace's collector instead: a traced write
    to this module's dict would put guards on its contents, and every graph would recompile as it filled."""
    if torch.compiler.is_compiling():
        _note_traced(op, how)
    else:
        _ran[op] = how


@contextlib.contextmanager
def notes_while_tracing():
    """``with notes_while_tracing() as seen: compiled_fn(...)``: ``seen`` gets the (op, how) pairs of the ops
    that a (re)trace inside the block routed; empty when the call hit a cached graph. The caller keeps them
    per graph and passes them to :func:`note` after each call."""
    seen: set = set()
    _trace_notes.append(seen)
    try:
        yield seen
    finally:
        _trace_notes.pop()


def note(pairs) -> None:
    """Record (op, how) pairs that a compiled graph runs (see :func:`notes_while_tracing`)."""
    for op, how in pairs:
        _ran[op] = how


def set_backend(name: str) -> None:
    """Force the kernel backend for every op: "auto", "triton" or "reference"."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; known: {', '.join(BACKENDS)}")
    _backend = name


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def backend(name: str):
    """``with fastcae.ops.backend("reference"): ...`` runs a block on one backend."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _kernel(op: str):
    """Import ``fastcae.kernels.<op>`` once; None if Triton (or the op) is unavailable."""
    if op not in _kernel_modules:
        try:
            _kernel_modules[op] = importlib.import_module(f"fastcae.kernels.{op}")
        except ImportError as err:  # no triton, or the op is not built yet
            _kernel_modules[op] = err
    mod = _kernel_modules[op]
    return None if isinstance(mod, ImportError) else mod


def preload_kernels() -> None:
    """Import every kernel module now. ``torch.compile`` cannot trace an import, so the compiled steps call
    this before their first trace (the eager path imports lazily, on first use)."""
    for op in OPS:
        _kernel(op)


def _interpreting() -> bool:
    """Triton's own reading of TRITON_INTERPRET (see fastcae.kernels.shared), taken once, as the kernels take
    it. Read here without importing Triton, which may be absent."""
    return _INTERPRET


def uses_triton(op: str, t: Tensor) -> bool:
    """Whether a call of ``op`` on tensor ``t`` goes to the Triton kernel under the current backend."""
    if _backend == "reference" or (_backend == "auto" and op in _failed):
        return False
    mod = _kernel(op)
    if _backend == "triton":
        if mod is None:
            raise RuntimeError(
                f"the kernel backend is 'triton' but fastcae.kernels.{op} cannot be imported "
                f"({_kernel_modules[op]}); install triton or use FASTCAE_KERNELS=reference"
            )
        return True
    return mod is not None and (t.is_cuda or (t.device.type == "cpu" and _interpreting()))


def reset_report() -> None:
    """Forget which ops ran (a new run starts its report); kernels that failed stay on their reference."""
    _ran.clear()


def kernel_report() -> dict[str, str]:
    """Per op called so far in this process: "fused", "reference", or "reference (fused kernel failed: ...)"."""
    return {op: (f"reference (fused kernel failed: {_failed[op]})" if op in _failed else how)
            for op, how in sorted(_ran.items())}


def _fail(op: str, err: BaseException) -> None:
    first = str(err).strip().splitlines()
    _failed[op] = f"{type(err).__name__}: {first[0][:300] if first else ''}"
    warnings.warn(f"fastcae: the fused kernel {op} failed ({_failed[op]}); {op} runs on its PyTorch reference "
                  f"from now on (slower, same results). FASTCAE_KERNELS=reference silences this.",
                  RuntimeWarning, stacklevel=3)


def _probe(op: str, fused, args: tuple) -> None:
    """Run ``fused`` forward and backward once on detached copies of ``args`` (nothing the caller holds is
    touched: in-place running-statistic updates land on the copies), so a kernel that cannot compile or
    launch fails here, not inside the caller's backward."""
    copies, leaves = [], []
    for a in args:
        if isinstance(a, Tensor):
            c = a.detach().clone()
            if a.requires_grad and c.is_floating_point():
                c.requires_grad_(True)
                leaves.append(c)
            copies.append(c)
        else:
            copies.append(a)
    with torch.enable_grad():
        out = fused(*copies)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if isinstance(o, Tensor) and o.requires_grad]
        if leaves and outs:
            torch.autograd.grad(sum(o.float().sum() for o in outs), leaves, allow_unused=True)


def _run(op: str, fused, reference, args: tuple, key_tensor: Tensor, loss: bool = True):
    """``fused(*args)`` with the fall-back described in the module docstring; ``reference(*args)`` otherwise.
    A loss's reference runs with autocast off (bf16 runs): its reductions, softmaxes and the similarity matmul
    of SupCon stay fp32, as the fused kernels accumulate in fp32 whatever their inputs."""
    if loss:
        plain = reference

        def reference(*a):
            with torch.autocast(key_tensor.device.type, enabled=False):
                return plain(*a)

    if not uses_triton(op, key_tensor):
        _note(op, "reference")
        return reference(*args)
    if _backend == "triton" or torch.compiler.is_compiling():  # raise; or inside a trace, where the compiled
        _note(op, "fused")  # step's own eager fall-back re-runs this function outside the trace
        return fused(*args)
    tensors = [a for a in args if isinstance(a, Tensor)]
    key = (op, key_tensor.device.type, tuple(a.dtype for a in tensors),
           torch.is_grad_enabled() and any(a.requires_grad for a in tensors))
    try:
        if key not in _checked:
            _probe(op, fused, args)
            _checked.add(key)
        out = fused(*args)
    except Exception as err:  # any compile or launch failure: the reference computes the same
        if isinstance(err, (ValueError, TypeError, NotImplementedError)):
            raise  # bad input is the caller's to fix, not a kernel failure
        _fail(op, err)
        _note(op, "reference")
        return reference(*args)
    _note(op, "fused")
    return out


# --- the ops ---------------------------------------------------------------------------------------------


def logit_loss(teacher_logits, student_logits, targets, *, temperature, kd_weight, adv_weight, ce_weight):
    """``kd_weight * KD_T + adv_weight * ADV + ce_weight * CE(teacher)``: see ``losses.logit_loss``."""
    args = (teacher_logits, student_logits, targets, float(temperature), float(kd_weight), float(adv_weight),
            float(ce_weight))
    return _run("logit_loss", lambda *a: _named_weights(_kernel("logit_loss").logit_loss, a),
                lambda *a: _named_weights(losses.logit_loss, a), args, student_logits)


def _named_weights(loss, args: tuple):
    """``loss`` on ``_run``'s one tuple of arguments (it probes, copies and retries them as one), the four
    weights passed by name as the losses take them."""
    t, s, y, temperature, kd_weight, adv_weight, ce_weight = args
    return loss(t, s, y, temperature=temperature, kd_weight=kd_weight, adv_weight=adv_weight, ce_weight=ce_weight)


def bn_stats_loss(x, running_mean, running_var, ema_mean, ema_var, ema_weight):
    """One teacher BN layer's statistics loss: see ``losses.bn_stats_loss``. Returns (loss, mean, var)."""
    return _run("bn_stats_loss", lambda *a: _kernel("bn_stats_loss").bn_stats_loss(*a), losses.bn_stats_loss,
                (x, running_mean, running_var, ema_mean, ema_var, ema_weight), x)


def supcon_loss(z, labels, temperature):
    """CNCL's supervised-contrastive loss: see ``losses.supcon_loss``."""
    return _run("supcon_loss", lambda *a: _kernel("supcon_loss").supcon_loss(*a), losses.supcon_loss,
                (z, labels, float(temperature)), z)


def cend_linear(embeddings, targets, source_ids, magnitudes, scale, noise_state, noise, bn_weight, bn_bias,
                running_mean, running_var, *, training, momentum, eps, weight, bias):
    """CEND front of the ``cae`` generator: gather + diffuse + BatchNorm1d + first Linear.

    The fused kernel draws the noise in registers from ``noise_state`` (an int64 ``[2]`` device tensor,
    (seed, offset)); the reference takes the same noise precomputed as ``noise [B, D]``
    (``fastcae.synthesis.cend.counter_noise``), so both paths agree.
    """
    args = (embeddings, targets, source_ids, magnitudes, scale, noise_state, noise, bn_weight, bn_bias, running_mean,
            running_var, training, momentum, eps, weight, bias)
    return _run("cend_linear", _cend_linear_fused, _cend_linear_reference, args, weight, loss=False)


def _cend_linear_fused(embeddings, targets, source_ids, magnitudes, scale, noise_state, noise, bn_weight, bn_bias,
                       running_mean, running_var, training, momentum, eps, weight, bias):
    return _kernel("cend_linear").cend_linear(
        embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias,
        running_mean, running_var, training=training, momentum=momentum, eps=eps, weight=weight, bias=bias,
    )


def _cend_linear_reference(embeddings, targets, source_ids, magnitudes, scale, noise_state, noise, bn_weight,
                           bn_bias, running_mean, running_var, training, momentum, eps, weight, bias):
    if noise is None and noise_state is not None:  # the fused kernel failed after the caller skipped the noise
        from .synthesis.cend import counter_noise

        seed, offset = (int(v) for v in noise_state.tolist())
        noise = counter_noise(seed, offset, source_ids, embeddings.shape[1])
    if noise is None or noise.shape != (targets.shape[0], embeddings.shape[1]):
        got = None if noise is None else tuple(noise.shape)
        raise ValueError(f"cend_linear (reference path): noise must be [{targets.shape[0]}, "
                         f"{embeddings.shape[1]}] for this batch, got {got}; call new_batch() first")
    return cend_linear_reference(
        embeddings, targets, source_ids, magnitudes, scale, noise, bn_weight, bn_bias, running_mean,
        running_var, training=training, momentum=momentum, eps=eps, weight=weight, bias=bias,
    )
