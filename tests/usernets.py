"""Factories a user would write, importable as ``usernets:NAME`` (tests/ is on the path)."""

from torch import nn


def grey_cnn():
    """[B, 1, 28, 28] -> [B, 3]."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                         nn.Linear(4 * 7 * 7, 3))


def colour_cnn():
    """[B, 3, 32, 32] -> [B, 3], with BatchNorm (as most users' nets)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


def not_a_classifier():
    """Returns a map [B, 1, 28, 28], not logits."""
    return nn.Conv2d(1, 1, 3, padding=1)


def two_classes():
    """[B, 1, 28, 28] -> [B, 2]: too few outputs for three labels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))
