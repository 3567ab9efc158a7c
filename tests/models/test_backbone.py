"""Students as dense backbones: multi-scale feature maps, torchvision segmentation and Faster R-CNN on top."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastcae.models import create_model
from fastcae.models.backbone import FeatureBackbone, detection_model, segmentation_model


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name, chans, size, channels", [
    ("resnet18", 3, 32, [64, 128, 256, 512]),
    ("wrn16_1", 3, 32, [16, 32, 64]),
    ("digits_student", 1, 16, [16, 32, 64]),
])
def test_feature_maps_have_increasing_strides_and_advertised_channels(name, chans, size, channels):
    model = create_model(name, num_classes=10, in_chans=chans).train()
    backbone = FeatureBackbone(model, example_size=size)
    assert backbone.out_channels_list == channels and model.training
    maps = backbone(torch.rand(2, chans, size, size))
    assert list(maps) == [str(i) for i in range(len(channels))]
    strides = [size // m.shape[-1] for m in maps.values()]
    assert strides == backbone.strides and strides == sorted(set(strides)) and strides[0] == 1
    assert [m.shape[1] for m in maps.values()] == channels


def test_stage_selection_downscale_and_generic_fallback():
    model = create_model("digits_student", num_classes=10)
    picked = FeatureBackbone(model, {"stage1": "mid", -1: "deep"}, input_downscale=2, example_size=32)
    maps = picked(torch.rand(1, 1, 32, 32))
    assert list(maps) == ["mid", "deep"] and picked.strides == [4, 8] and maps["deep"].shape[-1] == 4
    with pytest.raises(ValueError, match="unknown stage"):
        FeatureBackbone(model, ["layer9"])

    plain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    generic = FeatureBackbone(plain, example_size=32)
    maps = generic(torch.rand(2, 3, 32, 32))
    assert generic.out_channels_list == [8, 16, 32] and generic.strides == [1, 2, 4]
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8]


@pytest.mark.parametrize("name, chans, size, head",
                         [("resnet18", 3, 32, "fcn"), ("digits_student", 1, 16, "deeplabv3")])
def test_segmentation_backward_reaches_the_students_first_conv(name, chans, size, head):
    student = create_model(name, num_classes=10, in_chans=chans)
    model = segmentation_model(student, num_classes=4, image_size=size, head=head, aux_loss=True).train()
    out = model(torch.rand(2, chans, size, size))
    assert out["out"].shape == (2, 4, size, size) and out["aux"].shape == (2, 4, size, size)
    masks = torch.randint(0, 4, (2, size, size))
    (F.cross_entropy(out["out"], masks) + 0.5 * F.cross_entropy(out["aux"], masks)).backward()
    grad = _first_conv(student).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name, chans, size", [("resnet18", 3, 32), ("digits_student", 1, 16)])
def test_detection_trains_and_predicts(name, chans, size):
    student = create_model(name, num_classes=10, in_chans=chans)
    model = detection_model(student, num_classes=3, min_size=size, max_size=size)
    images = [torch.rand(chans, size, size) for _ in range(2)]
    s = size / 16
    targets = [{"boxes": torch.tensor([[2.0, 3.0, 12.0, 14.0]]) * s, "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[1.0, 1.0, 8.0, 9.0], [5.0, 4.0, 15.0, 15.0]]) * s,
                "labels": torch.tensor([1, 2])}]
    model.train()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grad = _first_conv(student).weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert isinstance(detections, list) and len(detections) == 2
    assert set(detections[0]) == {"boxes", "labels", "scores"} and detections[0]["boxes"].shape[-1] == 4
