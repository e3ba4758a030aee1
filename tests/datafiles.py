"""Small datasets written in the exact file formats users bring (IDX, CIFAR binaries, image
folders, npz, pt), with a learnable signal: class c brightens horizontal band c of the image."""

import gzip
import struct

import numpy as np
import torch


def class_images(count, classes, shape, seed=0):
    """uint8 images [count, C, H, W] with labels [count] (cycling over ``classes``): noise in
    [0, 80) plus 150 on band ``label`` of ``classes`` equal horizontal bands."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, (count, *shape)).astype(np.uint8)
    labels = np.arange(count) % classes
    band = shape[1] // classes
    for i, label in enumerate(labels):
        images[i, :, label * band:(label + 1) * band] += 150
    return images, labels


def write_idx(path, array, gzipped=True):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gzipped:
        with gzip.open(f"{path}.gz", "wb") as handle:
            handle.write(payload)
    else:
        with open(path, "wb") as handle:
            handle.write(payload)


def idx_folder(folder, train=300, test=90, classes=3, gzipped=True, prefix=""):
    """MNIST-named IDX files (``prefix`` as in EMNIST's ``emnist-letters-``) of 28x28 grey images."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 0), ("t10k", test, 1)):
        if not count:
            continue
        images, labels = class_images(count, classes, (1, 28, 28), seed)
        write_idx(folder / f"{prefix}{split}-images-idx3-ubyte", images[:, 0], gzipped)
        write_idx(folder / f"{prefix}{split}-labels-idx1-ubyte", labels, gzipped)
    return folder


def cifar10_folder(folder, per_batch=40, test=60, classes=3):
    """``cifar-10-batches-bin`` with five data batches and a test batch: records of 1 label byte + 3072 pixels."""
    root = folder / "cifar-10-batches-bin"
    root.mkdir(parents=True, exist_ok=True)
    for name, count, seed in [(f"data_batch_{i}.bin", per_batch, i) for i in range(1, 6)] + [("test_batch.bin",
                                                                                               test, 9)]:
        images, labels = class_images(count, classes, (3, 32, 32), seed)
        records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(count, -1)], axis=1)
        (root / name).write_bytes(records.tobytes())
    (root / "batches.meta.txt").write_text("\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                       "horse", "ship", "truck"]) + "\n\n")
    return folder


def cifar100_folder(folder, train=50, test=20, classes=4):
    """``train.bin`` / ``test.bin``: records of coarse label, fine label, 3072 pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train.bin", train, 0), ("test.bin", test, 1)):
        images, labels = class_images(count, classes, (3, 32, 32), seed)
        coarse = (labels // 2).astype(np.uint8)
        records = np.concatenate([coarse[:, None], labels.astype(np.uint8)[:, None], images.reshape(count, -1)], 1)
        (folder / name).write_bytes(records.tobytes())
    return folder


def image_folder(folder, per_class=6, classes=("cat", "dog"), size=(12, 10), mode="RGB", split=False):
    """``folder/CLASS/i.png`` (or ``folder/{train,test}/CLASS/i.png`` with ``split``)."""
    from PIL import Image

    images, labels = class_images(per_class * len(classes), len(classes), (3, *size))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        part = ("test" if i % 3 == 0 else "train") if split else ""
        target = folder / part / classes[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).convert(mode).save(target / f"{i}.png")
    return images, labels


def npz_file(path, test=True, classes=3):
    images, labels = class_images(40, classes, (1, 8, 8))
    arrays = {"x": images[:30, 0], "y": labels[:30]}
    if test:
        arrays |= {"x_test": images[30:, 0], "y_test": labels[30:]}
    np.savez(path, **arrays)
    return images, labels


def pt_file(path, classes=3):
    images, labels = class_images(40, classes, (3, 8, 8))
    torch.save({"x": torch.from_numpy(images).float() / 255, "y": torch.from_numpy(labels)}, path)
    return images, labels
