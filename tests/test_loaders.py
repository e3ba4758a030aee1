"""data.load: each file format a user brings, written by the test in that exact format, read back
pixel for pixel; splits; pickle safety; and the errors a user meets."""

import pickle

import numpy as np
import pytest
import torch
from datafiles import cifar10_folder, cifar100_folder, class_images, idx_folder, image_folder, npz_file, pt_file

from gradaudit import data


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("prefix", ["", "emnist-letters-"])
def test_idx_folders_read_back_exactly(tmp_path, gzipped, prefix):
    idx_folder(tmp_path, train=30, test=12, gzipped=gzipped, prefix=prefix)
    train, test = data.load(f"idx:{tmp_path}", "train"), data.load(f"idx:{tmp_path}", "test")
    for part, (count, seed) in ((train, (30, 0)), (test, (12, 1))):
        images, labels = class_images(count, 3, (1, 28, 28), seed)
        assert part.x.shape == (count, 1, 28, 28) and part.x.dtype == torch.float32
        assert torch.equal(part.x * 255, torch.from_numpy(images).float())
        assert torch.equal(part.y, torch.from_numpy(labels))
    assert train.classes == ("0", "1", "2") and len(train[0]) == 2


def test_cifar10_and_cifar100_binaries(tmp_path):
    cifar10_folder(tmp_path / "c10", per_batch=8, test=5)
    train = data.load(f"cifar10:{tmp_path / 'c10'}", "train")
    assert train.x.shape == (40, 3, 32, 32) and train.classes[0] == "airplane" and len(train.classes) == 10
    first, labels = class_images(8, 3, (3, 32, 32), 1)                   # data_batch_1 comes first
    assert torch.equal(train.x[:8] * 255, torch.from_numpy(first).float())
    assert torch.equal(train.y[:8], torch.from_numpy(labels))
    test = data.load(f"cifar10:{tmp_path / 'c10' / 'cifar-10-batches-bin'}", "test")   # the inner folder works too
    assert len(test) == 5
    cifar100_folder(tmp_path / "c100")
    fine = data.load(f"cifar100:{tmp_path / 'c100'}", "test")
    images, labels = class_images(20, 4, (3, 32, 32), 1)
    assert torch.equal(fine.y, torch.from_numpy(labels)) and torch.equal(fine.x * 255, torch.from_numpy(images).float())


def test_cifar10_python_version_needs_trust_pickle(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    images, labels = class_images(6, 3, (3, 32, 32))
    for name in ("data_batch_1", "test_batch"):
        with open(root / name, "wb") as handle:
            pickle.dump({b"data": images.reshape(6, -1), b"labels": labels.tolist()}, handle)
    with pytest.raises(ValueError, match="Python \\(pickle\\) version of CIFAR-10.*--trust-pickle"):
        data.load(f"cifar10:{tmp_path}", "train")
    loaded = data.load(f"cifar10:{tmp_path}", "train", trust_pickle=True)
    assert torch.equal(loaded.x * 255, torch.from_numpy(images).float())


def test_image_folders_split_grey_and_resize(tmp_path):
    images, labels = image_folder(tmp_path / "flat", per_class=10, size=(12, 10))
    train = data.load(f"folder:{tmp_path / 'flat'}", "train", test_fraction=0.3)
    test = data.load(f"folder:{tmp_path / 'flat'}", "test", test_fraction=0.3)
    assert train.classes == ("cat", "dog") and train.x.shape[1:] == (3, 12, 10)
    assert (len(train), len(test)) == (14, 6) and test.y.bincount().tolist() == [3, 3]     # stratified
    everything = {tuple(v.flatten().tolist()) for v in torch.cat([train.x, test.x])}
    assert everything == {tuple((torch.from_numpy(i).float() / 255).flatten().tolist()) for i in images}
    again = data.load(f"folder:{tmp_path / 'flat'}", "test", test_fraction=0.3)
    assert torch.equal(again.x, test.x)                                                     # seeded
    image_folder(tmp_path / "split", per_class=6, mode="L", split=True)
    grey = data.load(f"folder:{tmp_path / 'split'}", "test", size=(7, 5))
    assert grey.x.shape == (4, 1, 7, 5)


def _mask_folder(root, split=False):
    """Beside ``image_folder``'s images, masks/ with one PNG per image: its red channel above 127, so each
    loaded mask can be checked against its own image."""
    from PIL import Image

    for path in sorted(root.rglob("*.png")):
        relative = path.relative_to(root)
        target = root / "masks" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        red = np.asarray(Image.open(path).convert("RGB"))[..., 0]
        Image.fromarray(((red > 127) * 255).astype(np.uint8)).save(target)


@pytest.mark.parametrize("split", [False, True])
def test_image_folders_with_masks_give_each_image_its_own_mask(tmp_path, split):
    image_folder(tmp_path, per_class=6, split=split)
    _mask_folder(tmp_path)
    for part in ("train", "test"):
        loaded = data.load(f"folder:{tmp_path}", part, test_fraction=0.3)
        assert isinstance(loaded, data.MaskedImageData) and loaded.classes == ("cat", "dog")
        assert loaded.signal_mask.shape == (len(loaded), 1, 12, 10) and loaded.signal_mask.dtype == torch.bool
        assert torch.equal(loaded.signal_mask[:, 0], loaded.x[:, 0] > 127 / 255)
    (tmp_path / "masks" / ("train" if split else "") / "cat" / sorted(
        (tmp_path / "masks" / ("train" if split else "") / "cat").iterdir())[0].name).unlink()
    with pytest.raises(FileNotFoundError, match="has no mask"):
        data.load(f"folder:{tmp_path}", "train", test_fraction=0.3)


def test_masks_of_another_size_are_refused(tmp_path):
    from PIL import Image

    image_folder(tmp_path, per_class=2)
    _mask_folder(tmp_path)
    for path in (tmp_path / "masks").rglob("*.png"):
        Image.new("L", (5, 5)).save(path)
    with pytest.raises(ValueError, match="masks must have the images' size"):
        data.load(f"folder:{tmp_path}", "train", test_fraction=0.5)


def test_npz_and_pt_files(tmp_path):
    images, labels = npz_file(tmp_path / "given.npz")
    test = data.load(f"npz:{tmp_path / 'given.npz'}", "test")
    assert torch.equal(test.x * 255, torch.from_numpy(images[30:]).float())
    npz_file(tmp_path / "pooled.npz", test=False)
    train = data.load(f"npz:{tmp_path / 'pooled.npz'}", "train", test_fraction=0.25)
    assert len(train) + len(data.load(f"npz:{tmp_path / 'pooled.npz'}", "test", test_fraction=0.25)) == 30
    images, labels = pt_file(tmp_path / "d.pt")
    loaded = data.load(f"pt:{tmp_path / 'd.pt'}", "train")
    assert loaded.x.shape[1:] == (3, 8, 8) and loaded.x.dtype == torch.float32
    np.savez(tmp_path / "objects.npz", x=np.array([object()] * 3), y=np.arange(3))
    with pytest.raises(ValueError, match="pickled Python objects.*--trust-pickle"):
        data.load(f"npz:{tmp_path / 'objects.npz'}", "train")


def test_channels_last_and_float_pixels(tmp_path):
    x = np.random.default_rng(0).random((20, 8, 8, 3)).astype(np.float32)
    y = np.arange(20) % 2
    np.savez(tmp_path / "last.npz", x=x, y=y, x_test=x, y_test=y)
    loaded = data.load(f"npz:{tmp_path / 'last.npz'}", "train")
    assert torch.equal(loaded.x, torch.from_numpy(x).permute(0, 3, 1, 2))    # [N, H, W, C] -> [N, C, H, W]
    np.savez(tmp_path / "normalised.npz", x=x * 4 - 2, y=np.arange(20) % 2)
    with pytest.raises(ValueError, match=r"float pixels must lie in \[0, 1\].*normalisation belongs in the model"):
        data.load(f"npz:{tmp_path / 'normalised.npz'}", "train")


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="unknown scheme 'imagenet'.*idx, cifar10"):
        data.load("imagenet:/data", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'missing'}", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class subfolders"):
        data.load(f"folder:{tmp_path / 'empty'}", "train")
    with pytest.raises(FileNotFoundError, match="no IDX image/label pair"):
        data.load(f"idx:{tmp_path / 'empty'}", "train")
    with pytest.raises(ValueError, match="needs a path"):
        data.load("npz:", "train")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load(f"idx:{tmp_path}", "valid")
    from PIL import Image

    for name, size in (("a", (10, 10)), ("b", (12, 10))):
        (tmp_path / "mixed" / name).mkdir(parents=True)
        Image.new("L", size).save(tmp_path / "mixed" / name / "0.png")
    with pytest.raises(ValueError, match="images differ in size.*--size H,W"):
        data.load(f"folder:{tmp_path / 'mixed'}", "train")
    assert data.load(f"folder:{tmp_path / 'mixed'}", "train", size=(9, 9), test_fraction=0.5).x.shape[1:] == (1, 9, 9)
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="must hold arrays 'x' and 'y'"):
        data.load(f"npz:{tmp_path / 'nolabels.npz'}", "train")
    (tmp_path / "text.pt").write_text("not a tensor")
    with pytest.raises(ValueError, match="is not a torch file"):
        data.load(f"pt:{tmp_path / 'text.pt'}", "train")
    (tmp_path / "c10").mkdir()
    (tmp_path / "c10" / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "c10" / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="records of 3073 bytes"):
        data.load(f"cifar10:{tmp_path / 'c10'}", "train")


def test_loaded_data_goes_straight_into_audits_and_training(tmp_path):
    from gradaudit import train

    idx_folder(tmp_path, train=120, test=30)
    part = data.load(f"idx:{tmp_path}", "train")
    from usernets import grey_cnn

    model = train.fit(grey_cnn(), part, epochs=10, lr=1e-2, seed=0, progress=False)
    assert train.evaluate(model, data.load(f"idx:{tmp_path}", "test"))["clean"] > 0.9     # the bands are learnable


def test_both_splits_from_one_read_equal_each_split_alone(tmp_path):
    image_folder(tmp_path, per_class=10)
    train, test = data.load_splits(f"folder:{tmp_path}", test_fraction=0.3)
    for part, split in ((train, "train"), (test, "test")):
        alone = data.load(f"folder:{tmp_path}", split, test_fraction=0.3)
        assert torch.equal(part.x, alone.x) and torch.equal(part.y, alone.y) and part.classes == alone.classes
