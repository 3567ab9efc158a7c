"""THE COMPILED STEPS: ``torch.compile`` around the two steps of ``fastcae.steps``, CUDA graphs on a GPU.

What is compiled, per step (generator and student): the forward and loss (``steps.generator_loss``,
``steps.student_loss``), traced whole (``fullgraph=True``); AOTAutograd derives its backward graph and
inductor compiles both, so ``loss.backward()`` runs compiled code (dynamo does not trace ``.backward()``).

The optimiser steps use PyTorch's fused implementations (``fused=True``: one multi-tensor kernel for all
parameters, what inductor would generate) rather than a dynamo-compiled ``optimizer.step``. Dynamo caches
compiled code per code object, and every optimiser's ``step`` shares one: in one process, the fifth
distillation run (or the fifth NAYER generator re-creation) hit dynamo's recompile limit and silently ran
eager from then on (measured with torch 2.14). Fused steps need no guards, so a Python-float learning rate
(the per-epoch cosine schedule) never recompiles anything.

Modes (``distill(compile=...)``, ``DistillConfig.compile``):

- ``"cudagraphs"``: inductor with ``mode="reduce-overhead"``; the forward and backward graphs are captured
  once and replayed as CUDA graphs (one launch per graph instead of hundreds). ``True`` on CUDA, the default.
- ``"inductor"``: inductor without graphs. ``True`` on CPU.
- ``"aot_eager"``: dynamo + AOTAutograd running plain ATen ops; for debugging numerics, compiles in seconds.
- ``"eager"``: the plain functions. ``False``, and the default on CPU (inductor's C++ builds take minutes
  there, more than a short run gains).

Recompiles are bounded by what actually changes: the adversarial weight (0 in warm-up, then fixed) gives
the generator forward two graphs; a re-created generator (``g_life``) and new batches reuse them. Each run
compiles its own copy of the two forwards (``_own_code``), so runs in one process never share a cache that
fills up with guards on models that no longer exist.

If compilation fails (no C++ compiler, an unsupported Python, a dynamo error) the step is re-run eagerly;
when that works the run warns once, naming the error, and stays eager. An error the eager step raises too
is the real error.
"""

from __future__ import annotations

import types
import warnings

import torch

from . import ops, steps

MODES = ("eager", "inductor", "cudagraphs", "aot_eager")


def resolve_mode(compile, device) -> str:
    """``compile`` (None, a bool or a mode name) on ``device`` -> one of ``MODES``."""
    cuda = torch.device(device).type == "cuda"
    if compile is None:
        return "cudagraphs" if cuda else "eager"
    if compile is True:
        return "cudagraphs" if cuda else "inductor"
    if compile is False:
        return "eager"
    if compile not in MODES:
        raise ValueError(f"compile={compile!r} is not a compile mode; use True, False, None (auto) or one of "
                         f"{', '.join(MODES)}")
    if compile == "cudagraphs" and not cuda:
        raise ValueError("compile='cudagraphs' needs a CUDA device; use compile='inductor' on CPU")
    return compile


def make_compiled(mode: str) -> "CompiledSteps | None":
    """``CompiledSteps(mode)``, or None (eager) for ``"eager"`` or when ``torch.compile`` itself is
    unavailable here (it says so once)."""
    if mode == "eager":
        return None
    try:
        return CompiledSteps(mode)
    except Exception as err:  # noqa: BLE001 - e.g. dynamo refusing this Python version
        warnings.warn(f"fastcae: torch.compile is unavailable here ({type(err).__name__}: {err}); running the "
                      f"steps eagerly. Pass compile=False to skip compiling.", RuntimeWarning, stacklevel=2)
        return None


def _own_code(fn):
    """A copy of ``fn`` with its own code object: dynamo keeps compiled graphs (and counts recompiles) per
    code object, so each run's entries live and die with that run."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def optimizer_options(compiled: "CompiledSteps | None") -> dict:
    """Keyword arguments for the run's optimisers: fused (single-kernel) steps when compiling."""
    return {"fused": True} if compiled is not None else {}


class CompiledSteps:
    """The two compiled forwards, and the fall-back to eager. ``mode`` is one of ``MODES``, not "eager"
    (an eager run uses the plain functions and no ``CompiledSteps``)."""

    def __init__(self, mode: str):
        if mode not in MODES or mode == "eager":
            raise ValueError(f"CompiledSteps needs a compiling mode ({', '.join(MODES[1:])}), got {mode!r}")
        self.mode = mode
        ops.preload_kernels()  # an import inside a traced function would break the graph
        backend = "aot_eager" if mode == "aot_eager" else "inductor"
        options = {"mode": "reduce-overhead"} if mode == "cudagraphs" else {}
        self.generator_loss = torch.compile(_own_code(steps.generator_loss), fullgraph=True, backend=backend,
                                            **options)
        self.student_loss = torch.compile(_own_code(steps.student_loss), fullgraph=True, backend=backend,
                                          **options)
        self.active = True  # False after a fall-back to eager
        self.fallback_error: str | None = None
        self.routes: dict[str, set] = {"generator_loss": set(), "student_loss": set()}  # ops each graph runs

    def run(self, name: str, forward_backward):
        """``forward_backward(loss_fn)`` with the compiled ``name`` forward ("generator_loss" or
        "student_loss"). If that raises, it runs again with the eager ``steps.<name>``; if that works, the
        run goes eager for good (an error the eager forward raises too is the real error, and propagates)."""
        if not self.active:
            return forward_backward(getattr(steps, name))
        if self.mode == "cudagraphs":
            # a new iteration: outputs of the previous replay may be overwritten (callers copy what they
            # keep across steps: ``steps.accumulate``)
            torch.compiler.cudagraph_mark_step_begin()
        try:
            with ops.notes_while_tracing() as traced:
                out = forward_backward(getattr(self, name))
        except Exception as err:  # noqa: BLE001 - any compile failure: the eager call decides
            result = forward_backward(getattr(steps, name))
            self.disable(err)
            return result
        self.routes[name] |= traced  # the ops' routing, as traced (the graph itself records nothing)
        ops.note(self.routes[name])
        return out

    def disable(self, err: BaseException) -> None:
        if self.active:
            self.active = False
            cause = getattr(err, "inner_exception", None) or err  # dynamo wraps the backend's own error
            lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
            self.fallback_error = f"{type(cause).__name__}: {lines[0][:200] if lines else ''}"
            warnings.warn(
                f"fastcae: torch.compile (mode {self.mode!r}) failed and the run continues eagerly: slower, the same "
                f"computation ({self.fallback_error}). Pass compile=False to skip compiling.",
                RuntimeWarning,
                stacklevel=3,
            )
