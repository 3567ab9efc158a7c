"""`fastcae train-teacher`: the recipe runs end to end, resumes bit-identically, and names bad inputs."""

import json

import pytest
import torch

import fastcae.apps.data
from fastcae.apps.cli import main
from fastcae.apps.data import ImageSplit


def _tiny_split(n: int, seed: int) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.fixture
def tiny_cifar(monkeypatch):
    """Replace the torchvision loader with 48 train / 16 test random 3x16x16 images of 10 classes (small for speed;
    the zoo's WRNs pool adaptively, so any size divisible by 4 works)."""
    calls = []

    def fake(name, root, train=True, download=False):
        calls.append((name, train))
        return _tiny_split(48, 0) if train else _tiny_split(16, 1)

    monkeypatch.setattr(fastcae.apps.data, "load_torchvision", fake)
    return calls


def _args(out, *extra):
    return ["train-teacher", "--dataset", "cifar10", "--model", "wrn16_1", "--data-root", "unused", "--out", str(out),
            "--batch-size", "16", "--eval-every", "1", "--device", "cpu", "--no-progress", *extra]


def _weights(out):
    return torch.load(out / "teacher.pt", weights_only=True)


def test_train_teacher_writes_weights_and_record(tiny_cifar, tmp_path):
    assert main(_args(tmp_path / "t", "--epochs", "2")) == 0
    assert ("cifar10", True) in tiny_cifar and ("cifar10", False) in tiny_cifar
    from fastcae.models import create_model

    create_model("wrn16_1", num_classes=10).load_state_dict(_weights(tmp_path / "t"))
    record = json.loads((tmp_path / "t" / "teacher.json").read_text())
    assert record["recipe"]["epochs"] == 2 and record["recipe"]["lr"] == 0.1 and record["recipe"]["flip"]
    assert record["finished"] and 0.0 <= record["test_accuracy"] <= 1.0
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["versions"]["torch"] == torch.__version__


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tiny_cifar, tmp_path, capsys):
    assert main(_args(tmp_path / "whole", "--epochs", "2")) == 0
    assert main(_args(tmp_path / "split", "--epochs", "2", "--stop-after", "1")) == 0
    assert "stopped after epoch 1 of 2" in capsys.readouterr().out
    assert not (tmp_path / "split" / "teacher.pt").exists()
    saved = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    assert main(_args(tmp_path / "split", "--epochs", "2")) == 0  # the same command again resumes at epoch 2
    whole, split = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    for key in whole:
        assert torch.equal(whole[key], split[key]), key
    history = json.loads((tmp_path / "split" / "teacher.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_a_checkpoint_from_another_model_or_recipe_is_refused(tiny_cifar, tmp_path, capsys):
    assert main(_args(tmp_path / "t", "--epochs", "2", "--stop-after", "1")) == 0
    args = _args(tmp_path / "t", "--epochs", "2")
    args[args.index("wrn16_1")] = "wrn16_2"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "another recipe" in err and "model: checkpoint 'wrn16_1', this run 'wrn16_2'" in err
    assert main(_args(tmp_path / "t", "--epochs", "3")) == 2
    assert "epochs: checkpoint 2, this run 3" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_named(tiny_cifar, tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(_args(tmp_path / "t", "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "t" / "checkpoint.pt") in err and "corrupt" in err


def test_a_missing_dataset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not found under"):
        fastcae.apps.data.load_torchvision("cifar10", str(tmp_path))
    assert main(["train-teacher", "--dataset", "cifar10", "--model", "wrn16_1", "--data-root", str(tmp_path),
                 "--out", str(tmp_path / "t"), "--no-progress"]) == 2
    assert "dataset cifar10 not found under" in capsys.readouterr().err


def test_an_unknown_model_is_named_before_loading_data(tiny_cifar, tmp_path, capsys):
    args = _args(tmp_path / "t")
    args[args.index("wrn16_1")] = "resnet9000"
    assert main(args) == 2
    assert "known models" in capsys.readouterr().err and not tiny_cifar
