"""THE KERNEL SEAM: every loss and fused op of the hot path is called through here.

Each function routes to a fused Triton kernel (``fastcae.kernels``) or to its PyTorch reference
(``fastcae.losses`` / ``fastcae.cend``), which is the one definition of the math:

- ``auto`` (default): CUDA tensors go to Triton; CPU tensors go to the reference, or to Triton when
  ``TRITON_INTERPRET=1`` (the interpreter, used by the tests);
- ``triton``: always the kernels (CPU tensors then need ``TRITON_INTERPRET=1``);
- ``reference``: always plain PyTorch.

Choose with the environment variable ``FASTCAE_KERNELS`` or :func:`set_backend` / :func:`backend`.
If Triton is not installed, ``auto`` quietly uses the references and ``triton`` raises.
"""

from __future__ import annotations

import contextlib
import importlib
import os

from torch import Tensor

from . import losses
from .cend import cend_linear_reference

BACKENDS = ("auto", "triton", "reference")
_backend = os.environ.get("FASTCAE_KERNELS", "auto")
if _backend not in BACKENDS:
    raise ValueError(f"FASTCAE_KERNELS={_backend!r} is not a kernel backend; known: {', '.join(BACKENDS)}")
_kernel_modules: dict[str, object] = {}


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
    for op in ("kd_loss", "bn_stats_loss", "supcon", "cend_linear"):
        _kernel(op)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def uses_triton(op: str, t: Tensor) -> bool:
    """Whether a call of ``op`` on tensor ``t`` goes to the Triton kernel under the current backend."""
    if _backend == "reference":
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


# --- the ops ---------------------------------------------------------------------------------------------


def logit_loss(teacher_logits, student_logits, targets, temperature, kd_weight, adv_weight, ce_weight):
    """``kd_weight * KD_T + adv_weight * ADV + ce_weight * CE(teacher)``: see ``losses.logit_loss``."""
    args = (teacher_logits, student_logits, targets, float(temperature), float(kd_weight), float(adv_weight),
            float(ce_weight))
    if uses_triton("kd_loss", student_logits):
        return _kernel("kd_loss").kd_loss(*args)
    return losses.logit_loss(*args)


def bn_stats_loss(x, running_mean, running_var, ema_mean, ema_var, ema_weight):
    """One teacher BN layer's statistics loss: see ``losses.bn_stats_loss``. Returns (loss, mean, var)."""
    if uses_triton("bn_stats_loss", x):
        return _kernel("bn_stats_loss").bn_stats_loss(x, running_mean, running_var, ema_mean, ema_var, ema_weight)
    return losses.bn_stats_loss(x, running_mean, running_var, ema_mean, ema_var, ema_weight)


def supcon_loss(z, labels, temperature):
    """CNCL's supervised-contrastive loss: see ``losses.supcon_loss``."""
    if uses_triton("supcon", z):
        return _kernel("supcon").supcon(z, labels, float(temperature))
    return losses.supcon_loss(z, labels, float(temperature))


def cend_linear(embeddings, targets, source_ids, magnitudes, scale, noise_state, noise, bn_weight, bn_bias,
                running_mean, running_var, training, momentum, eps, weight, bias):
    """CEND front of the ``cae`` generator: gather + diffuse + BatchNorm1d + first Linear.

    The fused kernel draws the noise in registers from ``noise_state`` (an int64 ``[2]`` device tensor,
    (seed, offset)); the reference takes the same noise precomputed as ``noise [B, D]``
    (``fastcae.cend.counter_noise``), so both paths agree.
    """
    if uses_triton("cend_linear", weight):
        return _kernel("cend_linear").cend_linear(
            embeddings, targets, source_ids, magnitudes, scale, noise_state, bn_weight, bn_bias,
            running_mean, running_var, training, momentum, eps, weight, bias,
        )
    if noise is None or noise.shape != (targets.shape[0], embeddings.shape[1]):
        got = None if noise is None else tuple(noise.shape)
        raise ValueError(f"cend_linear (reference path): noise must be [{targets.shape[0]}, "
                         f"{embeddings.shape[1]}] for this batch, got {got}; call new_batch() first")
    return cend_linear_reference(
        embeddings, targets, source_ids, magnitudes, scale, noise, bn_weight, bn_bias, running_mean,
        running_var, training, momentum, eps, weight, bias,
    )
