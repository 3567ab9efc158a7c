"""THE STEPS: one generator step and one student step, built once per run (``Steps``), compiled or not.

Synthesis step: ``generator -> x in [0, 1] -> augment -> teacher (BN hooks on) [+ student] ->
bn * BN + ce * CE + adv * ADV -> backward -> generator optimiser step``.
Student step: ``pool batch -> [CutMix] -> augment -> teacher (no grad) -> student (+ projection head) ->
KD_T + cncl * SupCon -> backward -> student optimiser step``.

Both are free of host syncs (no ``.item()``, no data-dependent Python branches): losses come back as device
tensors that the loop reads only every ``log_every`` steps. Shapes are static (fixed batch sizes), so a
compiled or CUDA-graph-captured version serves the whole run.

Each step is a forward (``generator_loss``, ``student_loss``) and the orchestration around it (zero grads,
BN hooks, backward, optimiser step) in ``Steps``. ``Steps`` is the only place that knows whether compiling
is on: it holds the two forwards, compiled or plain, and the fall-back to the plain ones.

What is compiled, per step: the forward and loss, traced whole (``fullgraph=True``); AOTAutograd derives its
backward graph and inductor compiles both, so ``loss.backward()`` runs compiled code (dynamo does not trace
``.backward()``). The optimiser steps use PyTorch's fused implementations (``fused=True``: one multi-tensor
kernel for all parameters, what inductor would generate) rather than a dynamo-compiled ``optimizer.step``.
Dynamo caches compiled code per code object, and every optimiser's ``step`` shares one: in one process, the
fifth distillation run (or the fifth NAYER generator re-creation) hit dynamo's recompile limit and silently
ran eager from then on (measured with torch 2.14). Fused steps need no guards, so a Python-float learning rate
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

Under torchrun (``fastcae.distributed``) the student step averages the processes' gradients between its
backward and its optimiser step: one all-reduce of all gradients flattened into one buffer. That is what
DistributedDataParallel computes, done outside the compiled graphs because DDP's forward cannot be traced
into them (dynamo, ``fullgraph=True``: "Unsupported method call", torch 2.14), so every compile mode, CUDA
graphs included, stays available with several processes.

If compilation fails (no C++ compiler, an unsupported Python, a dynamo error) the step is re-run eagerly;
when that works the run warns once, naming the error, and stays eager. An error the eager step raises too
is the real error.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import ops
from .augment import Augment, cutmix
from .bn_stats import BNStatsLoss
from .config import DistillConfig, check_compile_mode
from .distributed import World
from .models.features import FeatureTap, features_and_logits, has_feature_api, num_features
from .models.heads import ProjectionHead


@dataclass
class StepContext:
    """What both steps read: the frozen teacher, the student and its head, augmentation, BN statistics."""

    teacher: nn.Module
    student: nn.Module
    head: nn.Module | None
    augment: Augment
    bn: BNStatsLoss | None
    tap: FeatureTap | None = None  # the student's penultimate features, for a student without forward_features


def make_augment(cfg: DistillConfig, mean, std, image_shape, device) -> Augment:
    """The run's augmentation: crop padding H // 8 unless set; flip=None (decided after the warm-up) starts off."""
    padding = cfg.crop_padding if cfg.crop_padding is not None else image_shape[1] // 8
    return Augment(mean, std, padding=padding, flip=bool(cfg.flip)).to(device)


def contrastive_parts(student: nn.Module, cfg: DistillConfig, image_shape, device
                      ) -> tuple[ProjectionHead | None, FeatureTap | None]:
    """CNCL's projection head for ``student`` and, for a student without ``forward_features``, the hook that
    gives its penultimate features (attached per step); ``(None, None)`` when CNCL is off."""
    if cfg.cncl_weight <= 0:
        return None, None
    example = torch.zeros(2, *image_shape, device=device)
    head = ProjectionHead(num_features(student, example), cfg.cncl_dim).to(device)
    tap = None if has_feature_api(student) else FeatureTap(student, attach=False)
    return head, tap


def step_context(cfg: DistillConfig, teacher: nn.Module, student: nn.Module, image_shape, mean, std,
                 device) -> StepContext:
    """The parts both steps read, built one way for the run (``DistillRun``) and for the measurement of its step
    costs (``measure_costs``): augmentation, the teacher's BN statistics loss, CNCL's head and feature tap."""
    augment = make_augment(cfg, mean, std, image_shape, device)
    bn = BNStatsLoss(teacher, cfg.bn_momentum, cfg.bn_first_weight) if cfg.bn_weight > 0 else None
    head, tap = contrastive_parts(student, cfg, image_shape, device)
    return StepContext(teacher, student, head, augment, bn, tap)


def resolve_precision(precision: str | None, device) -> str:
    """The run's precision: the user's, or bf16 on a CUDA GPU with bf16 support and fp32 elsewhere."""
    device = torch.device(device)
    bf16_ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "bf16" and not bf16_ok:
        raise ValueError(f"precision='bf16' was asked for but {device} does not support bf16; use precision='fp32'")
    if precision is None:
        return "bf16" if device.type == "cuda" and bf16_ok else "fp32"
    return precision


def resolve_channels_last(channels_last: bool | None, device) -> bool:
    """Whether the run keeps its models in channels_last memory: the user's choice, else on CUDA (cuDNN's
    bf16 tensor-core convolutions want NHWC) and on a CPU whose torch has oneDNN, whose NHWC convolutions are
    faster too and whose NCHW path has slow cases (5x5 depthwise convolutions on 1x1 maps in torchvision's
    MobileNetV3). Measured on 2 CPU cores (``benchmarks/test_bench_layout.py``, NHWC against NCHW, the fidelity
    suite's pairs): the student step 3.5x, 1.5x and 1.1x faster, the generator step 1.8x, 1.2x and 1.3x, with
    a MobileNetV3, a VGG and a ResNet-8 teacher."""
    device = torch.device(device)
    if channels_last is not None:
        return bool(channels_last)
    return device.type == "cuda" or (device.type == "cpu" and torch.backends.mkldnn.is_available())


def memory_format(cfg: DistillConfig) -> torch.memory_format:
    """The layout the run's models take (``cfg.channels_last``, resolved)."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def autocast(cfg: DistillConfig, device_type: str):
    """The forwards of a step under bf16 autocast when ``cfg.precision`` says so: convolutions and matmuls in
    bf16, master weights, optimiser states and the losses' reductions in fp32 (autocast runs softmax, norms
    and BN statistics in fp32; the fused kernels accumulate in fp32)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def accumulate(total: dict[str, Tensor] | None, terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """``total + terms`` per key, as new tensors (the first is a copy): a compiled step's outputs may live
    in CUDA-graph memory that the next replay overwrites, so nothing kept across steps aliases them."""
    if total is None:
        return {k: v.clone() for k, v in terms.items()}
    return {k: total[k] + v for k, v in terms.items()}


def generator_loss(generator: nn.Module, ctx: StepContext, targets: Tensor, sources: Tensor, cfg: DistillConfig,
                   adv_weight: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The synthesis forward: ``(loss, bn term, ce + adv term, images)``. Run it with ``ctx.bn.active()``
    entered (the hooks collect the teacher's batch statistics); compiled as one graph (``Steps``)."""
    with autocast(cfg, targets.device.type):
        images = generator(targets, sources)
        x = ctx.augment(images)
        t_logits = ctx.teacher(x)
        bn_loss = ctx.bn.loss() if ctx.bn is not None else torch.zeros((), device=x.device)
        # The student only matters for the adversarial term: skip its forward during warm-up.
        s_logits = ctx.student(x) if adv_weight > 0 else t_logits.detach()
        logit = ops.logit_loss(t_logits, s_logits, targets, temperature=1.0, kd_weight=0.0, adv_weight=adv_weight,
                               ce_weight=cfg.ce_weight)
    loss = cfg.bn_weight * bn_loss.float() + logit.float()
    return loss, bn_loss.detach(), logit.detach(), images.detach().float()  # kept images: fp32 in any precision


def student_loss(ctx: StepContext, images: Tensor, labels: Tensor, cfg: DistillConfig
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """The distillation forward on a pool batch: ``(loss, kd term, cncl term)``; compiled as one graph."""
    contrastive = ctx.head is not None and cfg.cncl_weight > 0
    if cfg.cutmix > 0:
        images, labels = cutmix(images, labels, cfg.cutmix)
    with autocast(cfg, images.device.type):
        x = ctx.augment(images)
        with torch.no_grad():
            t_logits = ctx.teacher(x)
        if contrastive:
            features, s_logits = features_and_logits(ctx.student, x, ctx.tap)
        else:
            s_logits = ctx.student(x)
        kd = ops.logit_loss(t_logits, s_logits, labels, temperature=cfg.temperature, kd_weight=1.0, adv_weight=0.0,
                            ce_weight=0.0).float()
        loss = kd
        if contrastive:
            cncl = ops.supcon_loss(ctx.head(features), labels, cfg.cncl_temperature).float()
            loss = loss + cfg.cncl_weight * cncl
        else:
            cncl = torch.zeros((), device=x.device)
    return loss, kd.detach(), cncl.detach()


# --------------------------------------------------------------------------------------- compiling
def resolve_mode(compile, device) -> str:
    """``compile`` (None, a bool or a mode name) on ``device`` -> one of ``fastcae.config.COMPILE_MODES``."""
    cuda = torch.device(device).type == "cuda"
    if compile is None:
        return "cudagraphs" if cuda else "eager"
    if compile is True:
        return "cudagraphs" if cuda else "inductor"
    if compile is False:
        return "eager"
    check_compile_mode(compile)
    if compile == "cudagraphs" and not cuda:
        raise ValueError("compile='cudagraphs' needs a CUDA device; use compile='inductor' on CPU")
    return compile


def _own_code(fn):
    """A copy of ``fn`` with its own code object: dynamo keeps compiled graphs (and counts recompiles) per
    code object, so each run's entries live and die with that run."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _compile_forwards(mode: str) -> dict | None:
    """``{"generator": compiled generator_loss, "student": compiled student_loss}`` for a compiling ``mode``;
    None for "eager" or when ``torch.compile`` itself is unavailable here (it says so once)."""
    if mode == "eager":
        return None
    try:
        ops.preload_kernels()  # an import inside a traced function would break the graph
        backend = "aot_eager" if mode == "aot_eager" else "inductor"
        options = {"mode": "reduce-overhead"} if mode == "cudagraphs" else {}
        return {name: torch.compile(_own_code(fn), fullgraph=True, backend=backend, **options)
                for name, fn in (("generator", generator_loss), ("student", student_loss))}
    except Exception as err:  # noqa: BLE001 - e.g. dynamo refusing this Python version
        warnings.warn(f"fastcae: torch.compile is unavailable here ({type(err).__name__}: {err}); running the "
                      f"steps eagerly. Pass compile=False to skip compiling.", RuntimeWarning, stacklevel=3)
        return None


class Steps:
    """The run's two steps, built once: the forwards (compiled when ``cfg.compile`` asks for it on this
    device, else plain), the orchestration around them, and the fall-back to the plain forwards.

    ``ctx`` is what both steps read; ``cfg`` gives the loss weights, temperatures and precision (fields a
    plan never changes), the compile mode and the CutMix share (``use_cutmix``)."""

    def __init__(self, ctx: StepContext, cfg: DistillConfig, device, world: World = World()):
        self.ctx = ctx
        self.cfg = cfg
        self.world = world
        self.mode = resolve_mode(cfg.compile, device)
        # under torchrun every process starts from rank 0's student and head (the head is built after each
        # process seeded its own stream); the student step then averages their gradients
        self._learning = [p for m in (ctx.student, ctx.head) if m is not None for p in m.parameters()]
        world.share_tensors([t for m in (ctx.student, ctx.head) if m is not None
                             for t in (*m.parameters(), *m.buffers())])
        self._compiled = _compile_forwards(self.mode)
        self._plain = {"generator": generator_loss, "student": student_loss}
        self.active = self._compiled is not None  # False when eager, or after a fall-back to eager
        self.fallback_error: str | None = None
        self.routes: dict[str, set] = {"generator": set(), "student": set()}  # ops each compiled graph runs

    @property
    def effective_mode(self) -> str:
        """How the steps run: the resolved mode, or "eager" if compiling was unavailable or fell back."""
        return self.mode if self.active else "eager"

    @property
    def compiled(self) -> bool:
        """True when the forwards were handed to ``torch.compile`` (their first calls compile them)."""
        return self._compiled is not None

    def use_cutmix(self, share: float) -> None:
        """The CutMix share of the student steps from now on (the one field a plan may change mid-run, once,
        at an epoch's start; a compiled student step recompiles for it)."""
        if share != self.cfg.cutmix:
            self.cfg = self.cfg.replace(cutmix=share)

    def optimizer_options(self) -> dict:
        """Keyword arguments for the run's optimisers: fused (single-kernel) steps when compiling."""
        return {"fused": True} if self._compiled is not None else {}

    # ------------------------------------------------------------------------------------------------
    def generator_step(self, generator: nn.Module, optimizer: torch.optim.Optimizer, targets: Tensor,
                       sources: Tensor, adv_weight: float, after_backward=None
                       ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One generator update. Returns (total loss, {term: value}, the step's images detached);
        ``after_backward`` runs between the backward and the optimiser step (Fast-DFKD's meta-gradient)."""
        ctx = self.ctx

        def forward_backward(loss_fn):
            optimizer.zero_grad(set_to_none=True)
            with ctx.bn.active() if ctx.bn is not None else contextlib.nullcontext():
                loss, bn, logit, images = loss_fn(generator, ctx, targets, sources, self.cfg, adv_weight)
            loss.backward()
            return loss.detach(), {"bn": bn, "ce_adv": logit}, images

        out = self._run("generator", forward_backward)
        if after_backward is not None:
            after_backward()
        optimizer.step()
        return out

    def student_step(self, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """One student update on a pool batch. Returns {"kd": ..., "cncl": ...} as device tensors."""
        ctx = self.ctx

        def forward_backward(loss_fn):
            optimizer.zero_grad(set_to_none=True)
            with ctx.tap.active() if ctx.tap is not None else contextlib.nullcontext():
                loss, kd, cncl = loss_fn(ctx, images, labels, self.cfg)
            loss.backward()
            return {"kd": kd, "cncl": cncl}

        terms = self._run("student", forward_backward)
        self.world.average_gradients(self._learning)  # data parallel: the mean gradient over the global batch
        optimizer.step()
        return terms

    def _run(self, name: str, forward_backward):
        """``forward_backward(loss_fn)`` with the ``name`` forward, compiled while that works. If the compiled
        call raises, it runs again with the plain forward; if that works, the run goes eager for good (an
        error the plain forward raises too is the real error, and propagates)."""
        if not self.active:
            return forward_backward(self._plain[name])
        if self.mode == "cudagraphs":
            # a new iteration: outputs of the previous replay may be overwritten (callers copy what they
            # keep across steps: ``accumulate``)
            torch.compiler.cudagraph_mark_step_begin()
        try:
            with ops.notes_while_tracing() as traced:
                out = forward_backward(self._compiled[name])
        except Exception as err:  # noqa: BLE001 - any compile failure: the plain call decides
            result = forward_backward(self._plain[name])
            self._disable(err)
            return result
        self.routes[name] |= traced  # the ops' routing, as traced (the graph itself records nothing)
        ops.note(self.routes[name])
        return out

    def _disable(self, err: BaseException) -> None:
        if self.active:
            self.active = False
            cause = getattr(err, "inner_exception", None) or err  # dynamo wraps the backend's own error
            lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
            self.fallback_error = f"{type(cause).__name__}: {lines[0][:200] if lines else ''}"
            warnings.warn(
                f"fastcae: torch.compile (mode {self.mode!r}) failed and the run continues eagerly: slower, the same "
                f"computation ({self.fallback_error}). Pass compile=False to skip compiling.",
                RuntimeWarning,
                stacklevel=4,
            )
