"""Training the reference models."""

from .fit import accuracy, fit

__all__ = ["fit", "accuracy"]
