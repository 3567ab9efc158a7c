"""CIFAR-style teachers and students used throughout the DFKD literature: ResNet, Wide ResNet, VGG-BN.

The architectures follow the variants DAFL/DFAD/CMI/Fast-DFKD/NAYER report on, so parameter counts and
accuracies are comparable: a 3x3 stride-1 stem without max-pool (32x32 inputs), and global average pooling
before a single Linear classifier. All of them take ``num_classes`` and ``in_chans`` keywords and expose
``forward_features`` / ``forward_head`` (see ``features.ZooClassifier``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..datasets import DATASETS
from .features import ZooClassifier
from .registry import register_model

# The input the CIFAR zoo expects by default: CIFAR-10's, normalised as ``fastcae.datasets.DATASETS`` says (the
# one home of the dataset statistics). A network trained on CIFAR-100 expects DATASETS["cifar100"] instead. The
# "dataset" key names that entry, so a consumer of ``model.pretrained_cfg`` finds the class names there too.
_C10 = DATASETS["cifar10"]
CIFAR_CFG = {"input_size": _C10.image_shape, "mean": _C10.mean, "std": _C10.std, "dataset": _C10.name}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


# --------------------------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Post-activation ResNet block: two 3x3 convs, with a 1x1 projection when the shape changes."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(ZooClassifier):
    """CIFAR ResNet: 3x3 stem (stride 1, no max-pool), four BasicBlock stages 64-128-256-512."""

    def __init__(self, layers: list[int], num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.conv1 = _conv3x3(in_chans, 64)
        self.bn1 = nn.BatchNorm2d(64)
        stages = []
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, width, stride if j == 0 else 1))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x).flatten(1)

    def forward_head(self, f: Tensor) -> Tensor:
        return self.fc(f)


@register_model(default_cfg=CIFAR_CFG)
def resnet18(num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(default_cfg=CIFAR_CFG)
def resnet34(num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNet:
    return ResNet([3, 4, 6, 3], num_classes=num_classes, in_chans=in_chans, **kwargs)


# ------------------------------------------------------------------------- ResNet-20/32/44/56 (6n + 2)
_C100 = DATASETS["cifar100"]
CIFAR100_CFG = {"input_size": _C100.image_shape, "mean": _C100.mean, "std": _C100.std, "dataset": _C100.name}


class CifarBasicBlock(nn.Module):
    """He et al.'s CIFAR block as the public checkpoints store it: conv3x3-BN-ReLU-conv3x3-BN plus the
    shortcut, then ReLU; where the shape changes the shortcut is ``downsample`` (1x1 conv, stride 2, BN)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(ZooClassifier):
    """The CIFAR ResNet of depth 6n + 2 (He et al. 2016, section 4.2): a 16-channel 3x3 stem, three stages of
    n blocks at 16, 32 and 64 channels (strides 1, 2, 2), global average pool, ``fc``. Parameter names match
    the publicly trained checkpoints (chenyaofo/pytorch-cifar-models, torch.hub), so they load strictly."""

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"a CIFAR ResNet's depth is 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_chans, 16)
        self.bn1 = nn.BatchNorm2d(16)
        cin, stages = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(nn.Sequential(*[CifarBasicBlock(cin if j == 0 else width, width, stride if j == 0 else 1)
                                          for j in range(n)]))
            cin = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.pool(self.layer3(self.layer2(self.layer1(x)))).flatten(1)

    def forward_head(self, f: Tensor) -> Tensor:
        return self.fc(f)


def _cifar_resnet(depth: int, default_classes: int, cfg: dict):
    """``resnet{depth}`` (any class count, CIFAR-10's input) and the torch.hub names of the public checkpoints,
    ``cifar10_resnet{depth}`` and ``cifar100_resnet{depth}`` (their class count and normalisation)."""

    def build(num_classes: int = default_classes, in_chans: int = 3, **kwargs) -> CifarResNet:
        return CifarResNet(depth, num_classes=num_classes, in_chans=in_chans, **kwargs)

    return build, cfg


for _depth in (20, 32, 44, 56):
    for _name, _classes, _cfg in ((f"resnet{_depth}", 10, CIFAR_CFG), (f"cifar10_resnet{_depth}", 10, CIFAR_CFG),
                                  (f"cifar100_resnet{_depth}", 100, CIFAR100_CFG)):
        _fn, _c = _cifar_resnet(_depth, _classes, _cfg)
        _fn.__name__ = _fn.__qualname__ = _name
        _fn.__doc__ = f"CIFAR ResNet-{_depth} ({_classes} classes by default), 1x1-conv shortcuts: {_name}."
        register_model(_fn, default_cfg={**_c, "num_classes": _classes})


# ---------------------------------------------------------------------------------------- Wide ResNet


class WideBasic(nn.Module):
    """Pre-activation WRN block: BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3.

    When the width or stride changes, the 1x1 projection shortcut reads the pre-activated input (as in
    Zagoruyko & Komodakis), otherwise the raw input is added back.
    """

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        residual = x if self.shortcut is None else self.shortcut(pre)
        return out + residual


class WideResNet(ZooClassifier):
    """WRN-depth-k: stem conv to 16 channels, three stages of widths 16k, 32k, 64k (strides 1, 2, 2) with
    ``(depth - 4) / 6`` blocks each, then BN-ReLU, global average pool and a Linear classifier."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, in_chans: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth, self.widen_factor = depth, widen_factor
        self.conv1 = _conv3x3(in_chans, widths[0])
        stages = []
        cin = widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(WideBasic(cin, width, stride if j == 0 else 1, dropout))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = F.relu(self.bn(x))
        return self.pool(x).flatten(1)

    def forward_head(self, f: Tensor) -> Tensor:
        return self.fc(f)


@register_model(default_cfg=CIFAR_CFG)
def wrn16_1(num_classes: int = 10, in_chans: int = 3, **kwargs) -> WideResNet:
    return WideResNet(16, 1, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(default_cfg=CIFAR_CFG)
def wrn16_2(num_classes: int = 10, in_chans: int = 3, **kwargs) -> WideResNet:
    return WideResNet(16, 2, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(default_cfg=CIFAR_CFG)
def wrn40_1(num_classes: int = 10, in_chans: int = 3, **kwargs) -> WideResNet:
    return WideResNet(40, 1, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(default_cfg=CIFAR_CFG)
def wrn40_2(num_classes: int = 10, in_chans: int = 3, **kwargs) -> WideResNet:
    return WideResNet(40, 2, num_classes=num_classes, in_chans=in_chans, **kwargs)


# ----------------------------------------------------------------------------------------------- VGG

VGG11_CFG: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(ZooClassifier):
    """CIFAR VGG with BatchNorm: conv3x3-BN-ReLU stacks and 2x2 max-pools, then a single Linear.

    At 32x32 the five pools leave a 1x1x512 map; the adaptive average pool makes larger inputs work too
    (inputs must be at least 32x32 so that every pool has something to pool).
    """

    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [_conv3x3(cin, int(v)), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward_head(self, f: Tensor) -> Tensor:
        return self.fc(f)


@register_model(default_cfg=CIFAR_CFG)
def vgg11_bn(num_classes: int = 10, in_chans: int = 3, **kwargs) -> VGG:
    return VGG(VGG11_CFG, num_classes=num_classes, in_chans=in_chans, **kwargs)
