"""Presets (config-only and pairs): names, contents, make_config/distill/CLI defaults, and safe loading of teacher
checkpoints."""

import json

import pytest
import torch
from torch import nn

import fastcae.api
from fastcae import distill
from fastcae.apps.cli import load_weights, main
from fastcae.config import PARADIGMS
from fastcae.datasets import CIFAR10_CLASSES, CIFAR100_CLASSES
from fastcae.models import create_model, list_models
from fastcae.presets import get_preset, list_presets, make_config
from tests.helpers import TINY, tiny_classifier, trained_like_teacher

PAIRS = ["resnet34-resnet18", "vgg11_bn-resnet18", "wrn40_2-wrn16_1", "wrn40_2-wrn40_1", "wrn40_2-wrn16_2"]


def test_the_ten_pairs_are_listed_with_their_data_and_published_numbers():
    assert list_presets(pairs=True) == sorted(f"{d}-{p}" for d in ("cifar10", "cifar100") for p in PAIRS)
    for name in list_presets(pairs=True):
        p = get_preset(name)
        assert p.is_pair
        assert p.teacher in list_models() and p.student in list_models()
        assert p.image_shape == (3, 32, 32) and p.config["warmup_epochs"] == 20 and p.config["lr_s"] == 0.2
        assert p.expected["teacher"] > p.expected["cmi"] > p.expected["fast10"]
    c10, c100 = get_preset("cifar10-resnet34-resnet18"), get_preset("cifar100-wrn40_2-wrn16_2")
    assert c10.class_names == CIFAR10_CLASSES and c10.num_classes == 10 and c10.config["epochs"] == 120
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2023, 0.1994, 0.2010)
    assert c100.num_classes == 100 and c100.config["epochs"] == 220 and c100.std == (0.2675, 0.2565, 0.2761)
    assert c100.expected == {"teacher": 75.83, "fast10": 65.12, "cmi": 68.75, "nayer": 71.7}
    assert c10.expected["teacher"] == 95.70 and c10.expected["nayer"] is None
    # torchvision's order is alphabetical; spot-check the ends and a multi-word name
    assert len(set(CIFAR100_CLASSES)) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)
    assert CIFAR100_CLASSES[0] == "apple" and CIFAR100_CLASSES[47] == "maple_tree" and CIFAR100_CLASSES[99] == "worm"
    assert "maple tree" in c100.prompt_names


def test_list_presets_names_every_preset_make_config_accepts():
    config_only = list_presets(pairs=False)
    assert list_presets() == config_only + list_presets(pairs=True) and config_only == sorted(config_only)
    assert {"digits", "nayer-cifar10", "nayer-cifar100", "nayer-tinyimagenet"} <= set(config_only)
    for name in config_only:  # a schedule: no dataset, no models
        p = get_preset(name)
        assert p.name == name and not p.is_pair and p.dataset is None and p.teacher is None and p.student is None
    for name in list_presets():
        make_config(preset=name)


def test_nayer_schedules_have_one_home():
    """The config-only nayer-<dataset> presets and the <dataset>-* pairs carry the same NAYER setting: the
    schedule and loss weights for every paradigm, NAYER's generator steps (METHOD.md section 2) for nayer only."""
    for dataset, g_steps in (("cifar10", 30), ("cifar100", 40)):
        pair = get_preset(f"{dataset}-wrn40_2-wrn16_2")
        assert get_preset(f"nayer-{dataset}").config == pair.config
        for paradigm in PARADIGMS:
            a = make_config(preset=f"nayer-{dataset}", paradigm=paradigm)
            b = make_config(preset=pair.name, paradigm=paradigm)
            assert a == b
        assert make_config(preset=f"nayer-{dataset}", paradigm="nayer").generator_steps == g_steps
    assert make_config(preset="nayer-tinyimagenet", paradigm="nayer").generator_steps == 60
    assert make_config(preset="nayer-cifar100").generator_steps == 10  # cae keeps its own default


def test_an_unknown_preset_lists_the_known_ones():
    # get_preset serves both kinds, so it names both, as make_config does
    with pytest.raises(ValueError, match="unknown preset 'cifar10-r34'; known presets: digits, .*cifar10-resnet34"):
        get_preset("cifar10-r34")
    with pytest.raises(ValueError, match="known presets: .*digits.*cifar100-wrn40_2-wrn16_2"):
        make_config(preset="nope")


def test_make_config_takes_both_kinds_of_preset():
    assert make_config(preset="digits").epochs == get_preset("digits").config["epochs"]
    cae = make_config(preset="cifar100-wrn40_2-wrn16_2")
    assert cae.epochs == 220 and cae.g_steps is None and cae.generator_steps == 10  # cae keeps its own default
    assert make_config(preset="cifar100-wrn40_2-wrn16_2", paradigm="nayer").generator_steps == 40
    assert make_config(preset="cifar10-wrn40_2-wrn16_1", paradigm="nayer").generator_steps == 30
    assert make_config(preset="cifar100-wrn40_2-wrn16_2", paradigm="nayer", g_steps=7).g_steps == 7
    assert make_config(preset="cifar10-wrn40_2-wrn16_1", epochs=25).epochs == 25


class _Stop(Exception):
    pass


@pytest.fixture
def run_args(monkeypatch):
    """Record what distill hands the training loop (image shape, mean, std, class names), then stop: the run
    itself is covered elsewhere (the CLI test below and test_api)."""
    seen = {}

    def spy(cfg, teacher, student, embeddings, image_shape, mean, std, *rest):
        seen.update(image_shape=tuple(image_shape), mean=tuple(mean), std=tuple(std), num_embeddings=len(embeddings))
        raise _Stop

    def names(class_names, **kwargs):
        seen["class_names"] = list(class_names)
        return torch.randn(len(class_names), 8)

    monkeypatch.setattr(fastcae.api, "DistillRun", spy)
    monkeypatch.setattr(fastcae.api, "class_embeddings", names)
    return seen


def _distill(*args, **kwargs):
    with pytest.raises(_Stop):
        distill(*args, **kwargs)


def test_distill_takes_shape_norm_and_classes_from_a_pair_preset(run_args):
    teacher = trained_like_teacher(num_classes=100, channels=3)
    _distill(teacher, tiny_classifier(100, 3), preset="cifar100-wrn40_2-wrn16_2", **TINY)
    assert run_args.pop("class_names")[:2] == ["apple", "aquarium fish"]
    assert run_args == dict(image_shape=(3, 32, 32), mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
                            num_embeddings=100)


def test_explicit_arguments_override_the_pair_preset_and_no_preset_keeps_cifar10(run_args):
    teacher = trained_like_teacher(num_classes=10, channels=1)
    _distill(teacher, tiny_classifier(10, 1), preset="cifar10-resnet34-resnet18", image_shape=(1, 8, 8),
             mean=(0.5,), std=(0.25,), class_names="abcdefghij", **TINY)
    assert run_args["image_shape"] == (1, 8, 8) and run_args["mean"] == (0.5,) and run_args["std"] == (0.25,)
    assert run_args["class_names"] == list("abcdefghij")
    _distill(trained_like_teacher(5, 3), tiny_classifier(5, 3), **TINY)
    assert run_args["image_shape"] == (3, 32, 32) and run_args["mean"] == (0.4914, 0.4822, 0.4465)
    assert run_args["class_names"] == ["0", "1", "2", "3", "4"]


def test_a_teacher_of_the_wrong_width_for_the_preset_is_refused():
    with pytest.raises(ValueError, match="is for cifar10 with 10 classes but the teacher outputs 100"):
        distill(trained_like_teacher(100, 3), tiny_classifier(100, 3), preset="cifar10-resnet34-resnet18", **TINY)


def test_cli_lists_presets_with_accuracies(capsys):
    assert main(["presets"]) == 0
    table = capsys.readouterr().out
    assert "cifar100-wrn40_2-wrn16_2" in table and "75.83" in table and "71.70" in table
    assert main(["distill", "--list-presets"]) == 0
    assert "cifar10-resnet34-resnet18" in capsys.readouterr().out


def test_cli_distill_fills_models_classes_and_shape_from_a_pair_preset(tmp_path, capsys):
    teacher = create_model("wrn40_2", num_classes=10)
    torch.save(teacher, tmp_path / "teacher.pt")  # a whole zoo model, as some users save them
    fast = ["--set", "epochs=1", "--set", "warmup_epochs=1", "--set", "warmup_synth_batches=1", "--set", "g_steps=1",
            "--set", "synth_batch_size=10", "--set", "generator_width=4", "--set", "text_encoder=random",
            "--set", "device=cpu", "--no-progress"]
    out = tmp_path / "run"
    assert main(["distill", "--preset", "cifar10-wrn40_2-wrn16_1", "--teacher", str(tmp_path / "teacher.pt"),
                 "--out", str(out), *fast]) == 0
    printed = capsys.readouterr().out
    assert "published for cifar10-wrn40_2-wrn16_1: teacher 94.87%" in printed
    create_model("wrn16_1", num_classes=10).load_state_dict(torch.load(out / "student.pt", weights_only=True))
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 1 and config["student_batch_size"] == 512 and config["lr_min"] == 2e-4


def test_load_weights_takes_a_state_dict_or_a_whole_zoo_model(tmp_path):
    source = create_model("wrn16_1", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "state.pt")
    torch.save(source, tmp_path / "whole.pt")
    for name in ("state.pt", "whole.pt"):
        loaded = load_weights(create_model("wrn16_1", num_classes=10), tmp_path / name)
        for a, b in zip(loaded.state_dict().values(), source.state_dict().values()):
            assert torch.equal(a, b)


class CustomNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)


EXECUTED = []


def _payload(*args):
    EXECUTED.append(args)
    return nn.Linear(1, 1)


class Malicious:
    def __reduce__(self):
        return (_payload, ("ran",))


def test_load_weights_will_not_unpickle_other_code(tmp_path):
    torch.save(CustomNet(), tmp_path / "custom.pt")
    with pytest.raises(ValueError, match="needs [a-z_.]*CustomNet: fastcae will not unpickle code.*"
                                         r"state_dict\(\)"):
        load_weights(create_model("wrn16_1", num_classes=10), tmp_path / "custom.pt")
    torch.save({"model": Malicious()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="will not unpickle code"):
        load_weights(create_model("wrn16_1", num_classes=10), tmp_path / "evil.pt")
    assert EXECUTED == []
