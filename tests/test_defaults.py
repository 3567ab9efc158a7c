"""What a planned run decides from the teacher, the image shape and the device (``fastcae.defaults``); a field the
user set is kept."""

import pytest

from fastcae.config import DistillConfig
from fastcae.defaults import (
    BN_REFERENCE,
    CPU_LR_G,
    FIRST_BN_WEIGHT,
    PLANNED_NOISE,
    bn_noise_level,
    synthesis_defaults,
)
from tests.helpers import trained_like_teacher


def test_planned_synthesis_weighs_the_first_bn_layer_and_scales_the_bn_term_with_it():
    teacher, cfg = trained_like_teacher(), DistillConfig()
    shape, mean, std = (1, 8, 8), (0.5,), (0.5,)
    weighted = bn_noise_level(teacher, shape, mean, std, "cpu", first_weight=FIRST_BN_WEIGHT)
    plain = bn_noise_level(teacher, shape, mean, std, "cpu")
    assert weighted > plain
    chosen = synthesis_defaults(cfg, set(), shape, "cpu", teacher, mean, std)
    assert chosen["bn_first_weight"] == FIRST_BN_WEIGHT
    assert chosen["bn_weight"] == pytest.approx(cfg.bn_weight * BN_REFERENCE / weighted, abs=1e-4)
    given = synthesis_defaults(cfg.replace(bn_first_weight=1.0), {"bn_first_weight"}, shape, "cpu", teacher,
                               mean, std)
    assert "bn_first_weight" not in given
    assert given["bn_weight"] == pytest.approx(cfg.bn_weight * BN_REFERENCE / plain, abs=1e-4)
    with pytest.raises(ValueError, match="bn_first_weight"):
        DistillConfig(bn_first_weight=-1.0).validate()


def test_planned_generator_width_follows_the_device_and_image_size():
    cfg = DistillConfig()

    def width(shape, device):
        return synthesis_defaults(cfg, set(), shape, device)["generator_width"]

    assert width((3, 32, 32), "cpu") == 16 and width((1, 64, 48), "cpu") == 16
    assert width((1, 16, 16), "cpu") == 32 and width((3, 28, 32), "cpu") == 32
    assert width((3, 32, 32), "cuda") == 64 and width((1, 16, 16), "cuda") == 32
    assert "generator_width" not in synthesis_defaults(cfg, {"generator_width"}, (3, 32, 32), "cpu")


def test_planned_generator_lr_follows_the_device_and_a_users_choice_stays():
    cfg = DistillConfig()
    assert synthesis_defaults(cfg, set(), (1, 32, 32), "cpu")["lr_g"] == CPU_LR_G != cfg.lr_g
    assert "lr_g" not in synthesis_defaults(cfg, set(), (1, 32, 32), "cuda")  # NAYER's, unmeasured there
    assert "lr_g" not in synthesis_defaults(cfg, {"lr_g"}, (1, 32, 32), "cpu")
    for paradigm in ("nayer", "fast"):  # nayer lost points at 0.01, fast gained none: NAYER's
        assert "lr_g" not in synthesis_defaults(cfg.replace(paradigm=paradigm), set(), (1, 32, 32), "cpu")


def test_a_planned_cae_run_doubles_the_noise_so_the_generator_cannot_ignore_it():
    cfg = DistillConfig()
    noise = synthesis_defaults(cfg, set(), (3, 32, 32), "cpu")["noise_magnitudes"]
    assert noise == (PLANNED_NOISE,) * len(cfg.noise_sources) and PLANNED_NOISE > cfg.noise_magnitudes[0]
    two = cfg.replace(noise_sources=("gaussian", "uniform"), noise_magnitudes=(1.0, 1.0))
    assert synthesis_defaults(two, set(), (3, 32, 32), "cuda")["noise_magnitudes"] == (PLANNED_NOISE,) * 2
    for given in ({"noise_magnitudes"}, {"noise_magnitudes_end"}):  # a user's noise is theirs
        assert "noise_magnitudes" not in synthesis_defaults(cfg, given, (3, 32, 32), "cpu")
    for paradigm in ("nayer", "fast"):  # no CEND there
        assert "noise_magnitudes" not in synthesis_defaults(cfg.replace(paradigm=paradigm), set(), (3, 32, 32), "cpu")
