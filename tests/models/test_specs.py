"""Model specs: zoo names, torchvision:, timm: (a fake timm; the real one is not a dependency) and hub: (a fake
repo in a temporary hub cache); every model carries pretrained_cfg; nothing ever reaches the network."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from fastcae.datasets import DATASETS
from fastcae.models import create_model, resolve_model

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HUBCONF = '''dependencies = ["torch"]
from torch import nn


def tiny_net(num_classes=10, pretrained=False):
    """A fake hub entry: conv, pool, linear."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
'''


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to reach GitHub or a download URL fails the test at once instead of hanging."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)


def _hub_repo(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "hubconf.py").write_text(HUBCONF)
    return directory


def test_zoo_spec_carries_the_registry_cfg():
    model = resolve_model("cifar100_resnet20")
    c100 = DATASETS["cifar100"]
    assert model.pretrained_cfg == {"input_size": c100.image_shape, "mean": c100.mean, "std": c100.std,
                                    "dataset": "cifar100", "num_classes": 100, "architecture": "cifar100_resnet20"}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert resolve_model("resnet20", num_classes=7).pretrained_cfg["num_classes"] == 7
    assert "dataset" not in resolve_model("resnet20", num_classes=7).pretrained_cfg  # CIFAR-10's names don't fit


def test_unknown_zoo_name_lists_close_matches_only():
    with pytest.raises(ValueError, match="unknown model 'cifar10_resnet57'; closest known models: ") as info:
        resolve_model("cifar10_resnet57")
    assert "cifar10_resnet56" in str(info.value) and "digits_teacher" not in str(info.value)
    with pytest.raises(ValueError, match="unknown model source 'tv'"):
        resolve_model("tv:resnet18")
    with pytest.raises(ValueError, match="never downloads"):
        resolve_model("torchvision:resnet18", pretrained=True)


def test_zoo_spec_with_the_public_weights():
    path = DATA / "cifar10_resnet56.pth"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    model = resolve_model("cifar10_resnet56", weights=path).eval()
    torch.testing.assert_close(model.state_dict()["fc.bias"], torch.load(path, weights_only=True)["fc.bias"])
    with pytest.raises(ValueError, match="closest zoo model: cifar10_resnet56 with num_classes=10"):
        resolve_model("cifar10_resnet20", weights=path)


def test_torchvision_spec_builds_offline_with_imagenet_input():
    cfg = resolve_model("torchvision:resnet18").pretrained_cfg  # ImageNet's head: its published input
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000 and len(cfg["label_names"]) == 1000
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    model = resolve_model("torchvision:resnet18", num_classes=10)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    # another head means the user's own weights and data: nothing is claimed about their input
    assert model.pretrained_cfg == {"num_classes": 10, "architecture": "torchvision:resnet18"}
    with pytest.raises(ValueError, match="closest known torchvision models: resnet18"):
        resolve_model("torchvision:resnet81")
    with pytest.raises(ValueError, match="3-channel"):
        resolve_model("torchvision:resnet18", in_chans=1)


def test_timm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ValueError, match="pip install timm"):
        resolve_model("timm:resnet18")


def test_timm_spec_with_a_fake_timm(monkeypatch):
    calls = []

    def create(name, pretrained=True, num_classes=1000, in_chans=3):
        calls.append((name, pretrained, num_classes, in_chans))
        if name != "tiny":
            raise RuntimeError(f"Unknown model ({name})")
        model = nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, num_classes))
        model.pretrained_cfg = {"architecture": "tiny", "input_size": (3, 160, 160), "num_classes": 1000}
        return model

    fake = types.SimpleNamespace(create_model=create, list_models=lambda: ["tiny", "tinier"])
    monkeypatch.setitem(sys.modules, "timm", fake)
    model = resolve_model("timm:tiny", num_classes=5, in_chans=1)
    assert calls == [("tiny", False, 5, 1)]  # never pretrained: that would download
    assert model.pretrained_cfg == {"architecture": "tiny", "input_size": (3, 160, 160), "num_classes": 1000}
    with pytest.raises(ValueError, match="unknown timm model 'tiyn'; closest known timm models: tiny"):
        resolve_model("timm:tiyn")


def test_hub_spec_loads_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() follows TORCH_HOME
    hub_dir = Path(torch.hub.get_dir())
    assert hub_dir == tmp_path / "torch_home" / "hub"
    with pytest.raises(ValueError) as info:
        resolve_model("hub:someone/tiny-models:tiny_net")
    text = str(info.value)
    assert "not in the local hub cache" in text and str(hub_dir) in text and "never downloads" in text
    assert "someone_tiny-models_master" in text and "TORCH_HOME" in text

    _hub_repo(hub_dir / "someone_tiny-models_master")
    model = resolve_model("hub:someone/tiny-models:tiny_net", num_classes=3, in_chans=3)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    assert model.pretrained_cfg == {"architecture": "hub:someone/tiny-models:tiny_net", "num_classes": 3}
    assert resolve_model("hub:someone/tiny-models:master:tiny_net").pretrained_cfg["num_classes"] == 10
    with pytest.raises(ValueError, match="no entry 'tiny_nte'; closest: tiny_net"):
        resolve_model("hub:someone/tiny-models:tiny_nte")


def test_hub_spec_from_a_local_directory_with_weights(tmp_path):
    repo = _hub_repo(tmp_path / "my repo")
    source = resolve_model(f"hub:{repo}:tiny_net", num_classes=4)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = resolve_model(f"hub:{repo}:tiny_net", num_classes=4, weights=tmp_path / "w.pth")
    for a, b in zip(model.state_dict().values(), source.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="not a torch.hub repo directory"):
        resolve_model(f"hub:{tmp_path / 'nowhere'}:tiny_net")


def test_create_model_and_resolve_model_agree():
    """Zoo models carry the same pretrained_cfg however they are built."""
    assert create_model("wrn16_1").pretrained_cfg == resolve_model("wrn16_1").pretrained_cfg
    assert create_model("digits_student").pretrained_cfg["input_size"] == (1, 32, 32)
