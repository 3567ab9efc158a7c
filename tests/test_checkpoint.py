"""Checkpoints: atomic round trip, resume giving the same continuation, corrupt or foreign files named."""

import random
import warnings

import pytest
import torch

from fastcae import checkpoint as ckpt
from fastcae import distill
from fastcae.config import PARADIGMS
from fastcae.loop import DistillRun
from fastcae.presets import make_config
from tests.helpers import TINY, tiny_classifier, trained_like_teacher

SHAPE = dict(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,))


def _run(tmp, **kw):
    torch.manual_seed(1)
    teacher, student = trained_like_teacher(), tiny_classifier()
    return distill(teacher, student, checkpoint_dir=tmp, **SHAPE, **{**TINY, **kw}), teacher


@pytest.mark.parametrize("compile_mode", [False, "aot_eager"], ids=["eager", "compiled"])
@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_resume_gives_the_same_continuation(tmp_path, monkeypatch, paradigm, compile_mode):
    """Bit-identical, eager or compiled (where the fused optimisers' state goes through the checkpoint)."""
    straight, _ = _run(tmp_path / "a", paradigm=paradigm, epochs=4, g_life=2, compile=compile_mode)

    original = DistillRun.run_epoch

    def crash_after_two(self):
        if self.epoch == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(self)

    monkeypatch.setattr(DistillRun, "run_epoch", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", paradigm=paradigm, epochs=4, g_life=2, compile=compile_mode)
    monkeypatch.setattr(DistillRun, "run_epoch", original)
    resumed, _ = _run(tmp_path / "b", paradigm=paradigm, epochs=4, g_life=2, compile=compile_mode)

    assert len(resumed.history) == 4
    for (k, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), f"student {k} differs after resume"
    for key in ("g_bn", "kd"):
        assert straight.history[-1][key] == resumed.history[-1][key]


def test_save_is_atomic_and_keeps_the_previous(tmp_path):
    cfg = make_config(**TINY)
    ckpt.save(tmp_path, {"x": torch.ones(2)}, cfg)
    ckpt.save(tmp_path, {"x": torch.zeros(2)}, cfg)
    assert (tmp_path / ckpt.LATEST).exists() and (tmp_path / ckpt.PREVIOUS).exists()
    assert not list(tmp_path.glob("*.tmp"))  # no temporary left behind
    assert torch.equal(ckpt.load(tmp_path, cfg)["state"]["x"], torch.zeros(2))


def test_truncated_checkpoint_falls_back_to_the_previous(tmp_path):
    cfg = make_config(**TINY)
    ckpt.save(tmp_path, {"x": torch.ones(2)}, cfg)
    ckpt.save(tmp_path, {"x": torch.zeros(2)}, cfg)
    latest = tmp_path / ckpt.LATEST
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        payload = ckpt.load(tmp_path, cfg)
    assert torch.equal(payload["state"]["x"], torch.ones(2))


def test_corrupt_checkpoint_without_fallback_is_named(tmp_path):
    cfg = make_config(**TINY)
    (tmp_path / ckpt.LATEST).write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load(tmp_path, cfg)


def test_foreign_and_pickled_code_checkpoints_are_refused(tmp_path):
    cfg = make_config(**TINY)
    torch.save({"weights": torch.ones(1)}, tmp_path / ckpt.LATEST)
    with pytest.raises(ckpt.CheckpointError, match="not a fastcae checkpoint"):
        ckpt.load(tmp_path, cfg)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": ckpt.FORMAT, "evil": Evil()}, tmp_path / ckpt.LATEST)
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load(tmp_path, cfg)  # weights_only refuses to run code


def test_checkpoint_from_another_configuration_is_refused(tmp_path):
    ckpt.save(tmp_path, {"x": torch.ones(1)}, make_config(**TINY))
    with pytest.raises(ckpt.CheckpointError, match="synth_batch_size: checkpoint 20, this run 40"):
        ckpt.load(tmp_path, make_config(**{**TINY, "synth_batch_size": 40}))


def test_distill_refuses_to_resume_another_configuration(tmp_path):
    _run(tmp_path, epochs=2)
    with pytest.raises(ckpt.CheckpointError, match="paradigm"):
        _run(tmp_path, epochs=2, paradigm="nayer")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    class Poisoned(torch.nn.Module):
        """A teacher that starts answering NaN in the second epoch."""

        def __init__(self):
            super().__init__()
            self.net = trained_like_teacher()
            self.calls = 0
            self.poison_after = None

        def forward(self, x):
            self.calls += 1
            out = self.net(x)
            if self.poison_after is not None and self.calls > self.poison_after:
                out = out * float("nan")
            return out

    teacher = Poisoned().eval()
    student = tiny_classifier()
    # epoch 1 = warm-up (1 batch x 2 steps + probe); poison from the second epoch on
    teacher.poison_after = 1 + 2
    with pytest.raises(FloatingPointError, match="non-finite .*epoch 2"):
        distill(teacher, student, checkpoint_dir=tmp_path, **SHAPE, **TINY)
    payload = ckpt.load(tmp_path, make_config(**TINY))
    assert payload["state"]["epoch"] == 1  # the good epoch-1 checkpoint is intact
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(torch.isfinite(v).all() for v in payload["state"]["student"].values() if v.is_floating_point())


def _draws():
    return torch.rand(3), random.random()


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    torch.save({"rng": ckpt.rng_state()}, tmp_path / "rng.pt")
    want = _draws()
    _draws()  # move both generators on
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = _draws()
    assert torch.equal(got[0], want[0]) and got[1] == want[1]


def test_set_rng_state_reads_the_earlier_teacher_format():
    state = {"cpu": torch.get_rng_state()}  # what teacher checkpoints of earlier versions hold (CPU runs)
    want = torch.rand(3)
    ckpt.set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), want)
