"""The whole schedule around the two steps (``fastcae.steps``), nanoGPT style: a fixed, visible order.

``train(run)`` is the outer loop: resume from the last checkpoint, then per epoch ``run.run_epoch`` ->
checkpoint -> progress bar, until the last epoch or the budget's deadline. One epoch (``run_epoch``):
[re-create the generator every g_life epochs] -> synthesis batches (warm-up: many, no adversarial term, no
student training) -> pool.push -> student steps on pool samples (cosine lr per epoch) -> evaluation ->
health -> history. Losses stay on the device and are read every ``log_every`` student steps and once per
epoch; each read also checks that every term is finite. The budget is one deadline (``fastcae.budget``),
checked between synthesis batches, at each loss read and after each epoch, one piece of work ahead.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from .budget import Deadline
from .config import DistillConfig
from .distributed import World, local_share, to_cpu
from .evaluate import accuracy
from .health import FLIP_CONSISTENT, HealthMonitor, batch_health, flip_consistency
from .paradigms import create_synthesizer
from .plan import revise_student_steps, typical_synth_seconds
from .pool import SyntheticPool
from .steps import Steps, accumulate, memory_format, resolve_channels_last, step_context

TERM_NAMES = {
    "bn": "BN-statistics loss (generator)",
    "ce_adv": "teacher cross-entropy + adversarial loss (generator)",
    "kd": "KD loss (student)",
    "cncl": "CNCL contrastive loss (student)",
}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite. The last good checkpoint (if any) is left untouched."""


@dataclass
class EvalSet:
    """A labelled evaluation set: images in [0, 1] (not normalised) ``[N, C, H, W]`` and labels ``[N]``."""

    images: Tensor
    labels: Tensor


def _add(sums: dict[str, float] | None, terms: dict[str, float]) -> dict[str, float]:
    return terms if sums is None else {k: sums[k] + terms[k] for k in terms}


def cosine_lr(cfg: DistillConfig, epoch: int) -> float:
    """NAYER's CosineAnnealingLR over the post-warm-up epochs: lr_s -> lr_min."""
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    t = min(max(epoch - cfg.warmup_epochs, 0), span)
    return cfg.lr_min + (cfg.lr_s - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * t / span))


def default_pool_capacity(cfg: DistillConfig) -> int:
    """Every image the schedule keeps (NAYER's pool never shrinks)."""
    batches = cfg.warmup_epochs * cfg.warmup_synth_batches + (cfg.epochs - cfg.warmup_epochs) * cfg.synth_batches
    return max(batches, 1) * cfg.synth_batch_size


def freeze(teacher: nn.Module) -> nn.Module:
    """The teacher as distillation uses it: eval mode (its BN statistics never move), no gradients."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillRun:
    """All state of one distillation: built once, advanced epoch by epoch, saved and restored whole."""

    def __init__(self, cfg: DistillConfig, teacher: nn.Module, student: nn.Module, embeddings: Tensor,
                 image_shape, mean, std, device, eval_set: EvalSet | None = None, world: World = World()):
        if cfg.channels_last is None:  # distill() resolves it; a run built directly resolves it here
            cfg = cfg.replace(channels_last=resolve_channels_last(None, device))
        self.cfg = cfg  # global batch sizes; this process takes its share of each (one process: all of it)
        self.world = world
        self.student_batch = local_share(cfg.student_batch_size, world, "student_batch_size")
        synth_cfg = cfg.replace(synth_batch_size=local_share(cfg.synth_batch_size, world, "synth_batch_size"))
        self.device = torch.device(device)
        self.image_shape = tuple(image_shape)
        layout = memory_format(cfg)  # NHWC where cuDNN's and oneDNN's convolutions are fastest in it
        self.teacher = freeze(teacher.to(self.device, memory_format=layout))
        self.student = student.to(self.device, memory_format=layout)
        # flip=None: no flip while the warm-up synthesises, then the teacher decides (decide_flip)
        ctx = step_context(cfg, self.teacher, self.student, self.image_shape, mean, std, self.device)
        self.augment, self.bn, self.head = ctx.augment, ctx.bn, ctx.head
        self.steps = Steps(ctx, cfg, self.device, world)
        self.synth = create_synthesizer(synth_cfg, embeddings, self.image_shape, self.device, self.steps,
                                        (world.rank, world.size))
        # each process keeps what it synthesised: its share of the one-process pool
        capacity = local_share(cfg.pool_capacity, world, "pool_capacity") if cfg.pool_capacity else None
        self.pool = SyntheticPool(capacity or default_pool_capacity(synth_cfg), self.image_shape, self.device,
                                  cfg.pool_dtype, cfg.pool_policy)
        params = list(self.student.parameters()) + (list(self.head.parameters()) if self.head is not None else [])
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr_s, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                         **self.steps.optimizer_options())
        self.eval_set = eval_set
        self.mean, self.std = tuple(mean), tuple(std)
        self.epoch = 0  # next epoch to run
        self.history: list[dict] = []
        self.images_synthesized = 0
        self.elapsed = 0.0  # seconds of training, summed across resumes
        self.recorder = None  # a fastcae.profiling.PhaseRecorder when profiling (distill(profile=...))
        self.health = HealthMonitor()
        self.revision: str | None = None  # why the plan was re-sized, reported once in the epoch's record
        self.cut: str | None = None  # the phase the budget cut short this epoch, reported in its record
        self._synth_batches: list[tuple[float, bool]] = []  # (seconds, warm-up) per synthesis batch, for the re-sizing
        self.deadline = Deadline(self.device, world)  # its time is set by train(); None (no budget) until then

    @property
    def effective_compile_mode(self) -> str:
        """How the steps run: the resolved mode, or "eager" if compiling was unavailable or fell back."""
        return self.steps.effective_mode

    # ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _phase(self, name: str):
        """A profiled span; on CUDA it waits for the queued work, so the span times work, not launches."""
        if self.recorder is None:
            yield
            return
        with self.recorder.phase(name):
            yield
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

    def _check_finite(self, terms: dict[str, float], epoch: int, where: str) -> None:
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        if bad:
            names = ", ".join(TERM_NAMES.get(k, k) for k in bad)
            raise NonFiniteLossError(
                f"non-finite {names} at epoch {epoch} ({where}); stopped before saving this state, the last "
                f"good checkpoint (if a checkpoint directory was given) is intact. Try a lower lr_g / lr_s, "
                f"or check the teacher's outputs on synthetic images."
            )

    def _set_student_trainable(self, trainable: bool) -> None:
        for module in (self.student, self.head):
            if module is not None:
                module.train(trainable)
                for p in module.parameters():
                    p.requires_grad_(trainable)

    def synthesize(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        warm = epoch < cfg.warmup_epochs
        n_batches = cfg.warmup_synth_batches if warm else cfg.synth_batches
        adv_weight = 0.0 if warm else cfg.adv_weight
        self._set_student_trainable(False)  # student frozen (eval) while the generator learns
        progress = max(epoch - cfg.warmup_epochs, 0) / max(cfg.epochs - cfg.warmup_epochs, 1)
        self.synth.set_progress(progress)
        totals, done = None, 0
        with self._phase("synthesis"):
            for _ in range(n_batches):
                t0 = self.deadline.clock()
                batch = self.synth.synthesize(adv_weight)
                self.pool.push(batch.images, batch.labels, batch.sources)
                self.images_synthesized += batch.images.shape[0]
                if self.recorder is not None:
                    self.recorder.add(images=batch.images.shape[0], steps=cfg.generator_steps)
                terms = dict(self.synth.last_terms)
                terms.update(batch_health(self.teacher, self.augment.normalize, batch.images, batch.labels,
                                          self.synth.num_classes))
                totals = _add(totals, terms)
                done += 1
                # the batch's device work, not its launches: the health terms are device tensors, so on CUDA
                # nothing above has waited for the steps to run
                self.deadline.batch_seconds = self.deadline.clock() - t0
                self._synth_batches.append((self.deadline.batch_seconds, warm))
                # room for one more batch, then the student's first read (after the warm-up)
                if done < n_batches and self.deadline.epoch_overruns(cfg, epoch):
                    self.cut = "synthesis"  # a budget cut: the epoch's remaining batches are skipped
                    break
        return {k: float(v) / done for k, v in (totals or {}).items()}

    def cutmix_share(self, epoch: int) -> float:
        """The CutMix share of epoch ``epoch``: the config's, except before the epoch from which the re-sizing
        changed it (recorded in the plan, so a rerun or a resumed run mixes the same epochs)."""
        revised = (self.cfg.plan or {}).get("revised") or {}
        if epoch < revised.get("cutmix_from_epoch", 0):
            return revised["cutmix_planned"]
        return self.cfg.cutmix

    def train_student(self, epoch: int) -> dict[str, float]:
        cfg, deadline = self.cfg, self.deadline
        self.steps.use_cutmix(self.cutmix_share(epoch))
        self._set_student_trainable(True)
        lr = cosine_lr(cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums, window, steps = None, None, 0
        timer = deadline.revision_timer(cfg, epoch)  # a few steps timed to re-size the plan, in one epoch only
        with self._phase("distillation"):
            read_at, read_step = time.perf_counter(), 0
            stop = deadline.steps_overrun(cfg.student_steps, cfg.log_every)  # not even the first read fits
            while not stop and steps < cfg.student_steps:  # the count may be re-sized once, inside the first epoch
                timer.start(steps)
                images, labels, _ = self.pool.sample(self.student_batch)
                window = accumulate(window, self.steps.student_step(self.optimizer, images, labels))
                steps += 1
                step_seconds = timer.lap(steps)
                if step_seconds is not None:
                    self._revise_plan(epoch, step_seconds, steps)
                    cfg = self.cfg
                if steps % cfg.log_every == 0 or steps == cfg.student_steps:
                    sums, window = _add(sums, self._read(window, epoch, f"student step {steps}")), None
                    now = time.perf_counter()  # synced by the read: the steps up to here have run
                    deadline.step_seconds = (now - read_at) / (steps - read_step)
                    read_at, read_step = now, steps
                    stop = steps < cfg.student_steps and deadline.steps_overrun(cfg.student_steps - steps,
                                                                                 cfg.log_every)
            if stop:
                self.cut = self.cut or "distillation"  # a budget cut: the epoch's remaining steps are skipped
            if self.recorder is not None:
                self.recorder.add(images=steps * self.student_batch, steps=steps)
        if window is not None:
            sums = _add(sums, {k: float(v) for k, v in window.items()})
        out = {k: v / steps for k, v in (sums or {}).items()}
        out["lr"] = lr
        out["student_steps"] = steps
        return out

    def _read(self, window: dict[str, Tensor], epoch: int, where: str) -> dict[str, float]:
        """The window's losses on the host (the one host sync per log interval), each checked to be finite."""
        read = {k: float(v) for k, v in window.items()}
        self._check_finite(read, epoch, where)
        return read

    def _revise_plan(self, epoch: int, step_seconds: float, done: int) -> None:
        revised = None
        if self.world.main:  # rank 0 re-sizes, every rank follows (the same step counts keep the all-reduces paired)
            synth = typical_synth_seconds(self._synth_batches, self.cfg.synth_batches,
                                          self.cfg.plan.get("costs") or {})
            revised = revise_student_steps(self.cfg.plan, step_seconds, synth, done,
                                           self.deadline.seconds_left(), self.cfg.epochs - epoch - 1)
        revised = self.world.broadcast(revised)
        if revised is not None:
            added = revised["reasons"][len(self.cfg.plan["reasons"]):]  # the re-sizing, and CutMix if it changed
            share = revised.get("synthesis", {}).get("cutmix", self.cfg.cutmix)
            self.cfg = self.cfg.replace(plan=revised, student_steps=revised["schedule"]["student_steps"], cutmix=share)
            self.revision = "; ".join(added)

    def evaluate(self) -> float | None:
        if self.eval_set is None or not self.world.main:  # rank 0 scores (every rank holds the same student)
            return None
        return accuracy(self.student, self.eval_set.images, self.eval_set.labels, self.mean, self.std,
                        device=self.device)

    def run_epoch(self) -> dict:
        cfg, epoch = self.cfg, self.epoch
        start = time.perf_counter()
        renewed = epoch > 0 and epoch % cfg.g_life == 0
        if renewed:
            self.synth.reset()
        record = {"epoch": epoch + 1, "phase": "warmup" if epoch < cfg.warmup_epochs else "distill"}
        g_terms = self.synthesize(epoch)
        health = {k: g_terms.pop(k) for k in ("agreement", "diversity") if k in g_terms}
        self._check_finite(g_terms, epoch + 1, "synthesis")
        record.update({f"g_{k}": v for k, v in g_terms.items()})
        record.update(health)
        if epoch >= cfg.warmup_epochs:
            record.update(self.train_student(epoch))
            if self.revision is not None:
                record["plan_revised"], self.revision = self.revision, None
        if self.cut is not None:  # the epoch did less than its schedule: a rerun without the budget would differ
            record["budget_cut"], self.cut = self.cut, None
        self.elapsed += time.perf_counter() - start
        acc = None
        stopping = self.deadline.epoch_overruns(self.cfg, epoch + 1)  # the last epoch is evaluated
        if self.eval_set is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs or stopping):
            t0 = time.perf_counter()
            acc = self.evaluate()
            if acc is not None:
                self.deadline.eval_seconds = time.perf_counter() - t0
        record.update({"seconds": self.elapsed, "images_synthesized": self.images_synthesized, "accuracy": acc})
        if epoch == 0 and cfg.plan is not None:
            record["plan"] = cfg.plan
        if cfg.flip is None and epoch + 1 == max(cfg.warmup_epochs, 1):
            record.update(self.decide_flip())
        # a generator re-created this epoch starts from scratch: judging it now would be a false alarm
        if self.world.main:  # rank 0's generator speaks for the others (they are built alike); one warning
            self.health.check(record, settling=epoch < cfg.warmup_epochs or renewed)
        self.history.append(record)
        self.epoch += 1
        return record

    def decide_flip(self) -> dict:
        """flip=None: turn the flip augmentation on iff the teacher labels mirrored images as the originals
        (over the processes' pools together, so that every process decides the same)."""
        images, _, _ = self.pool.tensors()
        consistency = flip_consistency(self.teacher, self.augment.normalize, images[-512:].to(self.device))
        consistency = self.world.mean(consistency)
        self.augment.flip = consistency >= FLIP_CONSISTENT
        return {"flip_consistency": consistency, "flip": self.augment.flip}

    # --- checkpoint state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "images_synthesized": self.images_synthesized,
            "history": self.history,
            "student": self.student.state_dict(),
            "head": self.head.state_dict() if self.head is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "synthesizer": self.synth.state_dict(),
            "bn": self.bn.state_dict() if self.bn is not None else None,
            "pool": self.pool.state_dict(),
            "rng": ckpt.rng_state(),
            "flip": self.augment.flip,
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.synth.load_state_dict(state["synthesizer"])
        if self.bn is not None:
            self.bn.load_state_dict(state["bn"])
        self.pool.load_state_dict(state["pool"])
        self.epoch = int(state["epoch"])
        self.elapsed = float(state["elapsed"])
        self.images_synthesized = int(state["images_synthesized"])
        self.history = list(state["history"])
        self.augment.flip = bool(state.get("flip", self.augment.flip))
        ckpt.set_rng_state(state["rng"])


# ------------------------------------------------------------------------------------------ the outer loop
def train(run: DistillRun, checkpoint_dir=None, started: float | None = None) -> None:
    """The whole schedule: resume from ``checkpoint_dir`` if it holds a checkpoint, then per epoch:
    ``run.run_epoch`` -> checkpoint (every ``checkpoint_every`` epochs, after the last one, and when the budget
    stops the run) -> progress bar; stop after the last epoch or once the deadline has passed. The budget
    counts from ``started`` (``distill``'s start: the step-cost measurement is part of it) minus the training
    time of the run being resumed."""
    if checkpoint_dir is not None:
        state = _resume_state(run, checkpoint_dir)
        if state is not None:
            run.load_state_dict(state)
    cfg = run.cfg  # the epochs and checkpoint cadence; run.cfg itself may be revised after the warm-up
    start = time.perf_counter() if started is None else started
    run.deadline.at = None if cfg.max_seconds is None else start + max(cfg.max_seconds - run.elapsed, 0.0)
    bar = _ProgressBar(run) if cfg.progress and run.world.main else None
    try:
        while run.epoch < cfg.epochs:
            record = run.run_epoch()
            # read again: past the deadline now (or the next epoch would end past it), though not when the epoch
            # looked, the run stops (one more epoch would overrun) and its last evaluation stays the one before
            stopping = run.deadline.epoch_overruns(run.cfg, run.epoch)
            if stopping and run.epoch < cfg.epochs and "budget_cut" not in record:
                record["budget_cut"] = "epochs"  # the epoch did its schedule; the ones after it will not run
            if checkpoint_dir is not None and (run.epoch % cfg.checkpoint_every == 0 or run.epoch == cfg.epochs
                                               or stopping):
                _save(run, checkpoint_dir)
            if bar is not None:
                bar.update(record)
            if stopping:
                break
    finally:
        if bar is not None:
            bar.close()
    # the averaged gradients kept the parameters equal; the BatchNorm buffers moved on each process's own batches
    run.world.share_tensors([b for m in (run.student, run.head) if m is not None for b in m.buffers()])


def _save(run: DistillRun, checkpoint_dir) -> None:
    """One checkpoint of the whole run, written atomically by rank 0: every process's state (generator,
    optimisers, pool, random streams) gathered there. One process: its state, as always."""
    world = run.world
    if not world.distributed:
        ckpt.save(checkpoint_dir, run.state_dict(), run.cfg)
        return
    states = world.gather(to_cpu(run.state_dict()))
    if world.main:
        ckpt.save(checkpoint_dir, {"ranks": states}, run.cfg, extra={"world_size": world.size})


def _resume_state(run: DistillRun, checkpoint_dir) -> dict | None:
    """This process's state from the checkpoint in ``checkpoint_dir`` (None: start afresh). Under torchrun,
    rank 0 reads the file (only its filesystem needs it) and hands each rank its part; a checkpoint written by
    another number of processes is refused on every rank with the same error."""
    world = run.world
    parts, error = None, None
    if world.main:
        try:
            payload = ckpt.load(checkpoint_dir, run.cfg, device="cpu" if world.distributed else run.device)
            if payload is not None:
                saved = int(payload.get("extra", {}).get("world_size", 1))
                if saved != world.size:
                    raise ckpt.CheckpointError(
                        f"the checkpoint in {checkpoint_dir} was written by {saved} process(es) and this run has "
                        f"{world.size}: resume with the same number (torchrun --nproc_per_node {saved} on one "
                        f"node), or start in a new checkpoint directory")
                parts = payload["state"]["ranks"] if saved > 1 else [payload["state"]]
        except ckpt.CheckpointError as err:
            if not world.distributed:
                raise
            error = str(err)
    error, found = world.broadcast((error, parts is not None))
    if error is not None:
        raise ckpt.CheckpointError(error)
    return world.scatter(parts) if found else None


class _ProgressBar:
    """A tqdm bar over the epochs, its postfix the epoch's synthesis health, KD loss and accuracy."""

    def __init__(self, run: DistillRun):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=run.cfg.epochs, initial=run.epoch, desc=f"fastcae {run.cfg.paradigm}", unit="epoch",
                        dynamic_ncols=True)
        if run.steps.compiled:  # the first epoch includes the compiles: say so rather than look stuck
            self.bar.set_postfix_str(f"compiling the steps ({run.steps.mode})")

    def update(self, record: dict) -> None:
        if "plan_revised" in record:
            self.bar.write(f"fastcae plan: {record['plan_revised']}")
        post = {"imgs": record["images_synthesized"], "bn": f"{record.get('g_bn', 0.0):.2f}"}
        if "agreement" in record:
            post["agree"] = f"{100 * record['agreement']:.0f}%"
        if "kd" in record:
            post["kd"] = f"{record['kd']:.3f}"
        if record.get("accuracy") is not None:
            post["acc"] = f"{100 * record['accuracy']:.1f}%"
        self.bar.set_postfix(post)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
