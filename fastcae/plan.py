"""Plan a schedule that finishes inside the user's wall-time budget, from step costs measured on this device.

Why: a budget that only *stops* a run cuts it in the middle of its learning-rate cosine, so the student
never gets its low-learning-rate phase, and NAYER's CIFAR schedule (120 epochs of 400 steps at batch 512)
takes days on a CPU without saying so. Here a few generator and student steps are timed at the run's real
shapes, on the run's device (``fastcae.measure.measure_costs``; the time counts against the budget), and
``plan_schedule`` picks the batch sizes, warm-up, epochs, synthesis batches and student steps so that warm-up,
the cosine and the noise schedule all end by the deadline. This module is that arithmetic alone: measured
costs in, a plan out, no models. What the teacher, the image shape and the device decide besides the schedule
(generator width and learning rate, BN-term weights, CEND's noise) is ``fastcae.defaults``.

The shares below follow NAYER's own proportions on CIFAR-10 (warm-up about 16% of its compute, synthesis about
20% of each later epoch) and were checked across the fidelity suite (``benchmarks/fidelity``), not one case:
- warm-up gets ``WARMUP_SHARE`` of the time: enough generator steps to lower the BN-statistics loss and
  make the generator class-conditional before the student learns from its images;
- after warm-up, synthesis gets ``SYNTH_SHARE`` of each epoch (fresh, adversarial images), the student the
  rest. NAYER's 20% was the first choice (as 0.25). 0.4 (more fresh images per student step, as in the
  ``digits`` preset) measured better over three seeds of the fidelity suite: at 60 s the gap to the teacher
  fell on five of six cases (resnet8-colour-rot32 8.2 -> 3.6 points, resnet8-turned20 7.7 -> 3.0) and rose
  on none by more than its seed spread; at 240 s the cases moved within their spread, and MobileNetV3 rose
  from 65.9 to 70.9% on the same teacher (the other cases' teachers were retrained between the two runs;
  ``benchmarks/results/fidelity-share-2026-12-02.json``, docs/fidelity.md);
- about ``TARGET_EPOCHS`` post-warm-up epochs, so the per-epoch cosine is smooth, each of at least
  ``MIN_EPOCH_STEPS`` and at most ``MAX_EPOCH_STEPS`` (NAYER's 400) student steps;
- the student batch: the largest of ``STUDENT_BATCHES`` that still gets ``STUDENT_STEPS_WANTED`` steps, at
  NAYER's learning rate scaled with the square root of the batch (``planned_lr``); a run that would get fewer
  than ``MIN_STUDENT_STEPS`` (the same 2,000) steps at 128 takes ``SHORT_RUN_STUDENT_BATCH`` (64) at
  ``SHORT_RUN_LR`` (0.05), for about twice the steps on the same images (+4 to +6 points on three cases at 60 s;
  on natural images at 600 s, +10 points for fresh students on one kept pool in the same time);
- the generator is never re-created inside a planned run (re-creating it threw away the progress of the
  BN-statistics loss on deep teachers, and a budget has no time to win it back);
- once, in the first epoch after the warm-up, the run times its own student steps and synthesis and
  ``revise_student_steps`` re-sizes the student steps of every post-warm-up epoch to the time really left
  (``fastcae.loop.DistillRun.train_student``): the measurement before the run overestimated a step inside
  it by 10-20%, which left long budgets a fifth unused;
- CutMix on every student image when the run has ``CUTMIX_MIN_STEPS`` or more post-warm-up student steps
  (``planned_cutmix``), decided with the schedule and again by the re-sizing (from the epoch after it).
  Across the suite at 240 s it raised five of six students and lowered none (MobileNetV3 70.9 -> 83.5%,
  ``benchmarks/results/fidelity-cutmix-2026-12-04.json``); with few steps it costs accuracy.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field

from .config import DistillConfig

# The fields a plan sets; a user who sets any of them (or a preset, or a full config) keeps their schedule.
SCHEDULE_FIELDS = ("epochs", "warmup_epochs", "warmup_synth_batches", "synth_batches", "student_steps",
                   "synth_batch_size", "student_batch_size", "g_life", "lr_s")

WARMUP_SHARE = 0.2  # of the usable budget: synthesis only
SYNTH_SHARE = 0.4  # of each post-warm-up epoch: adversarial synthesis (NAYER ~20%; the docstring says why 0.4)
TARGET_EPOCHS = 40  # post-warm-up epochs, when the budget allows 20+ student steps per epoch
MIN_EPOCHS = 4  # fewer cannot be called a schedule
MIN_WARMUP_STEPS = 40  # generator steps below which synthesis has not started to work on any teacher tried
# Warm-up steps a synthesis batch size must leave room for: on the suite, the VGG and ResNet-8 generators were
# class-conditional (>80% agreement) within ~100 steps, torchvision's MobileNetV3 needed 200-300 for 55-75%.
WARMUP_STEPS_WANTED = 150
MIN_EPOCH_STEPS = 10  # student steps per epoch, at least
MAX_EPOCH_STEPS = 400  # NAYER's epoch length; longer budgets get more epochs
STUDENT_STEPS_WANTED = 2000  # student batch: the largest that still gets this many steps in the budget
SAFETY = 0.9  # share of the remaining time planned (timing noise, evaluation, the final epoch's overrun)
# A few timed steps before the run can be 10-20% off, and other work on the machine changes the speed: the
# first post-warm-up epoch times its own student steps and re-sizes every post-warm-up epoch (itself
# included) to fill this share of the time left, so a budget is neither left a fifth unused nor overrun.
REVISED_SAFETY = 0.95
# The re-sizing gives at most this many times the planned student steps. Twice was the first bound; a step-cost
# measurement disturbed by other work on the machine (2026-12-04: another job on the same cores timed a student
# step at 0.344 s, three times the 0.113 s it took in the run) then left a 240-second MobileNetV3 run ending at
# 157 s, its steps doubled and still short. The epochs stay as planned, so the time left can only go to student
# steps.
REVISE_AT_MOST = 4
# CutMix on every student image (fastcae.augment.cutmix) when the run has at least this many post-warm-up
# student steps. Measured on 2 CPU cores (benchmarks/fidelity/pool_study.py, fresh students trained offline on a
# run's kept images): it cost 10 and 1 points at 255 and 322 steps (vgg-grey32, resnet8-colour-rot32, 60 s)
# and gained 0.4 and 0.6 at three times those steps, and 10 and 13 points at 1,080 and 1,271 (MobileNetV3, 240 s),
# where the student fits images that drifted from anything the teacher was trained on. Between the two: 500.
# In runs at 120 s (560-714 steps) it then gained 1.5-2.4 points in three of three comparisons.
CUTMIX_MIN_STEPS = 500
SYNTH_BATCHES = (400, 256, 200, 128, 64)  # candidates, largest first
STUDENT_BATCHES = (512, 256, 128)
# A run whose smallest batch above still gets fewer than MIN_STUDENT_STEPS steps takes this batch instead, at
# the learning rate of batch 128: about twice the steps on the same images. Short CPU budgets are limited by
# the student's steps, not its images (offline, three times the steps on a run's kept images gained 9 and 4
# points at 60 s). Measured at 60 s on 2 CPU cores, 3 seeds, against batch 128 in the same session
# (benchmarks/results/fidelity-batch64-60s-2026-12-05.json): +4.1, +4.4 and +6.3 points on the three 32 px
# cases whose steps are the limit; the linear scaling of the learning rate (0.025) gained about half of that.
# The bound was 500 steps, then STUDENT_STEPS_WANTED (2026-12-08): on natural images a 600 s run got 1,000-2,000
# steps at 128, and on one kept pool of such a run (offline, 2 CPU cores, the same ~220 s of student time)
# fresh ResNet-20s learnt 35.3-40.6% at batch 64 (lr 0.05, 0.1, 0.2) against 29.7-35.1% at 128 (lr 0.1, 0.2,
# 0.4), and 48.0% from 1.75x the steps at 128: the student's steps were the limit, not the pool.
SHORT_RUN_STUDENT_BATCH = 64
MIN_STUDENT_STEPS = STUDENT_STEPS_WANTED
# The student's lr: NAYER's 0.2 at batch 512, scaled with the square root of the batch size (0.1 at 128).
# Linear scaling (0.05 at 128) was the first choice. On the same kept images (offline, pool_study --variant
# lr_s=0.1, benchmarks/results/pool-study-variants-2026-12-05.json) 0.1 gained on three of six cases and lost
# 0.4 on one; in the runs at 240 s (2 CPU cores) it gave MobileNetV3 90.2% against 88.9% over seeds 0-4 (four
# of five higher) and moved the other five cases by -0.4 to +0.4 (fidelity-lr-2026-12-05.json). A short run's
# batch of 64 keeps 0.05, the rate it was measured with: at 0.1 its three 32 px cases at 60 s moved by 0, -0.2
# and -2.5 points.
LR_AT_512 = 0.2
SHORT_RUN_LR = 0.05


def planned_lr(student_batch: int) -> float:
    """The planned student lr for ``student_batch`` (see ``LR_AT_512``)."""
    if student_batch < STUDENT_BATCHES[-1]:
        return SHORT_RUN_LR
    return round(LR_AT_512 * math.sqrt(student_batch / 512), 6)


class BudgetTooSmall(ValueError):
    """The budget cannot fit even the warm-up and a minimal student phase on this device."""


@dataclass
class StepCosts:
    """Seconds per step at the measured batch sizes (warm: synthesis without the adversarial term)."""

    generator_warm: dict[int, float]  # synth batch size -> s per generator step
    generator_adv: dict[int, float]
    student: dict[int, float]  # student batch size -> s per student step
    measured_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    synth_limit: int | None = None  # the largest synthesis batch that fit in memory, when one did not
    student_limit: int | None = None

    def at(self, table: dict[int, float], batch: int) -> float:
        """Linear in the batch size through the measured points (the cost of a step is mostly per image)."""
        sizes = sorted(table)
        if len(sizes) == 1:
            return table[sizes[0]] * batch / sizes[0]
        (b0, b1) = sizes[0], sizes[-1]
        slope = (table[b1] - table[b0]) / (b1 - b0)
        # floor: timing noise can make the fitted line fall below zero for batches under the smallest measured
        return max(table[b0] + slope * (batch - b0), table[b0] * batch / b0 * 0.25)


@dataclass
class Plan:
    """What the planner chose and why: the schedule (``DistillConfig`` fields) and its time estimate."""

    budget: float | None
    schedule: dict
    estimate_seconds: float
    generator_steps: int
    costs: dict
    reasons: list[str]
    synthesis: dict = field(default_factory=dict)  # what fastcae.defaults chose, recorded with the plan
    planned: bool = True  # False: the estimate of a schedule the user gave

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        s = self.schedule
        post = s["epochs"] - s["warmup_epochs"]
        lines = [
            f"fastcae {'plan' if self.planned else 'schedule'}: {s['warmup_epochs']} warm-up epoch(s) x "
            f"{s['warmup_synth_batches']} synthesis batches, "
            f"then "
            f"{post} epochs x ({s['synth_batches']} synthesis batch(es) + {s['student_steps']} student steps); "
            f"synthesis batch {s['synth_batch_size']}, student batch {s['student_batch_size']}, "
            f"{self.generator_steps} generator steps per batch",
            f"  estimated {format_seconds(self.estimate_seconds)} on this device"
            + (f" (budget {format_seconds(self.budget)})" if self.budget is not None else ""),
        ]
        lines += [f"  - {r}" for r in self.reasons]
        if self.synthesis:
            chosen = ", ".join(f"{k}={'auto (after warm-up)' if v is None else v}" for k, v in self.synthesis.items())
            lines.append(f"  - chosen for this teacher, device and budget: {chosen}")
        return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def explicit_schedule(preset, config, options: dict) -> bool:
    """True when the user chose a schedule: a preset, a full config, or any schedule field as a keyword."""
    return preset is not None or config is not None or any(k in options for k in SCHEDULE_FIELDS)


# ---------------------------------------------------------------------------------------------- planning
def _epoch_seconds(costs: StepCosts, s: dict, g_steps: int) -> tuple[float, float]:
    """(seconds per warm-up epoch, seconds per post-warm-up epoch) of schedule ``s``."""
    gw = costs.at(costs.generator_warm, s["synth_batch_size"]) * g_steps
    ga = costs.at(costs.generator_adv, s["synth_batch_size"]) * g_steps
    st = costs.at(costs.student, s["student_batch_size"])
    return s["warmup_synth_batches"] * gw, s["synth_batches"] * ga + s["student_steps"] * st


def estimate_seconds(costs: StepCosts, s: dict, g_steps: int) -> float:
    warm, post = _epoch_seconds(costs, s, g_steps)
    return s["warmup_epochs"] * warm + (s["epochs"] - s["warmup_epochs"]) * post


def _synth_candidates(costs: StepCosts, num_classes: int) -> list[int]:
    """Synthesis batch sizes the planner may use, largest first: every class at least twice, none that ran
    out of memory while measuring."""
    fits = costs.synth_limit or max(SYNTH_BATCHES)
    candidates = [b for b in SYNTH_BATCHES if 2 * num_classes <= b <= fits]
    return candidates or [min(max(2 * num_classes, 16), fits)]


def minimum_budget(costs: StepCosts, g_steps: int, overhead: float, num_classes: int = 10) -> float:
    """The smallest budget the planner accepts: the warm-up's minimum generator steps at the smallest
    synthesis batch, then MIN_EPOCHS epochs of one synthesis batch and MIN_EPOCH_STEPS student steps."""
    b = _synth_candidates(costs, num_classes)[-1]
    warm = (math.ceil(MIN_WARMUP_STEPS / g_steps) * g_steps + g_steps) * costs.at(costs.generator_warm, b)
    post = MIN_EPOCHS * g_steps * costs.at(costs.generator_adv, b)
    post += MIN_EPOCHS * (MIN_EPOCH_STEPS + 1) * costs.at(costs.student, min(STUDENT_BATCHES))
    return (warm + post) / SAFETY + overhead


def plan_schedule(cfg: DistillConfig, costs: StepCosts, budget: float, overhead: float = 0.0,
                  num_classes: int = 10) -> Plan:
    """Choose the schedule fields for ``budget`` seconds, of which ``overhead`` are already spent or reserved
    (the measurement, compiling). Raise ``BudgetTooSmall`` with the minimum that would work."""
    g = cfg.generator_steps
    usable = (budget - overhead) * SAFETY
    need = minimum_budget(costs, g, overhead, num_classes)
    if budget < need:
        raise BudgetTooSmall(f"max_seconds={budget:g} is too small to finish the warm-up and a minimal student "
                             f"phase on this device: at least {math.ceil(need)} s would work here (measured "
                             f"{costs.measured_seconds:.1f} s of step costs)")
    reasons = []
    # Synthesis batch: the largest whose warm-up still gets enough generator steps to converge. BN statistics
    # are batch statistics, so smaller batches are noisier; steps matter more than images in warm-up.
    warm_time = usable * WARMUP_SHARE
    candidates = _synth_candidates(costs, num_classes)
    sb = candidates[-1]
    for candidate in candidates:
        if warm_time / costs.at(costs.generator_warm, candidate) >= WARMUP_STEPS_WANTED:
            sb = candidate
            break
    warm_step = costs.at(costs.generator_warm, sb)
    warm_total_steps = max(int(warm_time / warm_step), MIN_WARMUP_STEPS)
    warm_batches_total = max(math.ceil(warm_total_steps / g), 1)
    warmup_epochs = min(max(warm_batches_total // 5, 1), 10)
    warmup_synth_batches = max(math.ceil(warm_batches_total / warmup_epochs), 1)
    reasons.append(f"warm-up: {warmup_epochs * warmup_synth_batches * g} generator steps at batch {sb} "
                   f"({100 * WARMUP_SHARE:.0f}% of the budget)")

    post_time = usable - warmup_epochs * warmup_synth_batches * g * warm_step
    adv_batch = costs.at(costs.generator_adv, sb) * g

    def student_time(epochs: int, batches: int) -> float:
        return post_time - epochs * batches * adv_batch

    # Epochs: about TARGET_EPOCHS, but every epoch synthesises at least one batch and trains at least
    # MIN_EPOCH_STEPS student steps, so a slow generator or student means fewer epochs (>= MIN_EPOCHS).
    total_synth = max(int(post_time * SYNTH_SHARE / adv_batch), 1)
    epochs_post = max(min(total_synth, TARGET_EPOCHS), MIN_EPOCHS)
    synth_batches = max(total_synth // epochs_post, 1)
    slow = costs.at(costs.student, STUDENT_BATCHES[-1])
    while epochs_post > MIN_EPOCHS and student_time(epochs_post, synth_batches) < epochs_post * MIN_EPOCH_STEPS * slow:
        epochs_post -= 1
        synth_batches = max(total_synth // epochs_post, 1)
    limit = costs.student_limit or max(STUDENT_BATCHES)
    student_fits = [b for b in STUDENT_BATCHES if b <= limit] or [min(costs.student)]
    seconds = student_time(epochs_post, synth_batches)

    def steps_at(batch: int) -> float:  # post-warm-up student steps at this batch
        return seconds / costs.at(costs.student, batch)

    bs = next((b for b in student_fits if steps_at(b) >= STUDENT_STEPS_WANTED), student_fits[-1])
    if bs == student_fits[-1] and SHORT_RUN_STUDENT_BATCH < bs and steps_at(bs) < MIN_STUDENT_STEPS:
        bs = SHORT_RUN_STUDENT_BATCH  # a short run: more, smaller steps
    step_cost = costs.at(costs.student, bs)
    steps = int(seconds / (epochs_post * step_cost))
    while steps > MAX_EPOCH_STEPS:  # long budgets: more epochs rather than longer ones
        more = epochs_post + max(epochs_post // 10, 1)
        batches = max(total_synth // more, 1)
        more_steps = int(student_time(more, batches) / (more * step_cost))
        if more_steps < MAX_EPOCH_STEPS // 2:  # each epoch's synthesis batch would eat the student's time
            break
        epochs_post, synth_batches, steps = more, batches, more_steps
    steps = max(steps, 1)
    schedule = dict(epochs=warmup_epochs + epochs_post, warmup_epochs=warmup_epochs,
                    warmup_synth_batches=warmup_synth_batches, synth_batches=synth_batches, student_steps=steps,
                    synth_batch_size=sb, student_batch_size=bs, g_life=warmup_epochs + epochs_post + 1,
                    lr_s=planned_lr(bs))
    reasons.append(f"then {epochs_post} epochs of {schedule['student_steps']} student steps at batch {bs} "
                   f"(lr {schedule['lr_s']:g}) and {synth_batches} synthesis batch(es)")
    reasons.append("the generator is kept for the whole run (g_life past the last epoch)")
    reasons += costs.notes
    est = estimate_seconds(costs, schedule, g)
    return Plan(budget, schedule, est + overhead, g, _costs_dict(costs), reasons)


def planned_cutmix(schedule: dict) -> float:
    """The share of each student batch to CutMix for ``schedule``: all of it in a run with
    ``CUTMIX_MIN_STEPS`` post-warm-up student steps or more, and as many images as that many steps at batch
    128 (where the threshold was measured; a batch of 64 needs twice the steps), none in a shorter one."""
    steps = (schedule["epochs"] - schedule["warmup_epochs"]) * schedule["student_steps"]
    return 1.0 if steps * min(schedule.get("student_batch_size", 128), 128) >= CUTMIX_MIN_STEPS * 128 else 0.0


def revise_student_steps(plan: dict, step_seconds: float, synth_seconds: float, done: int, remaining: float,
                         epochs_left: int) -> dict | None:
    """The plan with ``student_steps`` re-sized from the run's own timing, inside the first post-warm-up epoch:
    ``done`` steps of it ran at ``step_seconds`` each, its synthesis took ``synth_seconds``, ``epochs_left``
    epochs follow it, ``remaining`` seconds are left. Every post-warm-up epoch gets the new count (this one
    too, so it never drops below ``done``; at most ``REVISE_AT_MOST`` times the plan, or ``MAX_EPOCH_STEPS``);
    the epochs, batch sizes and learning rates stay, so a rerun given the revised schedule does the same work.
    None when the plan was within 5%."""
    s = plan["schedule"]
    old = s["student_steps"]
    budget = remaining * REVISED_SAFETY - epochs_left * synth_seconds + done * step_seconds
    steps = int(budget / (max(step_seconds, 1e-9) * (1 + epochs_left)))
    steps = max(min(steps, max(REVISE_AT_MOST * old, done), MAX_EPOCH_STEPS), done, 1)
    if abs(steps - old) <= max(1, old // 20):
        return None
    revised = dict(plan, schedule=dict(s, student_steps=steps), reasons=list(plan["reasons"]))
    revised["revised"] = {"student_steps_planned": old, "step_seconds": round(step_seconds, 5),
                          "synth_seconds": round(synth_seconds, 3), "remaining_seconds": round(remaining, 2)}
    revised["reasons"].append(f"re-sized in the first epoch after the warm-up (a student step took "
                              f"{1000 * step_seconds:.1f} ms here): {steps} student steps per epoch instead of "
                              f"{old}, to end within the {remaining:.0f} s left")
    chosen = plan.get("synthesis") or {}
    share = planned_cutmix(revised["schedule"])
    if "cutmix" in chosen and share != chosen["cutmix"]:
        # the steps that will really run decide; from the next epoch on, so this epoch stays one recipe and
        # a rerun of the revised config (fastcae.loop.DistillRun.cutmix_share) mixes the same epochs
        revised["synthesis"] = dict(chosen, cutmix=share)
        revised["revised"].update(cutmix_planned=chosen["cutmix"], cutmix_from_epoch=s["warmup_epochs"] + 1)
        revised["reasons"].append(f"CutMix {'on' if share else 'off'} from the next epoch: "
                                  f"{(s['epochs'] - s['warmup_epochs']) * steps} student steps in all")
    return revised


def typical_synth_seconds(batch_seconds: list[tuple[float, bool]], batches: int, costs: dict) -> float:
    """An epoch's synthesis time for the re-sizing: ``batches`` times the median of the run's synthesis batches
    so far (``(seconds, warm_up)`` pairs), the warm-up's scaled by the measured cost ratio of an adversarial
    step to a warm-up step (at least 1: the adversarial term adds a student pass, never removes work).

    Why: the re-sizing sizes every later epoch from the first post-warm-up one, which has one or two
    synthesis batches. On a machine with slow stretches, one such batch took 1.42 s against 0.97-1.0 s in the
    same case's other seeds, and its run ended at 50 s of 60 with a quarter of its student steps cut. The
    warm-up's dozen batches at the same batch size are a steadier measure of the same work."""
    if not batch_seconds:
        return 0.0
    pairs = [(costs["generator_adv"][k], costs["generator_warm"][k]) for k in costs.get("generator_adv", {})
             if k in costs.get("generator_warm", {})]
    ratio = max(statistics.median(a / w for a, w in pairs), 1.0) if pairs else 1.0
    return batches * statistics.median(t * ratio if warm else t for t, warm in batch_seconds)


def _costs_dict(costs: StepCosts) -> dict:
    return {"generator_warm": {str(k): v for k, v in costs.generator_warm.items()},
            "generator_adv": {str(k): v for k, v in costs.generator_adv.items()},
            "student": {str(k): v for k, v in costs.student.items()},
            "measured_seconds": costs.measured_seconds}


def describe_estimate(cfg: DistillConfig, costs: StepCosts, overhead: float = 0.0) -> Plan:
    """The estimate of an explicit schedule (no planning), as a Plan for printing; warns when it cannot finish
    within ``max_seconds``."""
    s = {k: getattr(cfg, k) for k in SCHEDULE_FIELDS}
    est = estimate_seconds(costs, s, cfg.generator_steps) + overhead
    reasons = []
    if cfg.max_seconds is not None and est > cfg.max_seconds:
        reasons.append(f"this schedule needs about {format_seconds(est)} but max_seconds={cfg.max_seconds:g}: the "
                       f"run will stop before its learning rate has decayed. Leave the schedule out to have one "
                       f"planned for the budget, or shorten it (epochs, student_steps)")
        warnings.warn(reasons[-1], UserWarning, stacklevel=3)
    elif cfg.max_seconds is None:
        reasons.append("to shorten it, pass max_seconds=<seconds> (a schedule is then planned to finish in that "
                       "time) or set epochs / student_steps")
    return Plan(cfg.max_seconds, s, est, cfg.generator_steps, _costs_dict(costs), reasons, planned=False)

