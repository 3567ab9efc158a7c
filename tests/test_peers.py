"""The NAYER peer harness (benchmarks/peers): the schedule fit (pure)."""

import pytest

from benchmarks.peers.schedule import RECIPE, Costs, estimate_seconds, fit_schedule

COSTS = Costs(gen_warm=1.6, gen_adv=1.8, kd=0.8, ref_synthesis_batch=40, ref_batch=64, per_synthesis_batch=0.5,
              per_pass=0.4, setup=1.0)


def _estimate(s, costs=COSTS):
    return estimate_seconds(costs, epochs=s.epochs, warmup=s.warmup, g_steps=s.g_steps, kd_steps=s.kd_steps,
                            synthesis_batch_size=s.synthesis_batch_size, batch_size=s.batch_size)


def test_fit_schedule_ends_at_the_budget_in_nayers_proportions():
    s = fit_schedule(600, COSTS)
    assert s.target_seconds == pytest.approx(0.97 * 600)
    assert 0.9 * s.target_seconds <= _estimate(s) <= s.target_seconds
    assert s.estimate_seconds == pytest.approx(_estimate(s))
    # one factor for every dimension: epochs, steps and batches all shrink together
    assert 0 < s.scale < 1
    assert s.epochs == round(RECIPE["epochs"] * s.scale)
    assert s.g_steps == max(1, round(RECIPE["g_steps"] * s.scale))
    assert s.synthesis_batch_size % 10 == 0 and s.batch_size % 8 == 0
    assert abs(s.synthesis_batch_size - RECIPE["synthesis_batch_size"] * s.scale) <= 5
    assert s.warmup == max(1, round(s.epochs / 6)) and s.g_life == max(1, round(s.epochs / 12))
    assert (s.g_loops, s.gwp_loops) == (2, 10)
    args = s.nayer_args()
    assert args["lr"] == 0.2 and args["lr_g"] == 4e-3 and args["T"] == 20 and args["ep_steps"] == s.kd_steps
    # a larger budget never buys a smaller schedule
    bigger = fit_schedule(2400, COSTS)
    assert bigger.scale > s.scale and bigger.epochs >= s.epochs and bigger.batch_size >= s.batch_size


def test_fit_schedule_runs_the_recipe_when_it_fits_and_honours_pins():
    fast = Costs(gen_warm=1e-4, gen_adv=1e-4, kd=1e-4)
    s = fit_schedule(1e6, fast)
    assert (s.epochs, s.warmup, s.g_steps, s.synthesis_batch_size, s.batch_size, s.g_life) == (120, 20, 30, 400, 512,
                                                                                                 10)
    assert s.kd_steps >= 400  # the fill may only add KD steps when the recipe leaves time over
    pinned = fit_schedule(600, COSTS, fixed={"synthesis_batch_size": 400, "batch_size": 512})
    assert (pinned.synthesis_batch_size, pinned.batch_size) == (400, 512)
    assert _estimate(pinned) <= pinned.target_seconds
    with pytest.raises(ValueError):
        fit_schedule(600, COSTS, fixed={"lr": 1})


def test_fit_schedule_with_a_budget_too_small_keeps_the_smallest_schedule():
    slow = Costs(gen_warm=50.0, gen_adv=50.0, kd=20.0)
    s = fit_schedule(10, slow)
    assert (s.epochs, s.warmup, s.g_steps, s.kd_steps) == (2, 1, 1, 1)
    assert s.synthesis_batch_size == 10 and s.batch_size == 16
    assert "deadline will cut" in s.reasons[-1]
