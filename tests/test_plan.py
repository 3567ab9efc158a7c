"""The budget planner: a schedule that ends inside the budget, errors that say the minimum, the plan recorded."""

import warnings

import pytest
import torch

from fastcae import distill
from fastcae.plan import (BudgetTooSmall, StepCosts, estimate_seconds, explicit_schedule, minimum_budget,
                          plan_schedule)
from fastcae.config import DistillConfig
from tests.helpers import tiny_classifier, trained_like_teacher

SHAPE = dict(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,))
QUICK = dict(text_encoder="random", progress=False, device="cpu", flip=False, generator_width=4, log_every=5)


def _costs(gen: float, student: float) -> StepCosts:
    return StepCosts({64: gen}, {64: 1.5 * gen}, {128: student})


@pytest.mark.parametrize("gen,student", [(0.01, 0.002), (0.2, 0.05), (1.0, 0.02), (0.05, 0.3)])
@pytest.mark.parametrize("budget", [60.0, 240.0, 3600.0])
@pytest.mark.parametrize("paradigm", ["cae", "nayer", "fast"])
def test_plan_fits_the_budget_and_finishes_its_schedule(gen, student, budget, paradigm):
    cfg = DistillConfig(paradigm=paradigm)
    costs = _costs(gen, student)
    if budget < minimum_budget(costs, cfg.generator_steps, 2.0):
        with pytest.raises(BudgetTooSmall, match="at least"):
            plan_schedule(cfg, costs, budget, overhead=2.0)
        return
    plan = plan_schedule(cfg, costs, budget, overhead=2.0)
    s = plan.schedule
    assert plan.estimate_seconds <= budget  # warm-up, the cosine and the noise schedule end by the deadline
    assert estimate_seconds(costs, s, cfg.generator_steps) + 2.0 == pytest.approx(plan.estimate_seconds)
    assert 1 <= s["warmup_epochs"] < s["epochs"] and s["epochs"] - s["warmup_epochs"] >= 4
    assert s["g_life"] > s["epochs"]  # the generator is never re-created inside a planned run
    assert s["lr_s"] == pytest.approx(0.2 * s["student_batch_size"] / 512)
    # most of the budget is used: a plan that leaves half of it idle is a poor plan
    assert plan.estimate_seconds >= 0.6 * budget


def test_a_bigger_budget_buys_more_student_steps():
    cfg, costs = DistillConfig(), _costs(0.05, 0.01)
    small, big = (plan_schedule(cfg, costs, b).schedule for b in (120.0, 1200.0))
    steps = lambda s: (s["epochs"] - s["warmup_epochs"]) * s["student_steps"] * s["student_batch_size"]  # noqa: E731
    assert steps(big) > 5 * steps(small)


def test_too_small_and_non_positive_budgets_are_errors():
    with pytest.raises(BudgetTooSmall, match=r"max_seconds=5 is too small .* at least \d+ s would work here"):
        plan_schedule(DistillConfig(), _costs(1.0, 0.1), 5.0)
    for bad in (0, -3.0):
        with pytest.raises(ValueError, match="max_seconds must be a positive number"):
            distill(trained_like_teacher(), tiny_classifier(), max_seconds=bad, **SHAPE, **QUICK)


def test_explicit_schedule_is_kept():
    assert explicit_schedule("digits", None, {}) and explicit_schedule(None, DistillConfig(), {})
    assert explicit_schedule(None, None, {"epochs": 3}) and not explicit_schedule(None, None, {"seed": 1})


def test_distill_plans_for_the_budget_records_the_plan_and_reruns_identically():
    torch.manual_seed(0)
    teacher, student = trained_like_teacher(), tiny_classifier()
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    result = distill(teacher, student, max_seconds=12, seed=3, **SHAPE, **QUICK)
    plan = result.plan
    assert plan is not None and plan["budget"] == 12
    assert result.config.epochs == plan["schedule"]["epochs"]
    assert result.history[0]["plan"] == plan
    assert len(result.history) == result.config.epochs  # finished its schedule inside the budget
    assert result.history[-1]["lr"] < 0.2 * result.config.lr_s  # the cosine reached its low-learning-rate end
    assert {"agreement", "diversity", "g_bn"} <= set(result.history[-1])
    # a rerun with the recorded config (same seed, same plan, no deadline) gives the same student
    again = tiny_classifier()
    again.load_state_dict(initial)
    rerun = distill(teacher, again, config=result.config.replace(max_seconds=None, progress=False), **SHAPE)
    for a, b in zip(result.student.state_dict().values(), rerun.student.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_follows_the_saved_plan(tmp_path):
    teacher = trained_like_teacher()
    first = distill(teacher, tiny_classifier(), max_seconds=10, checkpoint_dir=tmp_path, **SHAPE, **QUICK)
    second = distill(teacher, tiny_classifier(), max_seconds=10, checkpoint_dir=tmp_path, **SHAPE, **QUICK)
    assert second.plan == first.plan and second.config.epochs == first.config.epochs


def test_explicit_schedule_that_cannot_fit_says_so_with_the_estimate():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distill(trained_like_teacher(), tiny_classifier(), max_seconds=0.5, epochs=400, warmup_epochs=1,
                student_steps=50, synth_batch_size=20, student_batch_size=16, g_steps=2, **SHAPE, **QUICK)
    assert any("this schedule needs about" in str(w.message) for w in caught)


def test_planned_run_decides_flip_from_the_teacher_after_warm_up():
    options = {k: v for k, v in QUICK.items() if k != "flip"}
    result = distill(trained_like_teacher(), tiny_classifier(), max_seconds=12, **SHAPE, **options)
    assert result.config.flip is None
    decided = [h for h in result.history if "flip" in h]
    assert len(decided) == 1 and decided[0]["epoch"] == result.config.warmup_epochs
    assert isinstance(decided[0]["flip"], bool) and 0 <= decided[0]["flip_consistency"] <= 1
