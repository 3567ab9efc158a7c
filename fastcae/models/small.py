"""Small teacher/student pair for the embedded digits demo, cheap enough to distil on two CPU cores.

Both default to 1-channel 32x32 inputs and accept any height and width that is a multiple of 8 (three
2x2 pools at most), since global average pooling removes the dependence on the final map size. Every
conv is followed by BatchNorm2d, which the data-free synthesis relies on (its BN-statistics loss).
"""

from __future__ import annotations

from torch import Tensor, nn

from .features import ZooClassifier
from .registry import register_model

# Digits rendered to [0, 1]; centring on 0.5 with unit-ish spread is all the small nets need.
DIGITS_CFG = {"input_size": (1, 32, 32), "mean": (0.5,), "std": (0.5,)}


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallConvNet(ZooClassifier):
    """conv3x3-BN-ReLU stages of the given widths, a 2x2 max-pool after the first ``num_pools`` of them,
    then global average pool and a Linear classifier."""

    def __init__(self, widths: list[int], num_pools: int, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        if num_pools > len(widths):
            raise ValueError(f"num_pools={num_pools} exceeds the number of conv stages ({len(widths)})")
        layers: list[nn.Module] = []
        cin = in_chans
        for i, width in enumerate(widths):
            layers += _conv_bn_relu(cin, width)
            if i < num_pools:
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward_head(self, f: Tensor) -> Tensor:
        return self.fc(f)


@register_model(default_cfg=DIGITS_CFG)
def digits_teacher(num_classes: int = 10, in_chans: int = 1, **kwargs) -> SmallConvNet:
    """VGG-style teacher: 32-64-128-128 channels, pooled after the first three convs (32 -> 4 pixels)."""
    return SmallConvNet([32, 64, 128, 128], num_pools=3, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(default_cfg=DIGITS_CFG)
def digits_student(num_classes: int = 10, in_chans: int = 1, **kwargs) -> SmallConvNet:
    """Student: 16-32-64 channels, pooled after the first two convs (the global pool does the rest)."""
    return SmallConvNet([16, 32, 64], num_pools=2, num_classes=num_classes, in_chans=in_chans, **kwargs)
