"""Small CNN and one-hidden-layer MLP with stable, named layers (``conv1``, ``conv2``, ``fc``)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def small_cnn(in_shape=(1, 28, 28), classes: int = 10, width: int = 16) -> nn.Sequential:
    """Two conv + ReLU + max-pool stages and a linear head. Input [B, *in_shape] -> [B, classes]."""
    channels, height, width_px = in_shape
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, width, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(2 * width * (height // 4) * (width_px // 4), classes)),
    ]))


def mlp(in_shape=(1, 28, 28), classes: int = 10, hidden: int = 256) -> nn.Sequential:
    """The one-hidden-layer ReLU MLP of Shah et al. (2021). Input [B, *in_shape] -> [B, classes]."""
    features = 1
    for size in in_shape:
        features *= size
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("hidden", nn.Linear(features, hidden)), ("relu", nn.ReLU()),
        ("fc", nn.Linear(hidden, classes)),
    ]))
