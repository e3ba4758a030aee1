"""Datasets: real MNIST digits (bundled subset or the user's IDX files), BlockMNIST, the synthetic
signal-coordinate data, and the user's files (``load``: IDX, CIFAR binaries, image folders, npz, pt)."""

from .blockmnist import BlockMNIST, blockmnist, null_pattern
from .files import SCHEMES, ImageData, MaskedImageData, load, load_splits
from .inputs import Examples, as_examples
from .mnist import mnist_digits
from .synthetic import SignalCoordinates, signal_coordinates

__all__ = ["mnist_digits", "blockmnist", "BlockMNIST", "null_pattern", "signal_coordinates", "SignalCoordinates",
           "as_examples", "Examples", "load", "load_splits", "ImageData", "MaskedImageData", "SCHEMES"]
