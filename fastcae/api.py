"""``distill()``: validate the inputs early with errors that name the problem, build the parts, run, return.

Everything that can be checked before the long work starts is checked here: the class count against the
teacher's output width, the image shape against the generator and both networks, mean/std lengths,
BatchNorm layers in the teacher, the evaluation set, option names and values, a checkpoint to resume.
The stages, in order: ``_resolve`` -> ``_validate`` -> ``_embed`` -> ``_schedule`` -> ``_run``, with a ``_Job``
carrying what each resolved (the run's precision and memory layout are decided once, in ``_resolve``).
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from . import distributed, ops
from .bn_stats import teacher_bn_layers
from .config import DistillConfig
from .datasets import DATASETS
from .defaults import synthesis_defaults
from .health import HEALTH_FIELDS
from .loop import DistillRun, EvalSet, freeze, train
from .measure import bf16_pays, cpu_has_native_bf16, measure_costs
from .plan import describe_estimate, explicit_schedule, plan_schedule, planned_cutmix
from .presets import Preset, get_preset, list_presets, make_config
from .result import DistillResult
from .steps import memory_format, resolve_channels_last, resolve_precision
from .synthesis.embeddings import class_embeddings
from .utils import eval_mode

# Without a pair preset, distill assumes CIFAR-10-like input unless told otherwise (the historical default).
DEFAULT_IMAGE_SHAPE = DATASETS["cifar10"].image_shape
DEFAULT_MEAN = DATASETS["cifar10"].mean
DEFAULT_STD = DATASETS["cifar10"].std


def teacher_input(teacher: nn.Module) -> dict:
    """What ``teacher.pretrained_cfg`` (timm's attribute, which fastcae's model specs set too) says of the input
    it was trained on: ``input_size``, ``mean``, ``std`` and ``class_names`` where known (a ``dataset`` key names
    a dataset of ``fastcae.datasets``). Why: a public teacher's normalisation and classes are facts of its
    training, and a user who loads it by name should not have to look them up again. Empty when unknown."""
    cfg = getattr(teacher, "pretrained_cfg", None)
    if not isinstance(cfg, dict):
        return {}
    out = {k: tuple(cfg[k]) for k in ("input_size", "mean", "std") if cfg.get(k) is not None}
    info = DATASETS.get(str(cfg.get("dataset", "")).lower())
    names = cfg.get("class_names") or cfg.get("label_names") or (info.class_names if info is not None else None)
    if names:
        out["class_names"] = tuple(names)
    return out


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here; use device='cpu'")
    return device


def _check_image_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
    c, h, w = shape
    if h % 4 or w % 4:
        raise ValueError(f"image_shape {shape}: the generator upsamples 4x, so height and width must be "
                         f"multiples of 4 (e.g. 32x32, 64x64, 224x224)")
    return shape


def _check_norm(name: str, values, channels: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values for images with {channels} channels: give one per channel")
    if name == "std" and min(values) <= 0:
        raise ValueError(f"std must be positive per channel, got {values}")
    return values


@torch.no_grad()
def _probe_classifier(model: nn.Module, role: str, image_shape, device) -> int:
    """Run ``model`` on two blank images; return its output width or explain why it cannot be used."""
    with eval_mode(model):
        try:
            out = model(torch.zeros(2, *image_shape, device=device))
        except Exception as err:  # re-raised below, with the user's context
            raise ValueError(f"the {role} cannot take images of shape {tuple(image_shape)}: "
                             f"{type(err).__name__}: {err}") from err
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the {role} must return logits [batch, num_classes]; it returned {shape}")
    return int(out.shape[1])


def _eval_set(eval_data, image_shape, num_classes) -> EvalSet | None:
    if eval_data is None:
        return None
    if isinstance(eval_data, EvalSet):
        images, labels = eval_data.images, eval_data.labels
    elif isinstance(eval_data, (tuple, list)) and len(eval_data) == 2 and isinstance(eval_data[0], Tensor):
        images, labels = eval_data
    elif isinstance(eval_data, torch.utils.data.Dataset):
        pairs = [eval_data[i] for i in range(len(eval_data))]
        images = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        labels = torch.as_tensor([int(p[1]) for p in pairs])
    else:
        raise TypeError("eval_data must be (images, labels) tensors, an EvalSet, or a Dataset of (image, label)")
    labels = torch.as_tensor(labels).long()
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"eval_data images have shape {tuple(images.shape[1:])}, the run uses {tuple(image_shape)}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"eval_data has {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"eval_data labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        # stacklevel: the user's call of distill (distill -> _validate -> _eval_set)
        warnings.warn("eval_data images should be in [0, 1], not normalised: fastcae applies mean/std itself",
                      stacklevel=4)
    return EvalSet(images.float(), labels)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    class_names: Sequence[str] | None = None,
    *,
    image_shape=None,
    mean=None,
    std=None,
    num_classes: int | None = None,
    preset: str | None = None,
    config: DistillConfig | None = None,
    eval_data=None,
    checkpoint_dir: str | Path | None = None,
    text_encoder=None,
    profile: str | Path | None = None,
    **options,
) -> DistillResult:
    """Distil ``student`` from ``teacher`` without data (CAE-DFKD by default).

    Args:
        teacher, student: classifiers ``[B, C, H, W] -> [B, num_classes]``. The teacher is frozen and put in
            eval mode; it needs BatchNorm2d layers for the BN-statistics loss (or pass ``bn_weight=0``).
        class_names: one name per teacher output (prompts for the text encoder). If None, the class
            indices serve as names (``num_classes`` or the teacher's output width).
        image_shape, mean, std: what the teacher was trained on (images in [0, 1], then normalised). Left
            out, they come from a pair preset, else CIFAR-10's (3, 32, 32) and mean/std.
        preset: named defaults (``fastcae.presets.list_presets()``): a config-only preset (a schedule) or a
            teacher -> student pair (``list_presets(pairs=True)``), which also supplies class names, image shape
            and mean/std, and checks the teacher's output width; ``config``: a full ``DistillConfig``.
        eval_data: optional labelled set, ``(images in [0, 1], labels)``, scored after each epoch.
        checkpoint_dir: save after each epoch there, atomically; resume from it if it holds a checkpoint.
        profile: write a throughput report there (JSON, with a Markdown summary and a PNG plot beside it):
            images/s per phase and, where NVML can read the GPU, utilisation, memory, power and energy.
        text_encoder: a name ("auto", "clip", "minilm", "sentence-transformers:<model>", "random"), an encoder
            object, or a ``[num_classes, dim]`` tensor of your own embeddings.
        **options: any ``DistillConfig`` field, e.g. ``paradigm="nayer"``, ``epochs=200``, ``flip=False``,
            ``device="cuda"``, ``seed=1``, ``compile=True`` (``fastcae.steps``: torch.compile the steps, under
            CUDA graphs on a GPU, the default there; eager on CPU unless asked).
    """
    started = time.perf_counter()  # the budget counts from here: step-cost measurement included
    job = _resolve(teacher, student, image_shape, mean, std, preset, config, text_encoder, options)
    job.checkpoint_dir, job.started = checkpoint_dir, started
    _validate(job, class_names, num_classes, eval_data)
    _embed(job)
    # rank 0 measures and plans; every process follows that one plan (so all stop at the same step)
    job.cfg = job.world.decide(lambda: _schedule(job))
    if not job.world.main:
        job.cfg = job.cfg.replace(progress=False)  # rank 0 prints
    return _run(job, profile)


@dataclass
class _Job:
    """One ``distill`` call, resolved once and carried through its stages: ``_resolve`` (the config, with the
    run's precision and channels_last decided for its device, and the layout they give; the input; the
    processes) -> ``_validate`` (the networks against the input: class count and names, evaluation set) ->
    ``_embed`` (the class embeddings) -> ``_schedule`` (the config the run follows) -> ``_run``."""

    cfg: DistillConfig
    explicit: bool  # the user chose the schedule (a preset, a config or a schedule field)
    planned: bool  # a schedule is planned for cfg.max_seconds
    given: set[str]  # the options the user passed (planning keeps them)
    encoder: object  # a tensor or encoder object given as text_encoder (not a config value), else None
    teacher: nn.Module
    student: nn.Module
    pair: Preset | None  # the pair preset, if one was named
    known: dict  # what the teacher says it was trained on (teacher_input)
    used: list[str]  # which of those the run takes (said once the class names are known)
    image_shape: tuple  # as given or defaulted; checked by _validate
    mean: tuple
    std: tuple
    device: torch.device
    world: distributed.World
    layout: torch.memory_format  # the models' memory format, from the resolved cfg.channels_last
    checkpoint_dir: str | Path | None = None
    started: float = 0.0  # when distill was called: the budget counts from there
    width: int = 0  # the teacher's output width (the class count), set by _validate
    class_names: list[str] = field(default_factory=list)
    evalset: EvalSet | None = None
    embeddings: Tensor | None = None


def _resolve(teacher, student, image_shape, mean, std, preset, config, text_encoder, options: dict) -> _Job:
    """The config, the input (given, else a pair preset's, else the teacher's pretrained_cfg, else CIFAR-10's),
    the device and the processes, and the run's precision and memory layout, each decided here once."""
    encoder = None
    if text_encoder is not None:
        if isinstance(text_encoder, str):
            options["text_encoder"] = text_encoder
        else:
            encoder = text_encoder  # a tensor or an encoder object: not a config value
            options["text_encoder"] = "tensor" if isinstance(text_encoder, Tensor) else getattr(
                text_encoder, "name", type(text_encoder).__name__)
    cfg = make_config(preset, config, **options)
    explicit = explicit_schedule(preset, config, options)
    planned = cfg.max_seconds is not None and not explicit
    pair = get_preset(preset) if preset in list_presets(pairs=True) else None
    if pair is not None:
        image_shape = pair.image_shape if image_shape is None else image_shape
        mean = pair.mean if mean is None else mean
        std = pair.std if std is None else std
    known = teacher_input(teacher)  # what a zoo, timm or torchvision teacher says it was trained on
    asked = {"input_size": image_shape, "mean": mean, "std": std}
    used = [k for k, v in asked.items() if v is None and k in known]
    image_shape = known.get("input_size", DEFAULT_IMAGE_SHAPE) if image_shape is None else image_shape
    mean = known.get("mean", DEFAULT_MEAN) if mean is None else mean
    std = known.get("std", DEFAULT_STD) if std is None else std
    device, world = _place(cfg, planned)
    # recorded: the run's real precision and memory format (the loop and the steps read them from cfg)
    cfg = cfg.replace(precision=resolve_precision(cfg.precision, device),
                      channels_last=resolve_channels_last(cfg.channels_last, device))
    return _Job(cfg=cfg, explicit=explicit, planned=planned, given=set(options), encoder=encoder, teacher=teacher,
                student=student, pair=pair, known=known, used=used, image_shape=image_shape, mean=mean, std=std,
                device=device, world=world, layout=memory_format(cfg))


def _place(cfg: DistillConfig, planned: bool) -> tuple[torch.device, distributed.World]:
    """The run's device and this process's place among the processes (one, outside torchrun)."""
    device = _resolve_device(cfg.device)
    world = distributed.join(device.type)  # under torchrun: this process's rank (the group starts here if need be)
    if world.distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)  # one GPU per process
    if not planned:  # a given schedule's global batches must divide among the processes: say so now
        for key in ("student_batch_size", "synth_batch_size"):
            distributed.local_share(getattr(cfg, key), world, key)
    if world.distributed and world.main:
        _say(cfg, f"fastcae: {world.size} processes ({distributed.backend()}); each synthesises with its "
                  f"own generator and takes 1/{world.size} of every global batch")
    return device, world


def _validate(job: _Job, class_names, num_classes, eval_data) -> None:
    """Everything that can be checked before the long work: the input, both networks on it (moved to the
    run's device and layout), the class names and count, BatchNorm layers for the BN loss, the evaluation set."""
    job.image_shape = _check_image_shape(job.image_shape)
    job.mean = _check_norm("mean", job.mean, job.image_shape[0])
    job.std = _check_norm("std", job.std, job.image_shape[0])
    teacher, student = job.teacher, job.student
    if not isinstance(teacher, nn.Module) or not isinstance(student, nn.Module):
        raise TypeError("teacher and student must be torch.nn.Module classifiers")
    # before the step costs are measured: the run's layout is what they time
    teacher.to(job.device, memory_format=job.layout)
    student.to(job.device, memory_format=job.layout)
    job.width = _probe_classifier(teacher, "teacher", job.image_shape, job.device)
    job.class_names = _class_names(job, class_names, num_classes)
    student_width = _probe_classifier(student, "student", job.image_shape, job.device)
    if student_width != job.width:
        raise ValueError(f"the student outputs {student_width} classes, the teacher {job.width}: they must match")
    if job.cfg.bn_weight > 0:
        teacher_bn_layers(teacher)  # fail now, before embeddings and models are built
    job.evalset = _eval_set(eval_data, job.image_shape, job.width)


def _class_names(job: _Job, class_names, num_classes) -> list[str]:
    """One name per teacher output: given, else the pair preset's, else the teacher's, else the indices."""
    width, pair, known = job.width, job.pair, job.known
    if pair is not None:
        if width != pair.num_classes:
            raise ValueError(f"preset {pair.name!r} is for {pair.dataset.name} with {pair.num_classes} classes but "
                             f"the teacher outputs {width}: use the preset of the dataset the teacher was trained on "
                             f"(fastcae.presets.list_presets(pairs=True))")
        if class_names is None:
            class_names = pair.prompt_names
    if class_names is None and len(known.get("class_names", ())) == width:
        class_names = [str(n).replace("_", " ") for n in known["class_names"]]
        job.used.append("class names")
    if job.used and pair is None:
        _say(job.cfg, f"fastcae: from the teacher's pretrained_cfg: {', '.join(job.used)} "
                      f"({'x'.join(map(str, job.image_shape))}, mean {job.mean}, std {job.std})")
    if class_names is not None:
        class_names = [str(n) for n in class_names]
        if len(class_names) != width:
            raise ValueError(f"{len(class_names)} class names given but the teacher outputs {width} classes")
    if num_classes is not None and num_classes != width:
        raise ValueError(f"num_classes={num_classes} but the teacher outputs {width} classes")
    if class_names is None:
        class_names = [str(i) for i in range(width)]
    return class_names


def _embed(job: _Job) -> None:
    """The class embeddings (the user's tensor or encoder, else the configured text encoder), the same on every
    process."""
    cfg = job.cfg
    if job.encoder is not None:
        embeddings = class_embeddings(job.class_names, encoder=job.encoder, prompt=cfg.prompt,
                                      cache_dir=cfg.embedding_cache)
    else:
        embeddings = class_embeddings(job.class_names, encoder=cfg.text_encoder, prompt=cfg.prompt,
                                      cache_dir=cfg.embedding_cache, allow_random_fallback=cfg.allow_random_fallback)
    job.embeddings = job.world.broadcast(embeddings.cpu())  # the same class embeddings on every process


def _run(job: _Job, profile) -> DistillResult:
    """Train (profiled on rank 0 when asked), then hand back the student as the user gave it: eval mode,
    trainable parameters, the default memory layout."""
    cfg, world, teacher, student = job.cfg, job.world, job.teacher, job.student
    torch.manual_seed(distributed.rank_seed(cfg.seed, world.rank))  # each process its own generators and noise
    ops.reset_report()  # the result says which ops this run ran fused
    run = DistillRun(cfg, teacher, student, job.embeddings, job.image_shape, job.mean, job.std, job.device,
                     job.evalset, world)
    if profile is not None and world.main:  # rank 0 reports, with NVML samples of every GPU of its node
        _train_profiled(job, run, profile)
    else:
        train(run, job.checkpoint_dir, job.started)

    student.eval()
    for p in student.parameters():
        p.requires_grad_(True)
    if cfg.channels_last:  # the models leave in the default layout (channels_last was for the run)
        student.to(memory_format=torch.contiguous_format)
        teacher.to(memory_format=torch.contiguous_format)
    return DistillResult(student=student, history=run.history, config=run.cfg, generator=run.synth.generator,
                         pool=run.pool, class_names=job.class_names, compile_mode=run.effective_compile_mode,
                         kernels=ops.kernel_report(), image_shape=job.image_shape, mean=job.mean, std=job.std)


def _train_profiled(job: _Job, run: DistillRun, profile) -> None:
    """``train`` inside a throughput report written to ``profile``."""
    from .profiling import profile_session

    meta = {"config": job.cfg.to_dict(), "device": str(job.device), "image_shape": list(job.image_shape),
            "num_classes": job.width}
    gpus = distributed.node_gpus(job.device)
    meta["gpus_sampled"] = gpus
    with profile_session(profile, device_index=gpus, meta=meta) as recorder:
        run.recorder = recorder
        try:
            train(run, job.checkpoint_dir, job.started)
        finally:
            meta["compile_mode"] = run.effective_compile_mode
            meta["kernels"] = ops.kernel_report()
            meta["plan"] = run.cfg.plan
            meta["health"] = [{k: h.get(k) for k in HEALTH_FIELDS}
                              for h in run.history]
    run.recorder = None


def _say(cfg: DistillConfig, text: str) -> None:
    if cfg.progress:
        print(text, file=sys.stderr, flush=True)


def _schedule(job: _Job) -> DistillConfig:
    """The run's schedule: planned for the budget, taken from the checkpoint being resumed, or the user's.
    A planned schedule's global batch sizes are multiples of the process count (each takes an equal share).

    Step costs are measured (on copies, with the random state restored) when a schedule is planned, when an
    explicit schedule has a budget to check against, and when a bar is shown (to print the estimate).
    """
    cfg, planned, given, device = job.cfg, job.planned, job.given, job.device
    if not job.explicit and job.checkpoint_dir is not None:
        saved = ckpt.saved_config(job.checkpoint_dir)
        if saved is not None and saved.plan is not None:  # a resumed run follows the plan it started with
            return cfg.replace(plan=saved.plan, **saved.plan["schedule"], **saved.plan.get("synthesis", {}))
    if not (planned or cfg.max_seconds is not None or cfg.progress):
        return cfg
    freeze(job.teacher)  # as the run will: measuring must not move its BN statistics
    chosen = {}
    if planned:
        chosen = synthesis_defaults(cfg, given, job.image_shape, device, job.teacher, job.mean, job.std)
        cfg = cfg.replace(**chosen)
    parts = (job.teacher, job.student, job.embeddings, job.image_shape, job.mean, job.std, device)
    costs = measure_costs(cfg, *parts)
    if planned and "precision" not in given and device.type == "cpu" and cpu_has_native_bf16():
        # bf16 where this CPU computes it natively and the run's own steps measure faster in it
        bf16 = measure_costs(cfg.replace(precision="bf16"), *parts)
        if bf16_pays(costs, bf16):
            cfg, costs, chosen["precision"] = cfg.replace(precision="bf16"), bf16, "bf16"
    spent = time.perf_counter() - job.started
    if planned:
        plan = plan_schedule(cfg, costs, cfg.max_seconds, overhead=spent, num_classes=job.width)
        if "cutmix" not in given:
            chosen["cutmix"] = planned_cutmix(plan.schedule)
        plan.synthesis = chosen
        processes = job.world.size
        for key in ("synth_batch_size", "student_batch_size"):
            plan.schedule[key] = max(plan.schedule[key] - plan.schedule[key] % processes, processes)
        cfg = cfg.replace(plan=plan.to_dict(), **plan.schedule, **chosen)
        cfg.validate()
        _say(cfg, plan.describe())
        return cfg
    _say(cfg, describe_estimate(cfg, costs, overhead=spent).describe())
    return cfg
