"""Accuracy, and the transferability tools (``fastcae.apps.transfer``): frozen features, the linear probe and
fine-tuning, with clear errors on bad splits."""

import pytest
import torch
from torch import nn

from fastcae.apps.data import ImageSplit
from fastcae.apps.transfer import (
    PROBE_WEIGHT_DECAYS,
    extract_features,
    fine_tune,
    linear_probe,
    replace_head,
    split_stratified,
)
from fastcae.evaluate import accuracy
from fastcae.models import create_model
from fastcae.utils import eval_mode

MEAN, STD = (0.5,), (0.5,)


def _blobs(n_per_class, classes=(5, 6, 7), size=8, seed=0):
    """Grey images whose brightness pattern depends on the class: linearly separable, any label values."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for k, c in enumerate(classes):
        base = torch.zeros(1, size, size)
        base[:, :, k * size // len(classes) : (k + 1) * size // len(classes)] = 0.8
        images.append((base + 0.1 * torch.rand(n_per_class, 1, size, size, generator=g)).clamp(0, 1))
        labels.append(torch.full((n_per_class,), c))
    return ImageSplit(torch.cat(images), torch.cat(labels))


class PixelClassifier(nn.Module):
    """Its penultimate features are the raw pixels, so a probe on them is plain logistic regression."""

    def __init__(self, size=8, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.Flatten())
        self.fc = nn.Linear(size * size, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def test_accuracy_runs_in_eval_mode_and_restores_every_flag():
    model = create_model("digits_student", num_classes=10).train()
    model.features[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acc = accuracy(model, torch.rand(5, 1, 16, 16), torch.arange(5), MEAN, STD, batch_size=1)  # batches of one
    assert 0.0 <= acc <= 1.0
    assert model.training and not model.features[1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed (BN statistics must not move)"


def test_eval_mode_restores_the_flags_after_an_error():
    model = create_model("digits_student", num_classes=10).train()
    model.features[1].eval()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("boom")
    assert model.training and not model.features[1].training and model.features[0].training


def test_extract_features_is_frozen_and_restores_modes():
    model = create_model("digits_student", num_classes=10).train()
    model.features[1].eval()  # a mixed-mode model: every flag must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = extract_features(model, torch.rand(7, 1, 16, 16), MEAN, STD, batch_size=3)
    assert feats.shape == (7, 64) and not feats.requires_grad
    assert model.training and not model.features[1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed (BN statistics must not move)"
    single = extract_features(model, torch.rand(1, 1, 16, 16), MEAN, STD)  # eval mode: a batch of one works
    assert single.shape == (1, 64)


def test_linear_probe_separates_blobs_with_arbitrary_labels_deterministically():
    train, test = _blobs(20, seed=0), _blobs(10, seed=1)
    model = PixelClassifier()
    a = linear_probe(model, train, test, MEAN, STD, epochs=50)
    b = linear_probe(model, train, test, MEAN, STD, epochs=50)
    assert a["test_accuracy"] == 1.0 and a["train_accuracy"] == 1.0
    assert a["num_features"] == 64 and a["num_classes"] == 3 and a["classes"] == [5, 6, 7]
    assert a == b


def test_linear_probe_on_zoo_features_beats_chance():
    classes = (5, 6, 7, 8, 9)
    train, test = _blobs(15, classes=classes, size=16, seed=0), _blobs(6, classes=classes, size=16, seed=1)
    result = linear_probe(create_model("digits_student", num_classes=10), train, test, MEAN, STD, epochs=30)
    assert result["num_features"] == 64 and result["test_accuracy"] > 0.6


def test_fine_tune_trains_a_copy_with_a_new_head():
    classes = (5, 6, 7, 8, 9)
    train, test = _blobs(16, classes=classes, seed=0), _blobs(6, classes=classes, seed=1)
    model = create_model("digits_student", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fine_tune(model, train, test, MEAN, STD, epochs=4, lr=0.05, batch_size=16)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), "the user's model must stay untouched"
    assert model.fc.out_features == 10 and result["model"].fc.out_features == 5
    assert result["classes"] == [5, 6, 7, 8, 9] and len(result["history"]) == 4
    assert result["test_accuracy"] > 0.5


def test_replace_head_finds_the_last_linear_of_any_classifier():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 3)))
    new = replace_head(model, 6)
    assert model[3][0] is new and model(torch.rand(2, 1, 2, 2)).shape == (2, 6)


def test_transfer_inputs_are_checked():
    model = PixelClassifier()
    good = _blobs(4)
    empty = ImageSplit(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="train split is empty"):
        linear_probe(model, empty, good, MEAN, STD)
    with pytest.raises(ValueError, match="test split is empty"):
        fine_tune(model, good, empty, MEAN, STD)
    with pytest.raises(ValueError, match="same C, H, W"):
        linear_probe(model, good, _blobs(2, size=16), MEAN, STD)
    with pytest.raises(ValueError, match="at least 2"):
        linear_probe(model, _blobs(4, classes=(3,)), _blobs(2, classes=(3,)), MEAN, STD)
    with pytest.raises(ValueError, match="never occur in the train split"):
        linear_probe(model, _blobs(4, classes=(1, 2)), _blobs(2, classes=(1, 3)), MEAN, STD)
    with pytest.raises(ValueError, match="one value per channel"):
        fine_tune(model, good, good, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_split_stratified_is_seeded_disjoint_and_per_class():
    pool = _blobs(10, classes=(2, 4, 9))
    pool = ImageSplit(pool.images, pool.labels)
    a, b = split_stratified(pool, 0.5, seed=3)
    again, _ = split_stratified(pool, 0.5, seed=3)
    other, _ = split_stratified(pool, 0.5, seed=4)
    assert torch.equal(a.images, again.images) and not torch.equal(a.images, other.images)
    for c in (2, 4, 9):
        assert (a.labels == c).sum() == 5 and (b.labels == c).sum() == 5
    # together the two parts are the pool, each image once
    both = torch.cat([a.images, b.images]).flatten(1)
    assert torch.unique(both, dim=0).shape[0] == len(pool) == both.shape[0]
    with pytest.raises(ValueError, match="at least 2 per class"):
        split_stratified(ImageSplit(torch.rand(3, 1, 4, 4), torch.tensor([0, 0, 1])))


def test_linear_probe_auto_chooses_its_regulariser_on_the_train_split_only():
    train, test = _blobs(20, seed=0), _blobs(10, seed=1)
    model = PixelClassifier()
    auto = linear_probe(model, train, test, MEAN, STD, epochs=30, weight_decay="auto")
    assert auto["weight_decay"] in PROBE_WEIGHT_DECAYS
    assert set(auto["validation_accuracy"]) == set(PROBE_WEIGHT_DECAYS)
    # the test labels play no part in the choice: scrambling them changes the score, not the regulariser
    scrambled = ImageSplit(test.images, test.labels[torch.randperm(len(test), generator=torch.Generator()
                                                                   .manual_seed(0))])
    again = linear_probe(model, train, scrambled, MEAN, STD, epochs=30, weight_decay="auto")
    assert again["weight_decay"] == auto["weight_decay"]
    assert again["validation_accuracy"] == auto["validation_accuracy"]
    grid = linear_probe(model, train, test, MEAN, STD, epochs=30, weight_decay=[10.0, 1e-4])
    assert grid["weight_decay"] in (10.0, 1e-4) and grid["weight_decay_grid"] == [10.0, 1e-4]
    with pytest.raises(ValueError, match="'auto'"):
        linear_probe(model, train, test, MEAN, STD, weight_decay="best")
