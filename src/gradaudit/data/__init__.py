"""Datasets: real MNIST digits (bundled subset or the user's IDX files) and BlockMNIST."""

from .blockmnist import BlockMNIST, blockmnist, null_pattern
from .inputs import Examples, as_examples
from .mnist import mnist_digits
from .synthetic import SignalCoordinates, signal_coordinates

__all__ = ["mnist_digits", "blockmnist", "BlockMNIST", "null_pattern", "signal_coordinates", "SignalCoordinates",
           "as_examples", "Examples"]
