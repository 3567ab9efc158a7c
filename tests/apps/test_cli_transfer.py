"""`fastcae transfer`: probe and fine-tune a saved student on the bundled digits 5-9, table and JSON out."""

import json

import torch

from fastcae.apps.cli import main
from fastcae.apps.transfer import load_transfer_dataset
from fastcae.models import create_model


def test_cli_transfer_probe_and_finetune_write_json(tmp_path, capsys):
    student = create_model("digits_student", num_classes=10, in_chans=1)  # untrained: the machinery is under test
    torch.save({"student": student.state_dict()}, tmp_path / "student.pt")
    out = tmp_path / "transfer.json"
    argv = ["transfer", "--student", str(tmp_path / "student.pt"), "--student-model", "digits_student",
            "--num-classes", "10", "--in-chans", "1", "--dataset", "digits-5-9", "--image-size", "8",
            "--probe", "--finetune", "--epochs", "1", "--probe-epochs", "10", "--batch-size", "128",
            "--json", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "linear probe" in table and "fine-tune" in table
    results = json.loads(out.read_text())
    assert results["linear_probe"]["classes"] == [5, 6, 7, 8, 9]
    assert results["linear_probe"]["num_features"] == 64
    assert 0.0 <= results["fine_tune"]["test_accuracy"] <= 1.0 and len(results["fine_tune"]["history"]) == 1
    assert results["train_images"] + results["test_images"] == 896  # digits 5-9 of the 1,797


def test_cli_transfer_probe_only_and_bad_checkpoint(tmp_path, capsys):
    student = create_model("digits_student", num_classes=10, in_chans=1)
    torch.save(student.state_dict(), tmp_path / "student.pt")
    base = ["transfer", "--student-model", "digits_student", "--num-classes", "10", "--image-size", "8",
            "--probe-epochs", "5", "--probe"]
    assert main(base + ["--student", str(tmp_path / "student.pt")]) == 0
    assert "fine-tune" not in capsys.readouterr().out
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert main(base + ["--student", str(tmp_path / "bad.pt")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(base + ["--student", str(tmp_path / "student.pt"), "--dataset", "cifar-5-9"]) == 2
    assert "unknown transfer dataset" in capsys.readouterr().err


def test_transfer_dataset_subsets_and_repeats_channels():
    train, test = load_transfer_dataset("digits-5-9", image_size=8, in_chans=3)
    assert train.images.shape[1:] == (3, 8, 8) and set(train.labels.tolist()) == {5, 6, 7, 8, 9}
    assert set(test.labels.tolist()) <= {5, 6, 7, 8, 9}
