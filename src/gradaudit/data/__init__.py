"""Datasets: real MNIST digits (bundled subset or the user's IDX files)."""

from .mnist import mnist_digits

__all__ = ["mnist_digits"]
