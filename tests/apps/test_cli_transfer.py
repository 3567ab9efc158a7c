"""`fastcae transfer`: probe and fine-tune a saved student on the bundled digits 5-9 or on a user's own set (an
.npz or an ImageFolder directory), table and JSON out, and a clear error for each bad downstream set."""

import json

import numpy as np
import pytest
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
    assert "no such file or directory" in capsys.readouterr().err


def test_transfer_dataset_subsets_and_repeats_channels():
    train, test = load_transfer_dataset("digits-5-9", image_size=8, in_chans=3)
    assert train.images.shape[1:] == (3, 8, 8) and set(train.labels.tolist()) == {5, 6, 7, 8, 9}
    assert set(test.labels.tolist()) <= {5, 6, 7, 8, 9}


def _pool(n_per_class=6, classes=(0, 1, 2), size=8, chans=3, seed=0):
    """uint8 images [N, H, W, C] whose colour depends on the class, as a user's .npz would hold them."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (n_per_class * len(classes), size, size, chans), generator=g, dtype=torch.uint8)
    labels = torch.tensor(classes).repeat_interleave(n_per_class)
    for k, c in enumerate(classes):
        images[labels == c, :, :, k % chans] += 150
    return images.numpy(), labels.numpy()


def test_npz_pool_is_split_50_50_per_class_and_laid_out_nchw(tmp_path):
    images, labels = _pool()
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    train, test = load_transfer_dataset(str(tmp_path / "set.npz"), image_size=8, in_chans=3)
    assert train.images.shape == (9, 3, 8, 8) and test.images.shape == (9, 3, 8, 8)
    assert train.labels.bincount().tolist() == [3, 3, 3] and 0.0 <= train.images.min() <= train.images.max() <= 1.0
    # the colour of class 1 is in channel 1: the HWC array was read as such
    assert train.images[train.labels == 1][:, 1].mean() > train.images[train.labels == 1][:, 0].mean() + 0.3
    same, _ = load_transfer_dataset(str(tmp_path / "set.npz"), image_size=8, in_chans=3)
    other, _ = load_transfer_dataset(str(tmp_path / "set.npz"), image_size=8, in_chans=3, split_seed=1)
    assert torch.equal(same.images, train.images) and not torch.equal(other.images, train.images)


def test_npz_with_its_own_split_and_grey_images(tmp_path):
    images, labels = _pool(chans=1)
    np.savez(tmp_path / "set.npz", train_images=images[::2, ..., 0], train_labels=labels[::2],
             test_images=images[1::2, ..., 0], test_labels=labels[1::2])
    train, test = load_transfer_dataset(str(tmp_path / "set.npz"), image_size=8, in_chans=3)
    assert train.images.shape == (9, 3, 8, 8) and len(test) == 9
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey repeated over the channels


def test_image_folder_one_pool_and_train_test_layouts(tmp_path):
    from PIL import Image

    images, labels = _pool(n_per_class=4)
    for layout in ("pool", "split/train", "split/test"):
        for i, (im, y) in enumerate(zip(images, labels)):
            folder = tmp_path / layout / f"class_{y}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(folder / f"{i:03d}.png")
    train, test = load_transfer_dataset(str(tmp_path / "pool"), image_size=8, in_chans=3)
    assert len(train) == len(test) == 6 and train.images.shape[1:] == (3, 8, 8)
    train, test = load_transfer_dataset(str(tmp_path / "split"), image_size=8, in_chans=3)
    assert len(train) == len(test) == 12
    # PNG is lossless: the folder's pixels are the array's
    assert torch.equal((train.images * 255).round().to(torch.uint8), torch.from_numpy(images).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="8x8 but the student takes 16x16"):
        load_transfer_dataset(str(tmp_path / "pool"), image_size=16, in_chans=3)
    resized, _ = load_transfer_dataset(str(tmp_path / "pool"), image_size=16, in_chans=3, resize=True)
    assert resized.images.shape[1:] == (3, 16, 16)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "pool" / "class_0" / "odd.png")
    with pytest.raises(ValueError, match="odd.png: 5x5 pixels"):
        load_transfer_dataset(str(tmp_path / "pool"), image_size=8, in_chans=3)


def test_bad_downstream_sets_are_named_before_any_model_runs(tmp_path):
    images, labels = _pool()
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        load_transfer_dataset(str(tmp_path / "missing.npz"), image_size=8, in_chans=3)
    np.savez(tmp_path / "one.npz", images=images, labels=np.zeros_like(labels))
    with pytest.raises(ValueError, match="1 class; a transfer task needs at least 2"):
        load_transfer_dataset(str(tmp_path / "one.npz"), image_size=8, in_chans=3)
    np.savez(tmp_path / "keys.npz", x=images, y=labels)
    with pytest.raises(ValueError, match=r"needs arrays 'images' and 'labels'.*\['x', 'y'\]"):
        load_transfer_dataset(str(tmp_path / "keys.npz"), image_size=8, in_chans=3)
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    with pytest.raises(ValueError, match="8x8 but the student takes 32x32"):
        load_transfer_dataset(str(tmp_path / "set.npz"), image_size=32, in_chans=3)
    with pytest.raises(ValueError, match="3 channels but the student takes 1"):
        load_transfer_dataset(str(tmp_path / "set.npz"), image_size=8, in_chans=1)
    np.savez(tmp_path / "float.npz", images=images.astype(np.float32), labels=labels)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        load_transfer_dataset(str(tmp_path / "float.npz"), image_size=8, in_chans=3)
    (tmp_path / "one_class" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="1 class folder"):
        load_transfer_dataset(str(tmp_path / "one_class"), image_size=8, in_chans=3)


def test_cli_transfer_on_a_users_npz_and_its_errors(tmp_path, capsys):
    images, labels = _pool(n_per_class=8, size=8)
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    student = create_model("digits_student", num_classes=10, in_chans=3)
    torch.save(student.state_dict(), tmp_path / "student.pt")
    base = ["transfer", "--student", str(tmp_path / "student.pt"), "--student-model", "digits_student",
            "--num-classes", "10", "--in-chans", "3", "--probe", "--probe-epochs", "10"]
    out = tmp_path / "r.json"
    assert main(base + ["--dataset", str(tmp_path / "set.npz"), "--image-size", "8", "--json", str(out)]) == 0
    assert "linear probe" in capsys.readouterr().out
    assert json.loads(out.read_text())["train_images"] == 12
    # digits_student registers 32 px input: the 8 px set is refused by name, and --resize takes it
    assert main(base + ["--dataset", str(tmp_path / "set.npz")]) == 2
    assert "8x8 but the student takes 32x32" in capsys.readouterr().err
    assert main(base + ["--dataset", str(tmp_path / "set.npz"), "--resize"]) == 0
    capsys.readouterr()
    assert main(base + ["--dataset", str(tmp_path / "nope.npz")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
