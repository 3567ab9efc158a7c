"""Mixed precision: bf16 autocast for the forwards, fp32 master weights and losses; checkpoints cross over."""

import pytest
import torch

from fastcae import distill
from fastcae.config import DistillConfig
from fastcae.steps import resolve_precision
from tests.helpers import TINY, tiny_classifier, trained_like_teacher

SHAPE = dict(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,))


def test_precision_is_validated_and_resolved_per_device():
    with pytest.raises(ValueError, match="precision='fp16'"):
        DistillConfig(precision="fp16").validate()
    assert resolve_precision(None, "cpu") == "fp32"  # CPU bf16 works, but is slower on most CPUs
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    if torch.cuda.is_available():
        want = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        assert resolve_precision(None, "cuda") == want


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_forwards_run_in_the_chosen_precision_and_weights_stay_fp32(precision):
    teacher, student = trained_like_teacher(), tiny_classifier()
    seen = {"teacher": set(), "student": set()}
    teacher[0].register_forward_hook(lambda m, i, o: seen["teacher"].add(o.dtype))
    student[0].register_forward_hook(lambda m, i, o: seen["student"].add(o.dtype))
    result = distill(teacher, student, precision=precision, **SHAPE, **TINY)
    # the steps' forwards run in bf16; the health checks and set-up forwards outside the steps stay fp32
    bf16 = precision == "bf16"
    assert (torch.bfloat16 in seen["teacher"]) == bf16 and (torch.bfloat16 in seen["student"]) == bf16
    assert result.config.precision == precision
    assert all(p.dtype == torch.float32 for p in result.student.parameters())  # fp32 master weights
    assert all(torch.isfinite(torch.tensor(h["kd"])) for h in result.history if "kd" in h)


def test_the_recorded_precision_is_the_resolved_one():
    result = distill(trained_like_teacher(), tiny_classifier(), **SHAPE, **TINY)  # precision=None: auto
    assert result.config.precision == "fp32"  # on this CPU


@pytest.mark.parametrize("first,then", [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_checkpoint_written_in_one_precision_resumes_in_the_other(tmp_path, monkeypatch, first, then):
    from fastcae.loop import DistillRun

    teacher = trained_like_teacher()
    original = DistillRun.run_epoch

    def stop_after_two(self):
        if self.epoch == 2:
            raise KeyboardInterrupt("simulated stop")
        return original(self)

    monkeypatch.setattr(DistillRun, "run_epoch", stop_after_two)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, tiny_classifier(), checkpoint_dir=tmp_path, precision=first, **SHAPE, **TINY)
    monkeypatch.setattr(DistillRun, "run_epoch", original)
    torch.manual_seed(0)
    resumed = distill(teacher, tiny_classifier(), checkpoint_dir=tmp_path, precision=then, **SHAPE, **TINY)
    assert len(resumed.history) == 3 and resumed.config.precision == then
    assert all(torch.isfinite(p).all() for p in resumed.student.parameters())


def test_bf16_works_in_the_compiled_steps():
    """autocast inside the traced step functions (aot_eager: the compiled path without C++ builds)."""
    result = distill(trained_like_teacher(), tiny_classifier(), precision="bf16", compile="aot_eager", **SHAPE,
                     **TINY)
    assert result.compile_mode == "aot_eager"  # compiled, not fallen back to eager
    assert all(torch.isfinite(torch.tensor(h["kd"])) for h in result.history if "kd" in h)


@pytest.mark.parametrize("bf16_seconds,native,want", [(0.5, True, "bf16"), (0.9, True, "fp32"),
                                                       (0.5, False, "fp32")])
def test_a_planned_cpu_run_takes_bf16_where_the_cpu_has_it_natively_and_its_steps_measure_faster(
        monkeypatch, bf16_seconds, native, want):
    """precision=None on a CPU: a planned run measures its steps in fp32 and, where the CPU computes bf16
    natively, in bf16 too, and takes bf16 only when it is ``BF16_GAIN`` times faster; the choice is recorded in
    the plan, so a resumed run and a rerun of ``result.config`` keep it."""
    import fastcae.api as api
    from fastcae.plan import StepCosts

    measured = []

    def fake_costs(cfg, *args, **kwargs):
        measured.append(cfg.precision)
        scale = bf16_seconds if cfg.precision == "bf16" else 1.0
        return StepCosts({64: 0.002 * scale}, {64: 0.003 * scale}, {128: 0.001 * scale})

    monkeypatch.setattr(api, "measure_costs", fake_costs)
    monkeypatch.setattr(api, "cpu_has_native_bf16", lambda: native)
    result = distill(trained_like_teacher(), tiny_classifier(), max_seconds=5, text_encoder="random",
                     progress=False, device="cpu", generator_width=4, **SHAPE)
    assert measured == (["fp32", "bf16"] if native else ["fp32"])
    assert result.config.precision == want
    assert result.plan["synthesis"].get("precision", "fp32") == want
    measured.clear()  # a precision the user gives is kept, and nothing is measured in the other
    given = distill(trained_like_teacher(), tiny_classifier(), max_seconds=5, text_encoder="random",
                    progress=False, device="cpu", generator_width=4, precision="fp32", **SHAPE)
    assert measured == ["fp32"] and given.config.precision == "fp32"
