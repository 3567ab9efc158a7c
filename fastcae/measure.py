"""Time a few steps of the run's real models on the run's device: the step costs ``fastcae.plan`` plans from.

A few generator steps (with and without the adversarial term) and student steps are timed at the run's real
shapes, with the run's own code paths (``fastcae.steps``, ``fastcae.paradigms``, eager); the time counts
against the budget. The measurement runs on copies and restores the random state, so the planned run is the
same as one given that schedule explicitly (``distill(config=result.config)``). On a CPU that computes bf16
natively the steps are timed in bf16 too, and a planned run takes bf16 where it pays (``bf16_pays``).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import Tensor, nn

from .config import DistillConfig
from .paradigms import create_synthesizer
from .plan import StepCosts
from .steps import Steps, step_context

# A planned CPU run takes bf16 when its measured steps are this much faster in it (fastcae.api._schedule). On a
# CPU that computes bf16 natively (AVX512-BF16, AMX), a student step of a ResNet-56 teacher and a ResNet-20
# student at batch 128 took 0.22 s against 0.35 s in fp32 (2 AMD EPYC cores, channels_last); elsewhere bf16 is
# converted to and from fp32 and is slower, and small networks may not gain: hence measured, not assumed.
BF16_GAIN = 1.2


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), where bf16 may pay on a CPU."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except Exception:  # noqa: BLE001 - a private probe that changed: assume not
            pass
    return False


def bf16_pays(fp32: StepCosts, bf16: StepCosts) -> bool:
    """Whether the bf16 measurement makes a typical epoch (a generator step at the smallest measured synthesis
    batch and a student step at the smallest student batch) ``BF16_GAIN`` times faster than fp32's."""
    def epoch(c: StepCosts) -> float:
        return c.at(c.generator_adv, min(fp32.generator_adv)) + c.at(c.student, min(fp32.student))
    return epoch(fp32) >= BF16_GAIN * epoch(bf16)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_costs(cfg: DistillConfig, teacher: nn.Module, student: nn.Module, embeddings: Tensor, image_shape,
                  mean, std, device, synth_batches=None, student_batches=None, repeats: int = 3) -> StepCosts:
    """Time generator steps (with and without the adversarial term) and student steps at the given batch
    sizes with the run's own code paths, on copies of the student and a throwaway generator. The random
    state is restored afterwards, so measuring changes nothing the run will do. A batch size that runs out
    of memory is dropped (halved, down to 16), and the note says so."""
    device = torch.device(device)
    # one size on a CPU (a step's cost is close to proportional to the batch there); two on a GPU, where a
    # fixed per-step cost makes small batches relatively dear
    gpu = device.type == "cuda"
    synth_batches = synth_batches or ((64, 256) if gpu else (64,))
    student_batches = student_batches or ((128, 512) if gpu else (128,))
    start = time.perf_counter()
    notes: list[str] = []
    synth_limit = student_limit = None
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe_student = copy.deepcopy(student).to(device).train()
        ctx = step_context(cfg, teacher, probe_student, image_shape, mean, std, device)  # the steps as they will run
        head = ctx.head
        plain = Steps(ctx, cfg.replace(compile=False), device)  # the run's steps, eager: nothing compiles here
        warm, adv, stud = {}, {}, {}
        for batch in synth_batches:
            while batch >= 16:
                try:
                    probe = cfg.replace(synth_batch_size=batch, g_steps=1, compile=False)
                    synth = create_synthesizer(probe, embeddings, image_shape, device, plain)
                    for table, weight in ((warm, 0.0), (adv, cfg.adv_weight or 1.0)):
                        synth.synthesize(weight)  # untimed: first-call allocation and lazy initialisation
                        _sync(device)
                        t0 = time.perf_counter()
                        for _ in range(repeats):
                            synth.synthesize(weight)
                        _sync(device)
                        table[batch] = (time.perf_counter() - t0) / repeats
                    break
                except RuntimeError as err:
                    if not _is_oom(err):
                        raise
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    notes.append(f"synthesis batch {batch} ran out of memory while measuring; planned with "
                                 f"{batch // 2} at most")
                    batch //= 2
                    synth_limit = batch if synth_limit is None else min(synth_limit, batch)
        if not warm:
            raise RuntimeError("could not run a single synthesis step even at batch 16 (out of memory)")
        params = list(probe_student.parameters()) + (list(head.parameters()) if head is not None else [])
        opt = torch.optim.SGD(params, lr=1e-3, momentum=cfg.momentum)
        for batch in student_batches:
            try:
                images = torch.rand(batch, *image_shape, device=device)
                labels = torch.arange(batch, device=device) % embeddings.shape[0]
                plain.student_step(opt, images, labels)
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    plain.student_step(opt, images, labels)
                _sync(device)
                stud[batch] = (time.perf_counter() - t0) / repeats
            except RuntimeError as err:
                if not _is_oom(err) or batch == min(student_batches):
                    raise
                if gpu:
                    torch.cuda.empty_cache()
                notes.append(f"student batch {batch} ran out of memory while measuring; planned below it")
                student_limit = batch // 2 if student_limit is None else min(student_limit, batch // 2)
        del probe_student, opt
    return StepCosts(warm, adv, stud, time.perf_counter() - start, notes, synth_limit, student_limit)
