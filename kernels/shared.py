"""What every kernel module shares, in one place (each op module takes these from here and re-derives none).

- **The runtime**: whether Triton is interpreting, ``INTERPRET`` (``TRITON_INTERPRET``, read as Triton reads
  it, once at import as the ``@triton.jit`` decorators read it; the kernel files used to read it each their
  own way, and one took only "1", so ``TRITON_INTERPRET=true``, which Triton honours, sent CPU tensors to a
  launcher that refused them), and the SM count a launcher sizes its grid for, ``sm_count``.
- **Accumulation dtypes**: every kernel accumulates in fp32 whatever its inputs (bf16 and fp16 included),
  in fp64 when an input is fp64 (the gradcheck path), and returns its statistics in that dtype:
  ``acc_dtype`` (the torch dtype) and ``tl_dtype`` (the matching ``ACC`` constexpr).
- **Input checks**: ``check_dtype`` and ``check_device`` raise ``UnsupportedTensorError`` with one message
  shape, ``"<op>: <name> must be <what is supported>; <what it got> is not supported"``, for a tensor whose
  dtype or device a kernel cannot take. ``FLOAT_DTYPES`` are the floating dtypes every kernel takes.
- **Launch descriptions** for the ahead-of-time compile check (``tools/kernel_check.py``, outside the
  package): every op module's ``aot_launches(n_sm)`` returns the launches (``Launch``, with ``Ptr`` for a
  pointer argument) its launchers make on a GPU of ``n_sm`` SMs at the shapes of a CIFAR run (``AOT_*``),
  from its own launch rules, so the check restates none.
- **Round-to-nearest division and square root** for the loss scaling and normalisation. On a GPU, Triton
  compiles fp32 ``a / b`` and ``tl.sqrt`` to approximate instructions (``div.full.f32``, up to 2 ulp;
  ``sqrt.approx.f32``). Where a loss is scaled or normalised (KD's ``w / z`` next to a cancelling
  log-sum-exp difference, which T^2 = 400 then multiplies; the BN loss's norms and their reciprocals;
  SupCon's means) the kernels use ``div_rn`` / ``sqrt_rn``: IEEE round-to-nearest, as the PyTorch references
  compute. fp64 (the gradcheck path) is round-to-nearest already, and Triton's ``div_rn`` / ``sqrt_rn``
  accept fp32 only.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

# --- runtime ---------------------------------------------------------------------------------------------


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter, by Triton's own reading of ``TRITON_INTERPRET``."""
    try:
        from triton import knobs  # Triton >= 3.4: "1", "true", "on", "yes"

        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):  # Triton 3.2/3.3, which read only "1"
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


INTERPRET = interpreting()  # read once, at import, as the @triton.jit decorators are


# What a launcher that sizes its grid by SMs takes for a non-CUDA device (the interpreter on CPU): few, large
# programs, since the interpreter's cost is per program and per op.
INTERPRETER_SM_COUNT = 2


@functools.lru_cache(maxsize=None)
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device) -> int:
    """Streaming multiprocessors of a CUDA ``device`` (cached per device); ``INTERPRETER_SM_COUNT`` for any
    other device (only the interpreter launches kernels on one)."""
    device = torch.device(device)
    if device.type != "cuda":
        return INTERPRETER_SM_COUNT
    return _sms(device.index if device.index is not None else torch.cuda.current_device())


# --- accumulation dtypes ---------------------------------------------------------------------------------

_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def acc_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype a kernel accumulates and returns its statistics in: fp64 if one of ``tensors`` is fp64 (the
    gradcheck path), else fp32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def tl_dtype(dtype: torch.dtype) -> tl.dtype:
    """The Triton dtype of an accumulation dtype (a kernel's ``ACC`` constexpr)."""
    return _TL_DTYPES[dtype]


# --- input checks ----------------------------------------------------------------------------------------

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)  # fp64: computed in fp64
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


class UnsupportedTensorError(TypeError, ValueError):
    """A tensor whose dtype or device a kernel does not take (torch's legacy tensor types name both): a
    ``TypeError`` that is also a ``ValueError``, which some kernels raised for these before the check was
    shared. ``fastcae.ops`` passes both to the caller (bad input) instead of falling back to the reference."""


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a floating dtype ("fp32", "bf16", ...), Triton's name for its pointer element type."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _names(dtypes) -> str:
    names = [dtype_name(d) for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_dtype(op: str, name: str, tensor: Tensor, allowed=FLOAT_DTYPES, wanted: str | None = None) -> None:
    """Raise ``UnsupportedTensorError`` unless ``tensor.dtype`` is one of ``allowed`` (dtypes, or a predicate
    on the dtype). ``wanted`` says what is supported in the message (default: the names of ``allowed``)."""
    ok = allowed(tensor.dtype) if callable(allowed) else tensor.dtype in allowed
    if not ok:
        raise UnsupportedTensorError(f"{op}: {name} must be {wanted or _names(allowed)}; {tensor.dtype} is not "
                                     f"supported")


def check_device(op: str, name: str, tensor: Tensor, reference: str) -> None:
    """Raise ``UnsupportedTensorError`` unless the kernels can run on ``tensor``'s device: CUDA, or the CPU
    under the interpreter. ``reference`` names the PyTorch reference to use instead."""
    if not (tensor.is_cuda or (INTERPRET and tensor.device.type == "cpu")):
        raise UnsupportedTensorError(
            f"{op}: {name} must be a CUDA tensor (or a CPU tensor with TRITON_INTERPRET=1); {tensor.device} is "
            f"not supported (use {reference} there)"
        )


# --- launch descriptions (the ahead-of-time compile check) ---------------------------------------------

# The shapes of a CIFAR run that every op module describes its launches at (each adds its own: feature
# width, BN inputs, embedding width): both steps' batches, 10 to 1000 classes, fp32 and bf16 inputs.
AOT_GEN_BATCH, AOT_STUDENT_BATCH = 400, 512  # DistillConfig.synth_batch_size, .student_batch_size
AOT_BATCHES = (AOT_GEN_BATCH, AOT_STUDENT_BATCH)
AOT_CLASSES = (10, 100, 1000)
AOT_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class Ptr:
    """A pointer argument to a tensor of element type ``ty`` (Triton's name: fp32, bf16, i64, ...), allocated
    by torch (16-byte aligned)."""

    ty: str


@dataclass
class Launch:
    """One launch a launcher makes: the ``@triton.jit`` function, every kernel argument by name (``Ptr``, int,
    float, or the constexpr value) and the launch options, as the JIT would get them."""

    kernel: object  # the @triton.jit function
    args: dict
    num_warps: int
    num_stages: int | None  # None: Triton's default (the launcher passes none)
    config: str  # what the launcher chose (block sizes, flags), for the check's table
    shape: str  # the problem it was chosen for


# --- round-to-nearest arithmetic -------------------------------------------------------------------------


@triton.jit
def div_rn(a, b):
    """``a / b`` rounded to nearest (fp32 and fp64)."""
    if a.dtype.is_fp64():
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def sqrt_rn(x):
    """``sqrt(x)`` rounded to nearest (fp32 and fp64)."""
    if x.dtype.is_fp64():
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)
