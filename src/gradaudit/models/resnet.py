"""A ResNet-18-shaped network (BasicBlocks [2, 2, 2, 2]) without torchvision.

In-place ReLUs and ``out += identity`` as in torchvision's version, so it exercises the
engine's in-place handling; layer names follow torchvision (``layer4.1.conv2``).
"""

from __future__ import annotations

from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """[B, in_channels, H, W] -> [B, classes]; a 3x3 stem (no max-pool) suits small inputs."""

    def __init__(self, in_channels: int = 3, classes: int = 10, width: int = 64, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, planes = [], width
        for i, count in enumerate(blocks):
            out = width * 2**i
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(*[BasicBlock(planes if j == 0 else out, out, stride if j == 0 else 1)
                                          for j in range(count)]))
            planes = out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(in_channels: int = 3, classes: int = 10, width: int = 64) -> ResNet:
    """ResNet-18 layout (BasicBlocks [2, 2, 2, 2], widths w, 2w, 4w, 8w)."""
    return ResNet(in_channels, classes, width)
