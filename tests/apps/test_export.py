"""fastcae.apps.export: the student card a run leaves, the self-checking export, the errors (and `fastcae export`)."""

import json

import pytest
import torch

import fastcae.apps.export as export
from fastcae.apps.cli import main
from fastcae.apps.export import ExportError, StudentCard, export_student, read_student, write_student
from fastcae.models import create_model

CARD = StudentCard("digits_student", 10, (1, 16, 16), (0.3,), (0.4,), [str(i) for i in range(10)])


def _student(seed=0, num_classes=10):
    torch.manual_seed(seed)
    return create_model("digits_student", num_classes=num_classes, in_chans=1).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One real AOTInductor export (about 10 s on 2 CPU cores), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("export") / "student.pt2"
    student = _student()
    return student, export_student(student, CARD, out)


def test_the_package_takes_raw_images_of_any_batch_size_and_matches_the_eager_student(exported):
    from torch._inductor import aoti_load_package

    student, report = exported
    assert report.format == "pt2" and report.bytes > 0 and report.max_abs_diff < 1e-4
    runner = aoti_load_package(report.path)
    for batch in (1, 7):
        x = torch.rand(batch, *CARD.image_shape)
        with torch.no_grad():
            want = student((x - 0.3) / 0.4)  # the normalisation is inside the package
        torch.testing.assert_close(runner(x), want, atol=1e-4, rtol=1e-4)
    meta = runner.get_metadata()
    assert (meta["fastcae.image_shape"], meta["fastcae.num_classes"], meta["fastcae.model"]) == ("1,16,16", "10",
                                                                                                  "digits_student")


def test_an_export_that_does_not_match_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    def wrong(program, card, path, check, runner=None):
        open(path, "wb").write(b"not a package")
        return torch.zeros(check.shape[0], card.num_classes) + 1.0

    monkeypatch.setattr(export, "_write_pt2", wrong)
    with pytest.raises(ExportError, match="differs from the eager student"):
        export_student(_student(), CARD, tmp_path / "s.pt2")
    assert list(tmp_path.iterdir()) == []  # no target, no temporary file left behind


def test_a_run_directory_round_trips(tmp_path):
    student = _student(1)
    write_student(tmp_path, student, CARD)
    assert json.loads((tmp_path / "student.json").read_text())["model"] == "digits_student"
    loaded, card = read_student(tmp_path)
    assert card == CARD
    for a, b in zip(loaded.state_dict().values(), student.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_input_gets_an_error_naming_it(tmp_path):
    with pytest.raises(ExportError, match="must end in .pt2"):
        export_student(_student(), CARD, tmp_path / "s.zip")
    with pytest.raises(ExportError, match="holds no student.json"):
        read_student(tmp_path)
    write_student(tmp_path, _student(num_classes=7), CARD)  # weights of another network than the card says
    with pytest.raises(ExportError, match="does not hold the weights of a digits_student with 10 classes"):
        read_student(tmp_path)
    bad = StudentCard("no_such_net", 10, (1, 16, 16), (0.3,), (0.4,))
    with pytest.raises(ExportError, match="unknown student model 'no_such_net'"):
        read_student(weights=tmp_path / "student.pt", card=bad)


def test_the_cli_exports_a_run_directory_and_says_what_is_missing(tmp_path, capsys, monkeypatch):
    calls = []

    def compiled(program, card, path, check, runner=None):  # what a real package computes, without the 10 s compile
        calls.append(card)
        return export.NormalizedStudent(_student(2), card.mean, card.std)(check).detach()

    monkeypatch.setattr(export, "_write_pt2", compiled)
    write_student(tmp_path / "run", _student(2), CARD)
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "s.pt2")]) == 0
    assert calls == [CARD] and (tmp_path / "s.pt2").exists()
    assert "exported digits_student" in capsys.readouterr().out
    assert main(["export", "--student", str(tmp_path / "run" / "student.pt"), "--out", str(tmp_path / "t.pt2")]) == 2
    assert "--student needs --student-model, --num-classes, --image-shape, --mean, --std" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "u.pt2")]) == 2
    assert "holds no student.json" in capsys.readouterr().err


def test_onnx_export_checks_itself_against_the_eager_student(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    student = _student(3)
    report = export_student(student, CARD, tmp_path / "s.onnx")
    assert report.format == "onnx" and report.max_abs_diff < 1e-4
    x = torch.rand(4, *CARD.image_shape)
    got = ort.InferenceSession(str(tmp_path / "s.onnx")).run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), student((x - 0.3) / 0.4), atol=1e-4, rtol=1e-4)


def test_a_package_checked_in_a_child_process_gives_what_this_process_computes(exported):
    # the route of every CUDA package (Python's loader segfaulted on them with torch 2.11 + CUDA 13)
    _, report = exported
    check = torch.rand(3, *CARD.image_shape)
    torch.testing.assert_close(export._load_in_child(report.path, check), export._load_here(report.path, check),
                               atol=1e-6, rtol=0)


def test_a_loader_that_crashes_or_hangs_in_the_child_is_a_clear_error(exported, monkeypatch):
    _, report = exported
    check = torch.rand(3, *CARD.image_shape)
    monkeypatch.setattr(export, "_CHILD_CODE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(ExportError, match=r"loading it in Python \(torch .*\) died of SIGSEGV.*--runner"):
        export._load_in_child(report.path, check)
    monkeypatch.setattr(export, "_CHILD_CODE", "raise RuntimeError('no kernel image for this device')")
    with pytest.raises(ExportError, match="failed: RuntimeError: no kernel image for this device"):
        export._load_in_child(report.path, check)
    monkeypatch.setattr(export, "_CHILD_CODE", "import time; time.sleep(30)")
    with pytest.raises(ExportError, match="did not finish within 1 s"):
        export._load_in_child(report.path, check, timeout=1)


def _fake_runner(tmp_path, body):
    """An executable with the runner's arguments (PACKAGE IMAGES --logits OUT --device D) running ``body``."""
    exe = tmp_path / "fake-run"
    exe.write_text(f"#!{__import__('sys').executable}\nimport sys\nimport numpy as np\n"
                   f"package, images, _, out, _, device = sys.argv[1:]\n{body}\n")
    exe.chmod(0o755)
    return exe


def test_a_runner_checks_the_package_and_its_refusal_is_a_clear_error(tmp_path, monkeypatch):
    def compile_only(program, card, path, check, runner=None):  # the real routing, without the 10 s compile
        open(path, "wb").write(b"package")
        return export._run_native(runner, path, check)

    monkeypatch.setattr(export, "_write_pt2", compile_only)
    student = _student(4)
    # a runner that computes the student's logits: the export is written
    right = _fake_runner(tmp_path, "import torch\nfrom fastcae.apps.export import NormalizedStudent\n"
                         "from fastcae.models import create_model\ntorch.manual_seed(4)\n"
                         "m = NormalizedStudent(create_model('digits_student', num_classes=10, in_chans=1).eval(), "
                         "(0.3,), (0.4,))\nwith torch.no_grad():\n"
                         "    np.save(out, m(torch.from_numpy(np.load(images))).numpy())")
    report = export_student(student, CARD, tmp_path / "ok.pt2", runner=right)
    assert report.max_abs_diff < 1e-5 and (tmp_path / "ok.pt2").exists()
    # one whose logits are wrong: refused, nothing written
    wrong = _fake_runner(tmp_path, "np.save(out, np.zeros((np.load(images).shape[0], 10), np.float32))")
    with pytest.raises(ExportError, match="differs from the eager student"):
        export_student(student, CARD, tmp_path / "bad.pt2", runner=wrong)
    # one that cannot run it: its one line of stderr, nothing written
    failing = _fake_runner(tmp_path, "sys.stderr.write('fastcae-run: error: package built for cuda\\n'); sys.exit(1)")
    with pytest.raises(ExportError, match="could not run the package .fastcae-run: error: package built for cuda."):
        export_student(student, CARD, tmp_path / "cuda.pt2", runner=failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-run", "ok.pt2"]
    with pytest.raises(ExportError, match="is not an executable file"):
        export_student(student, CARD, tmp_path / "x.pt2", runner=tmp_path / "nowhere")
    with pytest.raises(ExportError, match="checks .pt2 packages"):
        export_student(student, CARD, tmp_path / "x.onnx", runner=right)
