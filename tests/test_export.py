"""fastcae.export: the student card a run leaves, the self-checking export, the errors (and `fastcae export`)."""

import json

import pytest
import torch

import fastcae.export as export
from fastcae.apps.cli import main
from fastcae.export import ExportError, StudentCard, export_student, read_student, write_student
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
    def wrong(program, card, path, check):
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

    def compiled(program, card, path, check):  # what a real package computes, without the 10 s compile
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
