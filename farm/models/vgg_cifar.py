"""CIFAR-style VGG with BatchNorm (as in Liu et al., network slimming): 3x3 convs, one linear head.

The 5th max-pool is dropped below 32 px so a 28 px input still ends at 1x1 after the last stage.
"""

from __future__ import annotations

import torch
from torch import nn

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    def __init__(self, config: str = "vgg16", in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in CONFIGS[config]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(torch.amax(x, dim=(2, 3)), 1))
