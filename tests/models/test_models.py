"""Model zoo: registry behaviour, shapes, the feature interface, and parameter counts against the literature."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastcae.models import (
    FeatureTap,
    create_model,
    features_and_logits,
    list_models,
    model_default_cfg,
    num_features,
    register_model,
    registry,
)
from fastcae.models.cifar import WideResNet

ALL = list_models()
EXPECTED = {"resnet18", "resnet34", "wrn16_1", "wrn16_2", "wrn40_1", "wrn40_2", "vgg11_bn",
            "digits_teacher", "digits_student"}


def _input(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model_default_cfg(name)["input_size"])


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_the_zoo():
    assert EXPECTED <= set(ALL)
    assert ALL == sorted(ALL)
    assert list_models("wrn*") == ["wrn16_1", "wrn16_2", "wrn40_1", "wrn40_2"]
    assert list_models("nothing*") == []


def test_unknown_name_lists_close_names_only():
    with pytest.raises(ValueError, match="unknown model 'resnet1000'; closest known models: resnet") as info:
        create_model("resnet1000")
    assert "digits_teacher" not in str(info.value) and f"({len(ALL)} known models in all)" in str(info.value)
    with pytest.raises(ValueError, match="no known models are close"):
        model_default_cfg("zzzz")


def test_default_cfg_is_a_copy():
    cfg = model_default_cfg("resnet18")
    assert cfg["input_size"] == (3, 32, 32) and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert model_default_cfg("digits_student")["input_size"] == (1, 32, 32)
    cfg["input_size"] = (9, 9, 9)
    assert model_default_cfg("resnet18")["input_size"] == (3, 32, 32)


def test_cifar_zoo_expects_the_normalisation_of_the_cifar10_presets():
    """One home for the dataset statistics: the zoo's default input is what the pair presets, distill's default
    and the teacher recipe use (fastcae.datasets.DATASETS)."""
    from fastcae.datasets import DATASETS

    c10 = DATASETS["cifar10"]
    for name in ("resnet18", "resnet34", "vgg11_bn", "wrn16_1", "wrn16_2", "wrn40_1", "wrn40_2"):
        cfg = model_default_cfg(name)
        assert (cfg["input_size"], cfg["mean"], cfg["std"]) == (c10.image_shape, c10.mean, c10.std)


def test_cifar_cfgs_name_their_dataset_and_models_carry_their_cfg():
    """``model.pretrained_cfg`` says what the model expects as built: the CIFAR-10/100 entry of
    fastcae.datasets.DATASETS while the head fits its classes, and never statistics of another channel count."""
    from fastcae.datasets import DATASETS

    assert model_default_cfg("wrn40_2")["dataset"] == "cifar10"
    assert model_default_cfg("cifar100_resnet56")["dataset"] == "cifar100"
    for name in ALL:
        cfg = create_model(name).pretrained_cfg
        assert cfg == {**model_default_cfg(name), "architecture": name, "num_classes": cfg["num_classes"]}
        if "dataset" in cfg:
            assert DATASETS[cfg["dataset"]].num_classes == cfg["num_classes"]
    assert "dataset" not in create_model("wrn40_2", num_classes=100).pretrained_cfg
    assert create_model("cifar10_resnet20", num_classes=100).pretrained_cfg["num_classes"] == 100
    gray = create_model("resnet20", in_chans=1).pretrained_cfg
    assert gray["input_size"] == (1, 32, 32) and "mean" not in gray and "dataset" not in gray


def test_register_model_bare_and_with_cfg():
    def _tmp_net(num_classes=10, in_chans=3):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 4, num_classes))

    try:
        assert register_model(_tmp_net) is _tmp_net
        assert model_default_cfg("_tmp_net") == {}
        register_model(default_cfg={"input_size": (3, 2, 2)})(_tmp_net)  # same function: replaces
        assert model_default_cfg("_tmp_net")["input_size"] == (3, 2, 2)
        assert create_model("_tmp_net", num_classes=5)(torch.randn(2, 3, 2, 2)).shape == (2, 5)

        def other():  # a different function under a taken name
            return nn.Identity()

        other.__name__ = "_tmp_net"
        with pytest.raises(ValueError, match="already registered"):
            register_model(other)
    finally:
        registry._MODELS.pop("_tmp_net", None)
        registry._DEFAULT_CFGS.pop("_tmp_net", None)


@pytest.mark.parametrize("name", ALL)
def test_zoo_model(name):
    """Shapes for 10 and 100 classes, forward == head(features), BatchNorm2d present, backward runs."""
    x = _input(name)
    for num_classes in (10, 100):
        model = create_model(name, num_classes=num_classes)
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        logits = model(x)
        assert logits.shape == (2, num_classes)

    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features)
    model.eval()  # BN in eval mode so two passes see identical normalisation
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
        f2, l2 = features_and_logits(model, x)
        torch.testing.assert_close(f2, model.forward_features(x))
        torch.testing.assert_close(l2, model(x))
    model.train()
    model(x).logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ["resnet18", "wrn16_1", "vgg11_bn", "digits_teacher"])
def test_in_chans(name):
    c = 1 if model_default_cfg(name)["input_size"][0] == 3 else 3
    model = create_model(name, num_classes=7, in_chans=c)
    assert model(torch.randn(2, c, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("hw", [(16, 24), (40, 32)])
def test_digits_any_multiple_of_8(hw):
    for name in ("digits_teacher", "digits_student"):
        model = create_model(name)
        assert model(torch.randn(2, 1, *hw)).shape == (2, 10)


def test_vgg_larger_input():
    assert create_model("vgg11_bn", num_classes=3)(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_feature_tap_on_plain_sequential():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3),
    )
    x = torch.randn(2, 1, 8, 8)
    with FeatureTap(model) as tap:
        assert tap.layer is model[6]
        logits = model(x)
    expected = model[:6](x)
    torch.testing.assert_close(tap.features, expected)
    torch.testing.assert_close(logits, model[6](expected))
    # removed on exit: a later pass leaves the captured tensor alone
    before = tap.features
    model(torch.randn(2, 1, 8, 8))
    assert tap.features is before

    feats, logits2 = features_and_logits(model, x)
    torch.testing.assert_close(feats, expected)
    torch.testing.assert_close(logits2, logits)
    assert not model[6]._forward_hooks  # the temporary tap cleaned up after itself
    assert num_features(model, x[:1]) == 8


def test_feature_tap_keeps_autograd_and_flattens():
    class Net(nn.Module):  # Linear fed a 4-D tensor is applied on the last dim; the tap flattens it
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(x.unsqueeze(1)).flatten(1)

    model = Net()
    x = torch.randn(3, 5, requires_grad=True)
    feats, _ = features_and_logits(model, x)
    assert feats.shape == (3, 5)
    feats.sum().backward()
    assert x.grad is not None


def test_feature_tap_on_zoo_model_matches_forward_features():
    model = create_model("wrn16_1").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), FeatureTap(model) as tap:
        logits = model(x)
        feats = model.forward_features(x)
    assert tap.layer is model.fc
    torch.testing.assert_close(tap.features, feats)
    torch.testing.assert_close(logits, model.forward_head(feats))


def test_no_linear_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear"):
        FeatureTap(model)
    with pytest.raises(ValueError, match="no nn.Linear"):
        features_and_logits(model, torch.randn(2, 3, 8, 8))


def test_num_features_leaves_bn_and_mode_alone():
    model = create_model("digits_student")
    assert num_features(model, torch.randn(1, 1, 32, 32)) == model.num_features == 64
    wrapped = nn.Sequential(create_model("digits_student"))  # no feature API: probes through the tap
    bn = wrapped[0].features[1]
    stats = bn.running_mean.clone()
    assert num_features(wrapped, torch.randn(1, 1, 32, 32)) == 64
    assert wrapped.training and bn.training
    torch.testing.assert_close(bn.running_mean, stats)


def test_features_and_logits_compiles_fullgraph():
    """Zoo models go through forward_features/forward_head: no hooks, no graph breaks."""
    model = create_model("digits_student").eval()
    fn = torch.compile(lambda x: features_and_logits(model, x), fullgraph=True, backend="eager")
    x = torch.randn(2, 1, 16, 16)
    feats, logits = fn(x)
    with torch.no_grad():
        torch.testing.assert_close(feats, model.forward_features(x))
        torch.testing.assert_close(logits, model(x))


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=18, widen_factor=1)


@pytest.mark.parametrize(
    "name, expected",
    [("resnet18", 11.17e6), ("resnet34", 21.28e6), ("wrn40_2", 2.24e6), ("wrn16_2", 0.70e6),
     ("wrn40_1", 0.57e6), ("wrn16_1", 0.18e6), ("vgg11_bn", 9.23e6)],
)
def test_parameter_counts(name, expected):
    """Published CIFAR-10 sizes (DFKD papers' tables): a wrong width or block count shows up here."""
    assert _n_params(create_model(name, num_classes=10)) == pytest.approx(expected, rel=0.03)


def test_digits_pair_is_small():
    teacher, student = create_model("digits_teacher"), create_model("digits_student")
    assert _n_params(student) < _n_params(teacher) < 0.5e6
