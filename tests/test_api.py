"""distill(): a short run works end to end; bad input fails early with an error that names the problem."""

import pytest
import torch
from torch import nn

from fastcae import DistillConfig, distill
from tests.helpers import TINY, tiny_classifier, trained_like_teacher

SHAPE = dict(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,))


def test_short_run_returns_student_history_and_config():
    teacher, student = trained_like_teacher(), tiny_classifier()
    x, y = torch.rand(30, 1, 8, 8), torch.randint(0, 5, (30,))
    result = distill(teacher, student, ["a", "b", "c", "d", "e"], eval_data=(x, y), **SHAPE, **TINY)
    assert result.student is student and not student.training
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[0]["phase"] == "warmup" and result.history[-1]["phase"] == "distill"
    assert all(0 <= h["accuracy"] <= 1 for h in result.history)
    assert result.history[-1]["images_synthesized"] == 3 * 20
    assert isinstance(result.config, DistillConfig) and result.config.epochs == 3
    assert len(result.pool) == 60
    assert all(p.requires_grad for p in student.parameters())


@pytest.mark.parametrize("paradigm", ["nayer", "fast"])
def test_other_paradigms_run(paradigm):
    result = distill(trained_like_teacher(), tiny_classifier(), paradigm=paradigm, **SHAPE, **TINY)
    assert len(result.history) == 3


def test_cncl_off_and_magnitude_schedule_run():
    result = distill(trained_like_teacher(), tiny_classifier(), cncl_weight=0.0, noise_schedule="linear",
                     noise_magnitudes_end=(0.1, 0.1, 0.1, 0.1), **SHAPE, **TINY)
    assert result.history[-1]["cncl"] == 0.0


def test_wall_time_budget_stops_an_explicit_schedule_early():
    with pytest.warns(UserWarning, match="this schedule needs about"):
        result = distill(trained_like_teacher(), tiny_classifier(), max_seconds=1e-3, **SHAPE, **TINY)
    assert len(result.history) == 1


def test_wrong_class_count_is_named():
    with pytest.raises(ValueError, match="3 class names given but the teacher outputs 5 classes"):
        distill(trained_like_teacher(), tiny_classifier(), ["a", "b", "c"], **SHAPE, **TINY)
    with pytest.raises(ValueError, match="num_classes=4 but the teacher outputs 5"):
        distill(trained_like_teacher(), tiny_classifier(), num_classes=4, **SHAPE, **TINY)
    with pytest.raises(ValueError, match="student outputs 3 classes, the teacher 5"):
        distill(trained_like_teacher(), tiny_classifier(3), **SHAPE, **TINY)


def test_teacher_without_batchnorm_is_named():
    with pytest.raises(ValueError, match="no BatchNorm2d.*bn_weight=0"):
        distill(tiny_classifier(bn=False), tiny_classifier(), **SHAPE, **TINY)
    # and it runs without the BN loss when asked
    assert distill(tiny_classifier(bn=False), tiny_classifier(), bn_weight=0.0, **SHAPE, **TINY).history


def test_bad_image_shapes_are_named():
    with pytest.raises(ValueError, match="multiples of 4"):
        distill(trained_like_teacher(), tiny_classifier(), image_shape=(1, 10, 10), mean=(0.5,), std=(0.5,), **TINY)
    with pytest.raises(ValueError, match=r"teacher cannot take images of shape \(3, 8, 8\)"):
        distill(trained_like_teacher(), tiny_classifier(), image_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3,
                **TINY)
    fixed = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 6 * 6, 5))
    with pytest.raises(ValueError, match=r"cannot take images of shape \(1, 12, 12\)"):
        distill(fixed, tiny_classifier(), image_shape=(1, 12, 12), mean=(0.5,), std=(0.5,), **TINY)


def test_mean_std_length_is_named():
    with pytest.raises(ValueError, match="mean has 3 values for images with 1 channels"):
        distill(trained_like_teacher(), tiny_classifier(), image_shape=(1, 8, 8), mean=(0.5, 0.5, 0.5), std=(0.5,),
                **TINY)
    with pytest.raises(ValueError, match="std must be positive"):
        distill(trained_like_teacher(), tiny_classifier(), image_shape=(1, 8, 8), mean=(0.5,), std=(0.0,), **TINY)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="known paradigms: cae, nayer, fast"):
        distill(trained_like_teacher(), tiny_classifier(), **SHAPE, **{**TINY, "paradigm": "dfad"})
    with pytest.raises(TypeError, match=r"unknown distill options \['epoch'\]"):
        distill(trained_like_teacher(), tiny_classifier(), epoch=3, **SHAPE, **TINY)
    with pytest.raises(ValueError, match="unknown preset 'cifar'; known presets"):
        distill(trained_like_teacher(), tiny_classifier(), preset="cifar", **SHAPE, **TINY)
    with pytest.raises(ValueError, match="noise_magnitudes has 2 entries for 4 noise sources"):
        distill(trained_like_teacher(), tiny_classifier(), noise_magnitudes=(1.0, 1.0), **SHAPE, **TINY)


def test_bad_eval_data_is_named():
    with pytest.raises(ValueError, match="eval_data images have shape"):
        distill(trained_like_teacher(), tiny_classifier(), eval_data=(torch.rand(4, 1, 6, 6), torch.zeros(4).long()),
                **SHAPE, **TINY)
    with pytest.raises(ValueError, match="labels must be in"):
        distill(trained_like_teacher(), tiny_classifier(), eval_data=(torch.rand(4, 1, 8, 8), torch.full((4,), 7)),
                **SHAPE, **TINY)


def test_text_encoder_tensor_is_accepted_and_validated():
    emb = torch.randn(5, 12)
    assert distill(trained_like_teacher(), tiny_classifier(), text_encoder=emb, **SHAPE,
                   **{k: v for k, v in TINY.items() if k != "text_encoder"}).history
    with pytest.raises(ValueError):
        distill(trained_like_teacher(), tiny_classifier(), text_encoder=torch.randn(4, 12), **SHAPE,
                **{k: v for k, v in TINY.items() if k != "text_encoder"})


def test_same_seed_same_student():
    import copy

    teacher, student = trained_like_teacher(), tiny_classifier()
    runs = []
    for global_seed in (1, 2):  # the global RNG state before the call must not matter
        torch.manual_seed(global_seed)
        runs.append(distill(copy.deepcopy(teacher), copy.deepcopy(student), seed=3, **SHAPE, **TINY))
    for (k, a), b in zip(runs[0].student.state_dict().items(), runs[1].student.state_dict().values()):
        assert torch.equal(a, b), k
    other = distill(copy.deepcopy(teacher), copy.deepcopy(student), seed=4, **SHAPE, **TINY)
    assert not torch.equal(other.student[0].weight, runs[0].student[0].weight)


def test_preset_and_config_are_exclusive_and_keywords_override_a_preset():
    from fastcae.presets import make_config

    cfg = make_config(preset="digits", epochs=7)
    assert cfg.epochs == 7 and cfg.temperature == 4.0 and not cfg.flip
    with pytest.raises(ValueError, match="not both"):
        make_config(preset="digits", config=DistillConfig())


def test_profile_writes_a_throughput_report_without_a_gpu(tmp_path):
    import json

    result = distill(trained_like_teacher(), tiny_classifier(), profile=tmp_path / "run.json", **SHAPE, **TINY)
    report = json.loads((tmp_path / "run.json").read_text())
    phases = report["phases"]
    assert phases["synthesis"]["images"] == result.history[-1]["images_synthesized"]
    steps = sum(h.get("student_steps", 0) for h in result.history)
    assert phases["distillation"]["steps"] == steps
    assert phases["distillation"]["images"] == steps * TINY["student_batch_size"]
    assert phases["synthesis"]["images_per_s"] > 0
    assert report["gpu_metrics"].startswith("unavailable")
    assert "unavailable" in (tmp_path / "run.md").read_text()
    assert (tmp_path / "run.png").stat().st_size > 0


def test_a_teacher_that_knows_its_input_needs_no_class_names_or_normalisation(capsys):
    """A teacher built by name carries ``pretrained_cfg`` (fastcae's model specs, timm): its class names, image
    shape and mean/std are taken from there when the user gives none, and the run says so; what the user gives
    wins."""
    from fastcae.api import teacher_input
    from fastcae.datasets import DATASETS

    teacher = trained_like_teacher()
    teacher.pretrained_cfg = {"input_size": (1, 8, 8), "mean": (0.25,), "std": (0.75,),
                              "class_names": ("ant", "bee", "cat", "dog", "eel")}
    assert teacher_input(teacher) == {"input_size": (1, 8, 8), "mean": (0.25,), "std": (0.75,),
                                      "class_names": ("ant", "bee", "cat", "dog", "eel")}
    result = distill(teacher, tiny_classifier(), **dict(TINY, progress=True))
    assert result.class_names == ["ant", "bee", "cat", "dog", "eel"]
    assert result.image_shape == (1, 8, 8) and result.mean == (0.25,) and result.std == (0.75,)
    assert "from the teacher's pretrained_cfg: input_size, mean, std, class names" in capsys.readouterr().err
    given = distill(teacher, tiny_classifier(), ["a", "b", "c", "d", "e"], mean=(0.5,), **TINY)
    assert given.class_names == ["a", "b", "c", "d", "e"] and given.mean == (0.5,) and given.std == (0.75,)
    # a dataset key names the classes; a list of the wrong length is not used
    assert teacher_input(type("M", (), {"pretrained_cfg": {"dataset": "cifar10"}})())["class_names"] == \
        DATASETS["cifar10"].class_names
    teacher.pretrained_cfg = {"class_names": ("a", "b")}
    assert distill(teacher, tiny_classifier(), **SHAPE, **TINY).class_names == ["0", "1", "2", "3", "4"]
    assert teacher_input(nn.Linear(2, 2)) == {}
