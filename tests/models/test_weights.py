"""Strict weight loading: what it accepts, the one error when weights do not fit (keys, shapes, the closest zoo
model), and files that hold something other than a state dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fastcae.models import create_model
from fastcae.models.weights import closest_zoo_model, load_weights

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _public(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return path


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_public_resnet56_loads_strictly_and_names_itself_when_it_does_not_fit():
    path = _public("cifar10_resnet56.pth")
    load_weights(create_model("cifar10_resnet56"), path)
    with pytest.raises(ValueError) as info:
        load_weights(create_model("cifar10_resnet20"), path)
    text = str(info.value)
    first = text.splitlines()[0]  # the line an export error keeps
    assert "do not fit the CifarResNet (cifar10_resnet20) architecture" in first
    assert "0 missing keys, 216 unexpected keys, 0 shape mismatches" in first
    assert "closest zoo model: cifar10_resnet56 with num_classes=10 (every tensor matches" in first
    assert "unexpected keys (216): layer1.3.conv1.weight" in text and "(211 more)" in text


def test_missing_keys_and_shape_mismatches_are_listed(tmp_path):
    state = create_model("resnet32", num_classes=100).state_dict()
    torch.save(state, tmp_path / "r32.pt")
    with pytest.raises(ValueError) as info:
        load_weights(create_model("resnet44", num_classes=10), tmp_path / "r32.pt")
    text = str(info.value)
    assert "missing keys (" in text and "layer1.5.conv1.weight" in text
    assert "fc.weight: file [100, 64], model [10, 64]" in text
    assert ("closest zoo model: cifar100_resnet32 with num_classes=100 (every tensor matches; as close: "
            "cifar10_resnet32 (num_classes=100), resnet32 (num_classes=100))") in text.splitlines()[0]
    ranked = closest_zoo_model(state)
    assert ranked[0][0] == "cifar100_resnet32" and ranked[0][2] == ranked[0][3]  # native width first, exact fit


def test_a_file_far_from_every_zoo_model_says_so(tmp_path):
    torch.save({"encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)}, tmp_path / "far.pt")
    with pytest.raises(ValueError, match="no zoo model is close"):
        load_weights(create_model("digits_student"), tmp_path / "far.pt")


def test_what_load_weights_accepted_before_still_loads(tmp_path):
    """Nested under a key, DataParallel and torch.compile prefixes, safetensors, a whole zoo model."""
    source = create_model("digits_student")
    state = source.state_dict()
    files = {
        "nested.pt": {"epoch": 3, "state_dict": state},
        "model_key.pt": {"model": state},
        "student_key.pt": {"student": state},
        "dp.pt": {f"module.{k}": v for k, v in state.items()},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in state.items()},
        "whole.pt": source,
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in [*files, "w.safetensors"]:
        assert _equal(load_weights(create_model("digits_student"), tmp_path / name), source), name


@pytest.mark.parametrize("obj, says", [
    (torch.zeros(3, 4), r"holds a single tensor of shape \[3, 4\], not a state dict"),
    ([torch.zeros(1), 2], "holds a list of 2 items, not a state dict"),
    ({"epoch": 3, "lr": 0.1}, r"holds a dict without tensors \(keys: epoch, lr\), not a state dict"),
])
def test_a_file_that_is_not_a_state_dict_says_what_it_holds(tmp_path, obj, says):
    torch.save(obj, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=says):
        load_weights(create_model("digits_student"), tmp_path / "x.pt")


def test_text_and_foreign_pickles_are_refused(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"cannot be read as a weights-only checkpoint: it holds text \('these are"):
        load_weights(create_model("digits_student"), tmp_path / "notes.pth")
    torch.save({"state_dict": Path("x")}, tmp_path / "pickled.pt")  # a class outside the allow-list
    with pytest.raises(ValueError, match="needs pathlib.*will not unpickle code"):
        load_weights(create_model("digits_student"), tmp_path / "pickled.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01junk")
    with pytest.raises(ValueError, match="cannot be read as a safetensors file"):
        load_weights(create_model("digits_student"), tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        load_weights(create_model("digits_student"), tmp_path / "missing.pt")


def test_old_checkpoints_without_num_batches_tracked_still_load(tmp_path):
    source = create_model("digits_student")
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    load_weights(create_model("digits_student"), tmp_path / "old.pt")
