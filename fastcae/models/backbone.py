"""A distilled student as a multi-scale feature backbone for torchvision's dense models.

Data-free distillation yields a classifier; to test whether its features transfer to segmentation or
detection, the network has to hand out feature maps at several strides instead of logits.
``FeatureBackbone`` does that for every zoo family (CIFAR ResNet, Wide ResNet, VGG, the digits nets) by
walking its stages, and for any other conv classifier by recording, in one dry forward pass, the last module
output at each spatial resolution. ``segmentation_model`` and ``detection_model`` put torchvision's FCN /
DeepLabV3 heads and Faster R-CNN (with an FPN) on top.

The backbone *shares* the student's modules (no copy): training the dense model trains the student's
weights, and gradients reach the student's own first conv. ``copy.deepcopy`` the student first to keep it.

The CIFAR-style stems have stride 1, so the first map is as large as the input. For 224-512 px inputs pass
``input_downscale=2`` or ``4`` (the input is average-pooled before the network; see docs/transfer.md).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import eval_mode
from .cifar import VGG, ResNet, WideResNet
from .small import SmallConvNet


def _first_conv(model: nn.Module) -> nn.Conv2d:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d: it cannot serve as a convolutional backbone")


# ------------------------------------------------------------------------------------- stage discovery


def _resnet_stages(model: ResNet) -> list[tuple[str, nn.Module]]:
    stem = nn.Sequential(model.conv1, model.bn1, nn.ReLU(), model.layer1)  # stem has stride 1: fold it in
    return [("layer1", stem), ("layer2", model.layer2), ("layer3", model.layer3), ("layer4", model.layer4)]


def _wrn_stages(model: WideResNet) -> list[tuple[str, nn.Module]]:
    # Pre-activation blocks: the final BN-ReLU belongs to the last stage, as in the classifier's features.
    return [("block1", nn.Sequential(model.conv1, model.block1)), ("block2", model.block2),
            ("block3", nn.Sequential(model.block3, model.bn, nn.ReLU()))]


def _pooled_sequential_stages(features: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """Split a conv/pool ``Sequential`` (VGG, digits nets) just before each max-pool, so each stage ends at
    the last activation of a resolution. A trailing pool with no conv after it is dropped (it only shrinks
    the deepest map, which an FPN's extra level or a head does anyway)."""
    groups: list[list[nn.Module]] = [[]]
    for layer in features:
        if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)) and any(isinstance(m, nn.Conv2d) for m in groups[-1]):
            groups.append([])
        groups[-1].append(layer)
    groups = [g for g in groups if any(isinstance(m, nn.Conv2d) for m in g)]
    return [(f"stage{i}", nn.Sequential(*g)) for i, g in enumerate(groups)]


def _family_stages(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    if isinstance(model, ResNet):
        return _resnet_stages(model)
    if isinstance(model, WideResNet):
        return _wrn_stages(model)
    if isinstance(model, (VGG, SmallConvNet)):
        return _pooled_sequential_stages(model.features)
    return None


class _HookedStages(nn.Module):
    """Generic fallback: the outputs of chosen submodules of ``model``, captured by forward hooks while the
    whole model runs (its head included; the cost of not knowing where the trunk ends)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: Tensor) -> list[Tensor]:
        captured: dict[str, Tensor] = {}
        modules = dict(self.model.named_modules())
        handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o))
                   for n in self.names]
        try:
            self.model(x)
        finally:
            for h in handles:
                h.remove()
        return [captured[n] for n in self.names]


def _discover_by_resolution(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the modules whose output is the last one produced at each successively smaller resolution.

    Hooks fire when a module *finishes*, so a residual block or a Sequential stage is seen after its
    children and wins over them; global pools (adaptive pooling to a fixed size) are skipped.
    """
    seen: list[tuple[str, tuple[int, int]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name or isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            continue

        def hook(m, i, o, name=name):
            if isinstance(o, Tensor) and o.dim() == 4:
                seen.append((name, tuple(o.shape[-2:])))

        handles.append(module.register_forward_hook(hook))
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
    last_at: dict[tuple[int, int], str] = {}
    order: list[tuple[int, int]] = []
    for name, size in seen:
        if size not in last_at:
            order.append(size)
        last_at[size] = name
    chosen, area = [], None
    for size in order:  # keep a strictly shrinking chain of resolutions
        if area is None or size[0] * size[1] < area:
            chosen.append(last_at[size])
            area = size[0] * size[1]
    if not chosen:
        raise ValueError(f"{type(model).__name__} produced no 4-D feature maps in a forward pass")
    return chosen


# ------------------------------------------------------------------------------------------- backbone


class FeatureBackbone(nn.Module):
    """Feature maps of ``model`` at increasing strides, as an ``OrderedDict`` (torchvision's backbone contract).

    ``return_stages`` picks the maps: ``None`` for all stages (keys ``"0"``, ``"1"``, ...), a sequence of
    stage indices or names (keys are the stage indices as strings), or a mapping ``{stage: key}`` like
    torchvision's ``return_layers``. Stage names are in ``stage_names``; ``out_channels_list`` and
    ``strides`` describe the returned maps, in order. ``input_downscale`` average-pools the input by that
    integer factor first (the stride-1 CIFAR stems make full-size first maps on large images).
    ``example_size`` is the image size of the dry pass that measures channels and strides.
    """

    def __init__(self, model: nn.Module, return_stages: Sequence[int | str] | Mapping[int | str, str] | None = None,
                 *, input_downscale: int = 1, example_size: int = 64):
        super().__init__()
        if input_downscale < 1:
            raise ValueError(f"input_downscale must be a positive integer, got {input_downscale}")
        self.input_downscale = int(input_downscale)
        in_chans = _first_conv(model).in_channels
        example = torch.zeros(2, in_chans, example_size, example_size,
                              device=next(model.parameters()).device)
        stages = _family_stages(model)
        if stages is None:
            try:
                with eval_mode(model), torch.no_grad():
                    names = _discover_by_resolution(model, example)
            except RuntimeError as err:
                raise ValueError(f"{type(model).__name__} cannot take {example_size}x{example_size} inputs: "
                                 f"{err}") from err
        if stages is not None:
            self.stages = nn.ModuleList([m for _, m in stages])
            self.stage_names = [n for n, _ in stages]
            self.hooked = None
        else:
            self.stages = None
            self.stage_names = names
            self.hooked = _HookedStages(model, self.stage_names)
        try:
            with eval_mode(model), torch.no_grad():
                maps = self._maps(example, len(self.stage_names) - 1)
        except RuntimeError as err:
            raise ValueError(f"{type(model).__name__} cannot take {example_size}x{example_size} inputs "
                             f"(downscaled by {self.input_downscale}): {err}") from err
        self.stage_channels = [int(m.shape[1]) for m in maps]
        self.stage_strides = [round(example_size / int(m.shape[-1])) for m in maps]
        self._select(return_stages)

    def _select(self, return_stages) -> None:
        def index(stage) -> int:
            n = len(self.stage_names)
            if isinstance(stage, str) and stage in self.stage_names:
                return self.stage_names.index(stage)
            if isinstance(stage, int) and -n <= stage < n:
                return stage % n
            raise ValueError(f"unknown stage {stage!r}; stages are 0..{n - 1} = {self.stage_names}")

        if return_stages is None:
            picked = {i: str(i) for i in range(len(self.stage_names))}
        elif isinstance(return_stages, Mapping):
            picked = {index(s): str(k) for s, k in return_stages.items()}
        else:
            picked = {index(s): str(index(s)) for s in return_stages}
        if not picked:
            raise ValueError("return_stages selects no stage")
        self.return_indices = sorted(picked)
        self.return_keys = [picked[i] for i in self.return_indices]
        self.out_channels_list = [self.stage_channels[i] for i in self.return_indices]
        self.strides = [self.stage_strides[i] for i in self.return_indices]

    def _maps(self, x: Tensor, last: int) -> list[Tensor]:
        """All stage outputs up to stage ``last`` (the hooked fallback always runs the whole model)."""
        if self.input_downscale > 1:
            x = F.avg_pool2d(x, self.input_downscale, ceil_mode=True)
        if self.hooked is not None:
            return self.hooked(x)
        maps = []
        for stage in self.stages[: last + 1]:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        maps = self._maps(x, self.return_indices[-1])  # stops after the deepest map asked for
        return OrderedDict((k, maps[i]) for i, k in zip(self.return_indices, self.return_keys))


# --------------------------------------------------------------------------------------- dense models


def segmentation_model(student: nn.Module, num_classes: int, image_size: int, *, head: str = "fcn",
                       aux_loss: bool = False, input_downscale: int = 1,
                       atrous_rates: Sequence[int] = (2, 4, 6)) -> nn.Module:
    """Semantic segmentation on the student's deepest feature map, upsampled to the input size.

    A torchvision ``FCN`` (``head="fcn"``: conv3x3-BN-ReLU-dropout-conv1x1) or ``DeepLabV3``
    (``head="deeplabv3"``: ASPP with small ``atrous_rates``, since the maps of 32-64 px inputs are a few
    pixels wide) whose forward returns ``{"out": [B, num_classes, H, W]}`` (plus ``"aux"`` from the
    second-deepest stage with ``aux_loss=True``). ``image_size`` is the training image size, used to
    measure the backbone.
    """
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    probe = FeatureBackbone(student, input_downscale=input_downscale, example_size=image_size)
    n = len(probe.stage_names)
    if aux_loss and n < 2:
        raise ValueError("aux_loss needs a backbone with at least two stages")
    stages = {n - 1: "out", **({n - 2: "aux"} if aux_loss else {})}
    backbone = FeatureBackbone(student, stages, input_downscale=input_downscale, example_size=image_size)
    channels = dict(zip(backbone.return_keys, backbone.out_channels_list))
    aux = FCNHead(channels["aux"], num_classes) if aux_loss else None
    if head == "fcn":
        return FCN(backbone, FCNHead(channels["out"], num_classes), aux)
    if head == "deeplabv3":
        return DeepLabV3(backbone, DeepLabHead(channels["out"], num_classes, atrous_rates=tuple(atrous_rates)), aux)
    raise ValueError(f"unknown head {head!r}; use 'fcn' or 'deeplabv3'")


class BackboneFPN(nn.Module):
    """``FeatureBackbone`` + torchvision ``FeaturePyramidNetwork`` (with a max-pooled extra level), exposing
    ``out_channels`` as torchvision's detectors require."""

    def __init__(self, body: FeatureBackbone, out_channels: int = 64):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels_list, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.fpn(self.body(x))


def detection_model(student: nn.Module, num_classes: int, *, min_size: int = 64, max_size: int = 128,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    return_stages: Sequence[int | str] | None = None, fpn_channels: int = 64,
                    anchor_sizes: Sequence[Sequence[int]] | None = None,
                    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), input_downscale: int = 1,
                    representation_size: int = 256, **faster_rcnn_kwargs) -> nn.Module:
    """torchvision ``FasterRCNN`` on an FPN over the student's stages, sized for small (32-128 px) images.

    ``num_classes`` counts the background (torchvision's convention). Images are resized so their short side
    is ``min_size`` and normalised with ``mean``/``std`` (default 0.5 per channel; give the student's own).
    One anchor size per pyramid level, 4x the level's stride (4, 8, 16, ... px) unless ``anchor_sizes`` says
    otherwise; RoIs are pooled from the backbone levels (not the extra max-pooled one) into a two-layer
    box head of width ``representation_size``. A small image holds few objects, so the proposal and
    sampling budgets default to a fraction of torchvision's (which are sized for 800 px COCO images);
    extra keywords go to ``FasterRCNN`` and override them (``box_score_thresh``, ...).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    body = FeatureBackbone(student, return_stages, input_downscale=input_downscale, example_size=min_size)
    backbone = BackboneFPN(body, fpn_channels)
    levels = len(body.strides) + 1  # + LastLevelMaxPool's "pool" level at twice the deepest stride
    if anchor_sizes is None:
        anchor_sizes = [(4 * s,) for s in body.strides] + [(8 * body.strides[-1],)]
    if len(anchor_sizes) != levels:
        raise ValueError(f"anchor_sizes needs one tuple per pyramid level ({levels}), got {len(anchor_sizes)}")
    anchors = AnchorGenerator(tuple(tuple(int(v) for v in s) for s in anchor_sizes),
                              (tuple(aspect_ratios),) * levels)
    roi_pool = MultiScaleRoIAlign(featmap_names=body.return_keys, output_size=7, sampling_ratio=2)
    chans = _first_conv(student).in_channels
    mean = list(mean) if mean is not None else [0.5] * chans
    std = list(std) if std is not None else [0.5] * chans
    if len(mean) != chans or len(std) != chans:
        raise ValueError(f"mean/std need one value per input channel ({chans})")
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    box_predictor = FastRCNNPredictor(representation_size, num_classes)
    budgets = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 300,
               "rpn_post_nms_top_n_test": 100, "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 128}
    return FasterRCNN(backbone, num_classes=None, min_size=min_size, max_size=max_size, image_mean=mean,
                      image_std=std, rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head,
                      box_predictor=box_predictor, **{**budgets, **faster_rcnn_kwargs})
