"""Retraining throughput for ROAR: models per minute, one vectorised ensemble vs one at a time.

    python benchmarks/bench_ensemble.py [--models 20] [--epochs 1]

Both train the same models on the same masked BlockMNIST sets with the same seeds (equal
results, tested); "one at a time" is ``train.fit`` in a loop, "ensemble" is
``train.fit_ensemble``. Prints a table for the small CNN and the MLP that ROAR retrains.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import TensorDataset

from gradaudit import data, models, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    dataset = data.blockmnist("train")
    x, y = dataset.x, dataset.y
    keep = torch.rand(args.models, *x.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    seeds = list(range(args.models))
    builders = {
        "small CNN (width 8)": lambda: models.small_cnn((1, 56, 28), 2, width=8),
        "small CNN (width 16)": lambda: models.small_cnn((1, 56, 28), 2, width=16),
        "MLP (hidden 128)": lambda: models.mlp((1, 56, 28), 2, hidden=128),
    }
    print(f"{args.models} models, {args.epochs} epoch(s) on {len(y)} BlockMNIST images, "
          f"{torch.get_num_threads()} threads\n")
    print(f"{'model':22} {'one at a time':>15} {'ensemble':>12} {'speed-up':>9}   (models per minute)")
    for name, build in builders.items():
        start = time.perf_counter()
        for m, seed in enumerate(seeds):
            torch.manual_seed(seed)
            train.fit(build(), TensorDataset(torch.where(keep[m], x, 0.0), y), epochs=args.epochs, seed=seed,
                      progress=False)
        sequential = args.models / (time.perf_counter() - start) * 60
        start = time.perf_counter()
        train.fit_ensemble(build, x, y, keep, 0.0, seeds, epochs=args.epochs)
        together = args.models / (time.perf_counter() - start) * 60
        print(f"{name:22} {sequential:15.1f} {together:12.1f} {together / sequential:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
