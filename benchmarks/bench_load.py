"""How long ``data.load`` takes on full-size datasets, written here in their exact formats
(random pixels; nothing is downloaded), against the floor: reading and decompressing the same
bytes into one NumPy array, with no parsing, checks or conversion to float.

Prints one table: seconds (fastest of ``--runs``) per dataset and split.

    python benchmarks/bench_load.py                       # 60,000 + 10,000 IDX, CIFAR-10 50,000, 2,000 PNGs
    python benchmarks/bench_load.py --runs 5
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gradaudit import data

TESTS = Path(__file__).resolve().parent.parent / "tests"      # holds the writers of each format (datafiles.py)


def fastest(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def floor(paths: list[Path]) -> None:
    """Bytes to one uint8 array: what any loader must at least do (for PNGs: without decoding them)."""
    np.concatenate([np.frombuffer(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes(),
                                  dtype=np.uint8) for p in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from datafiles import cifar10_folder, idx_folder, image_folder

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        idx_folder(root / "idx-gz", train=60_000, test=10_000, classes=10)
        idx_folder(root / "idx-raw", train=60_000, test=10_000, classes=10, gzipped=False)
        cifar10_folder(root / "cifar", per_batch=10_000, test=10_000, classes=10)
        image_folder(root / "folder", per_class=1_000, size=(32, 32))
        cases = [
            ("idx (gzip), 60,000 x 1x28x28", f"idx:{root / 'idx-gz'}", "train",
             sorted((root / "idx-gz").glob("train*"))),
            ("idx (raw), 60,000 x 1x28x28", f"idx:{root / 'idx-raw'}", "train",
             sorted((root / "idx-raw").glob("train*"))),
            ("cifar10 binary, 50,000 x 3x32x32", f"cifar10:{root / 'cifar'}", "train",
             sorted((root / "cifar").glob("*/data_batch_*.bin"))),
            ("folder, 2,000 PNG 3x32x32 (train 80%)", f"folder:{root / 'folder'}", "train",
             sorted((root / "folder").glob("*/*.png"))),
        ]
        print(f"{'dataset':40} {'data.load (s)':>14} {'floor (s)':>10}")
        for label, spec, split, files in cases:
            ours = fastest(lambda spec=spec, split=split: data.load(spec, split), args.runs)
            bare = fastest(lambda files=files: floor(files), args.runs)
            print(f"{label:40} {ours:14.3f} {bare:10.3f}")


if __name__ == "__main__":
    main()
