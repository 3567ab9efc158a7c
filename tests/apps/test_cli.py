"""The CLI: `fastcae distill` from a checkpoint and model names; clear errors for bad checkpoints and names."""

import json

import torch

from fastcae.apps.cli import main
from fastcae.models import create_model

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
    assert "do not fit the" in capsys.readouterr().err
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
