"""The budget planner: a schedule that ends inside the budget, errors that say the minimum, the plan recorded."""

import warnings

import pytest
import torch

from fastcae import distill
from fastcae.config import PARADIGMS, DistillConfig
from fastcae.plan import (
    CUTMIX_MIN_STEPS,
    MAX_EPOCH_STEPS,
    MIN_STUDENT_STEPS,
    REVISE_AT_MOST,
    SAFETY,
    SHORT_RUN_STUDENT_BATCH,
    BudgetTooSmall,
    StepCosts,
    _epoch_seconds,
    estimate_seconds,
    explicit_schedule,
    minimum_budget,
    plan_schedule,
    planned_cutmix,
    planned_lr,
    revise_student_steps,
    typical_synth_seconds,
)
from tests.helpers import tiny_classifier, trained_like_teacher

SHAPE = dict(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,))
QUICK = dict(text_encoder="random", progress=False, device="cpu", flip=False, generator_width=4, log_every=5)


def _costs(gen: float, student: float, fixed: float = 0.0) -> StepCosts:
    """One measured point (CPU-like, cost ~ batch) or, with ``fixed``, two (GPU-like: a per-step overhead)."""
    if not fixed:
        return StepCosts({64: gen}, {64: 1.5 * gen}, {128: student})
    return StepCosts({64: fixed + gen, 256: fixed + 4 * gen}, {64: fixed + 1.5 * gen, 256: fixed + 6 * gen},
                     {128: fixed + student, 512: fixed + 4 * student})


@pytest.mark.parametrize("gen,student,fixed", [(0.01, 0.002, 0), (0.2, 0.05, 0), (1.0, 0.02, 0), (0.05, 0.3, 0),
                                               (0.001, 0.0005, 0.004)])
@pytest.mark.parametrize("budget", [60.0, 240.0, 3600.0])
@pytest.mark.parametrize("paradigm", PARADIGMS)
@pytest.mark.parametrize("classes", [10, 100])
def test_plan_fits_the_budget_and_finishes_its_schedule(gen, student, fixed, budget, paradigm, classes):
    cfg = DistillConfig(paradigm=paradigm)
    costs = _costs(gen, student, fixed)
    if budget < minimum_budget(costs, cfg.generator_steps, 2.0, classes):
        with pytest.raises(BudgetTooSmall, match="at least"):
            plan_schedule(cfg, costs, budget, overhead=2.0, num_classes=classes)
        return
    plan = plan_schedule(cfg, costs, budget, overhead=2.0, num_classes=classes)
    s = plan.schedule
    assert s["synth_batch_size"] >= 2 * classes  # every class at least twice in a synthesis batch
    assert plan.estimate_seconds <= budget  # warm-up, the cosine and the noise schedule end by the deadline
    assert estimate_seconds(costs, s, cfg.generator_steps) + 2.0 == pytest.approx(plan.estimate_seconds)
    assert 1 <= s["warmup_epochs"] < s["epochs"] and s["epochs"] - s["warmup_epochs"] >= 4
    assert s["g_life"] > s["epochs"]  # the generator is never re-created inside a planned run
    bs = s["student_batch_size"]
    assert s["lr_s"] == pytest.approx(0.2 * (bs / 512) ** 0.5 if bs >= 128 else 0.05, abs=1e-6)  # 0.1 at 128
    # most of the budget is used: a plan that leaves half of it idle is a poor plan
    assert plan.estimate_seconds >= 0.6 * budget


def test_a_bigger_budget_buys_more_student_steps():
    cfg, costs = DistillConfig(), _costs(0.05, 0.01)
    small, big = (plan_schedule(cfg, costs, b).schedule for b in (120.0, 1200.0))

    def steps(s):
        return (s["epochs"] - s["warmup_epochs"]) * s["student_steps"] * s["student_batch_size"]

    assert steps(big) > 5 * steps(small)


def test_a_short_run_halves_the_student_batch_for_more_steps_and_a_longer_one_keeps_it(monkeypatch):
    cfg, costs = DistillConfig(), _costs(0.2, 0.1)  # MobileNetV3-like step costs on 2 CPU cores

    def posts(s):
        return (s["epochs"] - s["warmup_epochs"]) * s["student_steps"]

    short = plan_schedule(cfg, costs, 60.0).schedule
    assert short["student_batch_size"] == SHORT_RUN_STUDENT_BATCH and short["lr_s"] == pytest.approx(0.05)
    monkeypatch.setattr("fastcae.plan.SHORT_RUN_STUDENT_BATCH", 128)  # the rule off: what the plan was before
    before = plan_schedule(cfg, costs, 60.0).schedule
    assert before["student_batch_size"] == 128 and posts(before) < MIN_STUDENT_STEPS
    assert posts(short) >= 1.8 * posts(before)  # about twice the steps, on the same images
    monkeypatch.undo()
    # 240 s: about 1,100 steps at 128, below the bound (natural images at 600 s were here): batch 64
    middle = plan_schedule(cfg, costs, 240.0).schedule
    assert middle["student_batch_size"] == SHORT_RUN_STUDENT_BATCH and posts(middle) >= MIN_STUDENT_STEPS
    long = plan_schedule(cfg, costs, 600.0).schedule
    assert long["student_batch_size"] == 128 and posts(long) >= MIN_STUDENT_STEPS


@pytest.mark.parametrize("speed", [0.3, 0.5, 0.8, 1.0, 1.3, 2.0])
def test_the_first_epoch_after_warm_up_re_sizes_the_student_steps_to_the_time_left(speed):
    """A device whose steps really take ``speed`` times the measured cost gets every post-warm-up epoch re-sized
    to end within the time left; the epochs, batches and learning rate stay as planned."""
    costs = _costs(0.05, 0.01)
    plan = plan_schedule(DistillConfig(), costs, 240.0).to_dict()
    s = plan["schedule"]
    posts = s["epochs"] - s["warmup_epochs"]
    synth = speed * s["synth_batches"] * costs.at(costs.generator_adv, s["synth_batch_size"]) * plan["generator_steps"]
    step = speed * costs.at(costs.student, s["student_batch_size"])
    _, post_estimate = _epoch_seconds(costs, s, plan["generator_steps"])
    done = 12
    remaining = posts * post_estimate / SAFETY - synth - done * step  # what the plan left for these epochs
    revised = revise_student_steps(plan, step, synth, done, remaining, posts - 1)
    if speed == 1.0:  # the measurement was right: only the safety margin is given back
        assert revised is None or revised["schedule"]["student_steps"] >= s["student_steps"]
        return
    new = revised["schedule"]
    assert {k: v for k, v in new.items() if k != "student_steps"} == {
        k: v for k, v in s.items() if k != "student_steps"}
    assert (new["student_steps"] > s["student_steps"]) == (speed < 1)
    real = (new["student_steps"] - done) * step + (posts - 1) * (synth + new["student_steps"] * step)
    capped = new["student_steps"] in (REVISE_AT_MOST * s["student_steps"], MAX_EPOCH_STEPS)  # the cap, or 400
    assert real <= remaining and (real >= 0.9 * remaining or capped)
    assert revised["revised"]["student_steps_planned"] == s["student_steps"]
    assert "re-sized" in revised["reasons"][-1] and revised["reasons"][:-1] == plan["reasons"]
    # never fewer steps than the epoch has already run
    assert revise_student_steps(plan, step, synth, 50, 1.0, posts - 1)["schedule"]["student_steps"] == 50


def test_too_small_and_non_positive_budgets_are_errors():
    with pytest.raises(BudgetTooSmall, match=r"max_seconds=5 is too small .* at least \d+ s would work here"):
        plan_schedule(DistillConfig(), _costs(1.0, 0.1), 5.0)
    for bad in (0, -3.0):
        with pytest.raises(ValueError, match="max_seconds must be a positive number"):
            distill(trained_like_teacher(), tiny_classifier(), max_seconds=bad, **SHAPE, **QUICK)


def test_explicit_schedule_is_kept():
    assert explicit_schedule("digits", None, {}) and explicit_schedule(None, DistillConfig(), {})
    assert explicit_schedule(None, None, {"epochs": 3}) and not explicit_schedule(None, None, {"seed": 1})


def test_distill_plans_for_the_budget_records_the_plan_and_reruns_identically(monkeypatch):
    # the deadline never cuts an epoch here: on a loaded machine it may cut the last one, and a rerun without the
    # budget would then do more work (that cut is recorded: see the next test); planning still sees the deadline
    monkeypatch.setattr("fastcae.budget.Deadline.overruns", lambda self, ahead=0.0: False)
    torch.manual_seed(0)
    teacher, student = trained_like_teacher(), tiny_classifier()
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    result = distill(teacher, student, max_seconds=12, seed=3, **SHAPE, **QUICK)
    plan = result.plan
    assert plan is not None and plan["budget"] == 12
    assert result.config.epochs == plan["schedule"]["epochs"]
    assert result.config.student_steps == plan["schedule"]["student_steps"]
    first = result.history[0]["plan"]  # as made; the result's may have been re-sized after the warm-up
    assert first == plan or (plan["revised"]["student_steps_planned"] == first["schedule"]["student_steps"]
                             and any("plan_revised" in h for h in result.history))
    assert len(result.history) == result.config.epochs
    assert not any("budget_cut" in h for h in result.history)
    assert result.history[-1]["lr"] < 0.2 * result.config.lr_s  # the cosine reached its low-learning-rate end
    assert {"agreement", "diversity", "g_bn"} <= set(result.history[-1])
    # a rerun with the recorded config (same seed, same plan, no deadline) gives the same student
    again = tiny_classifier()
    again.load_state_dict(initial)
    rerun = distill(teacher, again, config=result.config.replace(max_seconds=None, progress=False), **SHAPE)
    for a, b in zip(result.student.state_dict().values(), rerun.student.state_dict().values()):
        assert torch.equal(a, b)


def test_cutmix_is_planned_for_runs_with_many_student_steps_and_a_given_share_is_kept(monkeypatch):
    short = dict(epochs=5, warmup_epochs=1, student_steps=CUTMIX_MIN_STEPS // 4 - 1)
    assert planned_cutmix(short) == 0.0 and planned_cutmix(dict(short, epochs=6)) == 1.0
    # at batch 64 the steps must also carry as many images as CUTMIX_MIN_STEPS steps of 128
    assert planned_cutmix(dict(short, epochs=6, student_batch_size=64)) == 0.0
    assert planned_cutmix(dict(short, epochs=10, student_batch_size=64)) == 1.0
    monkeypatch.setattr("fastcae.plan.CUTMIX_MIN_STEPS", 1)  # the tiny run has a few dozen steps
    planned = distill(trained_like_teacher(), tiny_classifier(), max_seconds=6, **SHAPE, **QUICK)
    assert planned.config.cutmix == 1.0 and planned.plan["synthesis"]["cutmix"] == 1.0
    given = distill(trained_like_teacher(), tiny_classifier(), max_seconds=6, cutmix=0.25, **SHAPE, **QUICK)
    assert given.config.cutmix == 0.25 and "cutmix" not in given.plan["synthesis"]
    with pytest.raises(ValueError, match="cutmix"):
        distill(trained_like_teacher(), tiny_classifier(), max_seconds=6, cutmix=2, **SHAPE, **QUICK)


def test_the_re_sizing_decides_cutmix_again_from_the_steps_that_will_run(monkeypatch):
    costs = _costs(0.05, 0.01)
    plan = plan_schedule(DistillConfig(), costs, 240.0).to_dict()
    s = plan["schedule"]
    posts = s["epochs"] - s["warmup_epochs"]
    # a threshold just above the planned steps: off as planned; a device twice as fast re-sizes past it
    monkeypatch.setattr("fastcae.plan.CUTMIX_MIN_STEPS", posts * s["student_steps"] + 1)
    plan["synthesis"] = {"cutmix": planned_cutmix(s)}
    assert plan["synthesis"]["cutmix"] == 0.0
    step = 0.5 * costs.at(costs.student, s["student_batch_size"])
    revised = revise_student_steps(plan, step, 0.1, 5, 0.5 * estimate_seconds(costs, s, 10), posts - 1)
    assert revised["synthesis"]["cutmix"] == 1.0 and plan["synthesis"]["cutmix"] == 0.0
    assert revised["revised"]["cutmix_planned"] == 0.0
    assert revised["revised"]["cutmix_from_epoch"] == s["warmup_epochs"] + 1
    assert "CutMix on from the next epoch" in revised["reasons"][-1]


def test_a_rerun_mixes_the_epochs_the_re_sized_run_mixed(monkeypatch):
    """The recorded plan says from which epoch the re-sizing turned CutMix on: a rerun (or a resumed run) of
    that config mixes from the same epoch, and not before."""
    import fastcae.steps

    shares = []
    real = fastcae.steps.cutmix
    monkeypatch.setattr(fastcae.steps, "cutmix", lambda x, y, share: shares.append(share) or real(x, y, share))
    schedule = dict(epochs=4, warmup_epochs=1, warmup_synth_batches=1, synth_batches=1, student_steps=3,
                    synth_batch_size=20, student_batch_size=16, g_life=5, lr_s=0.05)
    plan = {"schedule": schedule, "synthesis": {"cutmix": 1.0}, "reasons": [],
            "revised": {"student_steps_planned": 2, "cutmix_planned": 0.0, "cutmix_from_epoch": 2}}
    cfg = DistillConfig(**schedule, plan=plan, cutmix=1.0, g_steps=1, **QUICK)
    result = distill(trained_like_teacher(), tiny_classifier(), config=cfg, **SHAPE)
    assert len(result.history) == 4
    assert shares == [1.0] * 6  # epochs 3 and 4 (index 2, 3), three steps each; epoch 2 unmixed


def test_resume_follows_the_saved_plan(tmp_path):
    teacher = trained_like_teacher()
    first = distill(teacher, tiny_classifier(), max_seconds=10, checkpoint_dir=tmp_path, **SHAPE, **QUICK)
    second = distill(teacher, tiny_classifier(), max_seconds=10, checkpoint_dir=tmp_path, **SHAPE, **QUICK)
    assert second.plan == first.plan and second.config.epochs == first.config.epochs


def test_explicit_schedule_that_cannot_fit_says_so_with_the_estimate():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = distill(trained_like_teacher(), tiny_classifier(), max_seconds=0.5, epochs=400, warmup_epochs=1,
                         student_steps=50, synth_batch_size=20, student_batch_size=16, g_steps=2, **SHAPE, **QUICK)
    assert any("this schedule needs about" in str(w.message) for w in caught)
    # the budget cut the run inside an epoch, or between epochs (a slow machine can finish the warm-up epoch's
    # batches just past the deadline)
    assert len(result.history) < 400 and result.history[-1].get("budget_cut") in ("synthesis", "distillation",
                                                                                 "epochs")


def test_planned_run_decides_flip_from_the_teacher_after_warm_up():
    options = {k: v for k, v in QUICK.items() if k != "flip"}
    result = distill(trained_like_teacher(), tiny_classifier(), max_seconds=12, **SHAPE, **options)
    assert result.config.flip is None
    decided = [h for h in result.history if "flip" in h]
    assert len(decided) == 1 and decided[0]["epoch"] == result.config.warmup_epochs
    assert isinstance(decided[0]["flip"], bool) and 0 <= decided[0]["flip_consistency"] <= 1


def test_without_a_budget_the_estimate_is_printed_before_the_run(capsys):
    options = dict(QUICK, progress=True)
    distill(trained_like_teacher(), tiny_classifier(), epochs=2, warmup_epochs=1, student_steps=2,
            synth_batch_size=20, student_batch_size=16, g_steps=1, **SHAPE, **options)
    err = capsys.readouterr().err
    assert "estimated" in err and "on this device" in err
    assert "pass max_seconds=" in err  # how to shorten it


@pytest.mark.parametrize("budget", [3.3, 6.0, 9.7, 13.1, 20.05])
def test_a_budgeted_run_ends_by_its_deadline_not_one_piece_of_work_after(monkeypatch, budget):
    """On a fake clock where a synthesis batch takes 1 s, a student step 0.1 s and an evaluation 0.5 s, the run
    (its last evaluation included) ends by the deadline and wastes less than the least epoch (2 s): every check
    looks ahead one piece of work. The last epoch is evaluated."""
    import fastcae.loop as loop
    from fastcae.presets import make_config
    from tests.helpers import TINY

    clock = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])
    cfg = make_config(**dict(TINY, epochs=50, warmup_epochs=1, warmup_synth_batches=2, synth_batches=2,
                             student_steps=20, log_every=5, max_seconds=budget))
    run = loop.DistillRun(cfg, trained_like_teacher(), tiny_classifier(), torch.randn(5, 16), (1, 8, 8), (0.5,),
                          (0.5,), "cpu")

    def costs(fn, seconds):
        def timed(*args, **kwargs):
            out = fn(*args, **kwargs)
            clock[0] += seconds
            return out
        return timed

    monkeypatch.setattr(run.synth, "synthesize", costs(run.synth.synthesize, 1.0))
    monkeypatch.setattr(run.steps, "student_step", costs(run.steps.student_step, 0.1))
    monkeypatch.setattr(run, "evaluate", costs(lambda: 0.5, 0.5))
    run.eval_set = object()  # evaluate() is faked; only its cost matters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the health monitor's advice on a generator this small
        loop.train(run)
    used = clock[0] - 100.0
    assert budget - 2.0 <= used <= budget + 1e-9
    assert run.history[-1]["accuracy"] == 0.5 and run.epoch < cfg.epochs


def test_the_re_sizing_times_steps_by_their_median_so_a_moment_of_other_work_does_not_size_the_run(monkeypatch):
    """On a fake clock where a student step takes 0.1 s, except one step inside the timed window that other work
    on the machine held up for 3 s, the re-sizing is given 0.1 s a step (the mean over the window's 8 steps is
    0.46 s; a real run re-sized on such a mean ended at 139 s of a 240 s budget)."""
    import fastcae.loop as loop
    from fastcae.presets import make_config
    from tests.helpers import TINY

    clock = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])
    cfg = make_config(**dict(TINY, epochs=3, warmup_epochs=1, warmup_synth_batches=1, synth_batches=1,
                             student_steps=40, log_every=5, max_seconds=1000.0))
    cfg = cfg.replace(plan={"planned": True, "schedule": {}, "reasons": []})
    run = loop.DistillRun(cfg, trained_like_teacher(), tiny_classifier(), torch.randn(5, 16), (1, 8, 8), (0.5,),
                          (0.5,), "cpu")
    run.deadline.at = 1e9
    first, last = run.deadline.revision_timer(run.cfg, 1).window
    assert last - first == 8
    calls = {"n": 0}
    real_step = run.steps.student_step

    def step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls["n"] += 1
        clock[0] += 3.0 if calls["n"] == first + 2 else 0.1  # the second timed step was held up
        return out

    seen = []
    monkeypatch.setattr(run.steps, "student_step", step)
    monkeypatch.setattr(loop, "revise_student_steps", lambda plan, step_seconds, *a: seen.append(step_seconds))
    run.pool.push(torch.rand(20, 1, 8, 8), torch.arange(20) % 5, torch.arange(20))  # what synthesis would keep
    run.train_student(1)
    assert seen == [pytest.approx(0.1)]


def test_the_planned_student_lr_scales_with_the_square_root_of_the_batch():
    assert [planned_lr(b) for b in (512, 256, 128)] == pytest.approx([0.2, 0.2 / 2 ** 0.5, 0.1], abs=1e-6)
    assert planned_lr(SHORT_RUN_STUDENT_BATCH) == 0.05  # the short runs' rate, as measured


def test_one_slow_synthesis_batch_does_not_size_the_run():
    costs = {"generator_warm": {"64": 0.10}, "generator_adv": {"64": 0.12}, "student": {"128": 0.05}}
    warm_up = [(1.0, True)] * 9 + [(1.1, True)]
    # the first post-warm-up batch fell in a slow stretch: the warm-up's batches, scaled by 1.2, decide
    assert typical_synth_seconds(warm_up + [(1.7, False)], 2, costs) == pytest.approx(2 * 1.2)
    # a noisy measurement that puts the adversarial step below the warm-up one scales by 1, never less
    noisy = dict(costs, generator_adv={"64": 0.09})
    assert typical_synth_seconds(warm_up + [(1.7, False)], 1, noisy) == pytest.approx(1.0)
    # without a warm-up in this process (a resumed run) the epoch's own batches are all there is
    assert typical_synth_seconds([(1.5, False)], 1, costs) == pytest.approx(1.5)
    assert typical_synth_seconds([], 1, costs) == 0.0


def test_a_synthesis_batch_is_timed_when_its_device_work_is_done_not_when_it_was_launched(monkeypatch):
    """On CUDA a synthesis batch returns as soon as its kernels are queued (its health terms stay on the
    device). On a fake clock where launching takes 0.01 s and the queued work 1 s, which only a synchronise
    waits for, the batch is timed at 1.01 s: the deadline's look-ahead and the re-sizing see the real cost."""
    import fastcae.loop as loop
    from fastcae.presets import make_config
    from tests.helpers import TINY

    clock = [100.0]
    queued = [0.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])

    def synchronize(device=None):
        clock[0] += queued[0]
        queued[0] = 0.0

    monkeypatch.setattr(loop.torch.cuda, "synchronize", synchronize)
    cfg = make_config(**dict(TINY, epochs=2, warmup_epochs=1, warmup_synth_batches=1, synth_batches=1))
    run = loop.DistillRun(cfg, trained_like_teacher(), tiny_classifier(), torch.randn(5, 16), (1, 8, 8), (0.5,),
                          (0.5,), "cpu")
    real = run.synth.synthesize

    def launched(*args, **kwargs):
        out = real(*args, **kwargs)
        clock[0] += 0.01  # the launches
        queued[0] += 1.0  # the work they queued
        return out

    monkeypatch.setattr(run.synth, "synthesize", launched)
    run.deadline.device = torch.device("cuda")  # only the clock reads it here: the models stay on the CPU
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.synthesize(0)
    assert run.deadline.batch_seconds == pytest.approx(1.01)
