"""The small reference architectures the audits train."""

from .small import mlp, small_cnn

__all__ = ["small_cnn", "mlp"]
