"""The CLI: `fastcae distill` from a checkpoint and model names; clear errors for bad checkpoints and names."""

import json
import sys
from pathlib import Path

import pytest
import torch

import fastcae.api
import fastcae.models
from fastcae.apps.cli import main
from fastcae.datasets import DATASETS
from fastcae.models import create_model

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

FAST = ["--set", "epochs=2", "--set", "warmup_epochs=1", "--set", "warmup_synth_batches=1", "--set", "g_steps=1",
        "--set", "synth_batch_size=20", "--set", "student_steps=2", "--set", "student_batch_size=8",
        "--set", "generator_width=4", "--set", "text_encoder=random", "--set", "device=cpu", "--no-progress"]


def _args(teacher_path, out, *extra):
    return ["distill", "--teacher", str(teacher_path), "--teacher-model", "digits_teacher", "--student-model",
            "digits_student", "--num-classes", "10", "--image-shape", "1,16,16", "--mean", "0.5", "--std", "0.5",
            "--out", str(out), *FAST, *extra]


def test_cli_distill_writes_student_history_and_config(tmp_path):
    teacher = create_model("digits_teacher", num_classes=10, in_chans=1)
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pt")
    assert main(_args(tmp_path / "teacher.pt", tmp_path / "run")) == 0
    student = create_model("digits_student", num_classes=10, in_chans=1)
    student.load_state_dict(torch.load(tmp_path / "run" / "student.pt", weights_only=True))
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 2
    assert (tmp_path / "run" / "checkpoints" / "checkpoint.pt").exists()


def test_cli_distill_is_reproducible(tmp_path):
    """Two processes' worth of runs: the student's initial weights follow --set seed, not torch's random
    start-up seed, so the same command gives the same student."""
    teacher = create_model("digits_teacher", num_classes=10, in_chans=1)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    students = []
    for run in ("a", "b"):
        torch.manual_seed(int(run == "b") + 100)  # whatever state the process is in
        assert main(_args(tmp_path / "teacher.pt", tmp_path / run)) == 0
        students.append(torch.load(tmp_path / run / "student.pt", weights_only=True))
    for key in students[0]:
        torch.testing.assert_close(students[0][key], students[1][key], rtol=0, atol=0)


def test_cli_distill_profile_report(tmp_path):
    teacher = create_model("digits_teacher", num_classes=10, in_chans=1)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    report = tmp_path / "report.json"
    assert main(_args(tmp_path / "teacher.pt", tmp_path / "run", "--profile", str(report))) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert json.loads(report.read_text())["phases"]["synthesis"]["images"] == history[-1]["images_synthesized"]
    assert report.with_suffix(".md").exists() and report.with_suffix(".png").exists()
    health = json.loads(report.read_text())["meta"]["health"]
    assert [h["agreement"] for h in health] == [h["agreement"] for h in history]
    assert "Synthesis health per epoch" in report.with_suffix(".md").read_text()


def test_cli_profile_prints_the_summary(tmp_path, capsys):
    teacher = create_model("digits_teacher", num_classes=10, in_chans=1)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    args = _args(tmp_path / "teacher.pt", tmp_path / "run")
    assert main(["profile", *args[1:]]) == 0
    report = json.loads((tmp_path / "run" / "profile.json").read_text())
    assert report["meta"]["compile_mode"] == "eager"  # the CPU default
    out = capsys.readouterr().out
    assert "# fastcae throughput report" in out and "| distillation |" in out
    assert "GPU metrics were unavailable" in out or "util mean" in out
    assert str(tmp_path / "run" / "profile.png") in out


def test_cli_profile_without_teacher_refuses_distill_flags(capsys):
    assert main(["profile", "--preset", "digits", "--no-progress"]) == 2
    assert "give --teacher" in capsys.readouterr().err


def test_cli_names_a_checkpoint_that_does_not_fit(tmp_path, capsys):
    other = create_model("digits_student", num_classes=10, in_chans=1)
    torch.save(other.state_dict(), tmp_path / "wrong.pt")
    assert main(_args(tmp_path / "wrong.pt", tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "do not fit the" in err and "closest zoo model: digits_student with num_classes=10" in err
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert main(_args(tmp_path / "bad.pt", tmp_path / "run")) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_cli_unknown_model_lists_known(tmp_path, capsys):
    torch.save({}, tmp_path / "t.pt")
    args = _args(tmp_path / "t.pt", tmp_path / "run")
    args[args.index("digits_teacher")] = "resnet9000"
    assert main(args) == 2
    assert "known models" in capsys.readouterr().err


def test_cli_budget_plans_a_schedule_and_bad_budgets_are_named(tmp_path, capsys):
    teacher = create_model("digits_teacher", num_classes=10, in_chans=1)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    base = ["distill", "--teacher", str(tmp_path / "teacher.pt"), "--teacher-model", "digits_teacher",
            "--student-model", "digits_student", "--num-classes", "10", "--image-shape", "1,8,8", "--mean", "0.5",
            "--std", "0.5", "--set", "text_encoder=random", "--set", "device=cpu", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "bad"), "--budget", "-5"]) == 2
    assert "max_seconds must be a positive number" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "tiny"), "--budget", "0.5"]) == 2
    assert "at least" in capsys.readouterr().err  # the minimum that would work on this machine


# ----------------------------------------------------------------------------- model specs and the teacher's cfg
class _Stop(Exception):
    """Raised by the stand-in for distill: the test has seen what the CLI would distil with."""


@pytest.fixture
def distill_args(monkeypatch):
    """What ``fastcae distill`` hands to ``fastcae.distill``, without distilling."""
    seen = {}

    def fake(teacher, student, class_names=None, **kwargs):
        seen.update(teacher=teacher, student=student, class_names=class_names, **kwargs)
        raise _Stop

    monkeypatch.setattr(fastcae.api, "distill", fake)
    return seen


def _run(args):
    with pytest.raises(_Stop):
        main(["distill", *args, "--no-progress"])


def test_cli_takes_classes_shape_and_norm_from_the_teachers_cfg(tmp_path, distill_args):
    teacher = create_model("cifar100_resnet20")
    torch.save(teacher.state_dict(), tmp_path / "t.pth")
    _run(["--teacher", str(tmp_path / "t.pth"), "--teacher-model", "cifar100_resnet20", "--student-model", "resnet20"])
    c100 = DATASETS["cifar100"]
    assert distill_args["class_names"] == list(c100.class_names) and distill_args["num_classes"] == 100
    assert (distill_args["image_shape"], distill_args["mean"], distill_args["std"]) == (c100.image_shape, c100.mean,
                                                                                      c100.std)
    assert distill_args["student"].fc.out_features == 100
    torch.testing.assert_close(distill_args["teacher"].fc.weight, teacher.fc.weight)
    # what the user gives wins; CIFAR-100's names do not fit 7 classes, so none are taken
    bad = create_model("cifar100_resnet20", num_classes=7)
    torch.save(bad.state_dict(), tmp_path / "t7.pth")
    _run(["--teacher", str(tmp_path / "t7.pth"), "--teacher-model", "cifar100_resnet20", "--student-model",
          "resnet20", "--num-classes", "7", "--mean", "0.5,0.5,0.5"])
    assert distill_args["class_names"] is None and distill_args["num_classes"] == 7
    assert distill_args["mean"] == (0.5, 0.5, 0.5) and distill_args["std"] == c100.std


def test_cli_loads_the_public_resnet56_by_its_hub_name(distill_args):
    path = DATA / "cifar10_resnet56.pth"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    _run(["--teacher", str(path), "--teacher-model", "cifar10_resnet56", "--student-model", "cifar10_resnet20"])
    assert distill_args["class_names"][0] == "airplane" and distill_args["image_shape"] == (3, 32, 32)
    assert distill_args["mean"] == DATASETS["cifar10"].mean


def test_cli_takes_hub_and_torchvision_specs(tmp_path, distill_args):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hubconf.py").write_text("dependencies = ['torch']\nfrom torch import nn\n\n\ndef net(num_classes=10):\n"
                                     "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), "
                                     "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))\n")
    torch.save(fastcae.models.resolve_model(f"hub:{repo}:net").state_dict(), tmp_path / "t.pt")
    _run(["--teacher", str(tmp_path / "t.pt"), "--teacher-model", f"hub:{repo}:net", "--student-model",
          "torchvision:resnet18"])
    assert distill_args["num_classes"] == 10 and distill_args["class_names"] is None  # a hub cfg knows no names
    assert distill_args["image_shape"] == (3, 32, 32) and distill_args["mean"] is None  # distill's defaults
    assert distill_args["student"].fc.out_features == 10


def test_cli_names_what_is_wrong_with_a_spec(tmp_path, capsys, monkeypatch):
    torch.save(create_model("resnet20").state_dict(), tmp_path / "t.pt")
    base = ["distill", "--teacher", str(tmp_path / "t.pt"), "--student-model", "resnet20", "--no-progress"]
    assert main([*base, "--teacher-model", "tv:resnet18"]) == 2
    assert "unknown model source 'tv'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "timm", None)  # as where timm is not installed
    assert main([*base, "--teacher-model", "timm:resnet18"]) == 2
    assert "pip install timm" in capsys.readouterr().err
    assert main([*base, "--teacher-model", "resnet32"]) == 2
    err = capsys.readouterr().err
    assert "do not fit the CifarResNet (resnet32)" in err and "closest zoo model: cifar10_resnet20" in err
