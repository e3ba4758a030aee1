"""The small reference architectures the audits train."""

from .resnet import resnet18
from .small import mlp, small_cnn

__all__ = ["small_cnn", "mlp", "resnet18"]
