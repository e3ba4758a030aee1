"""ROAD's noisy linear imputation: gradaudit's batched conjugate gradients vs a sparse direct
solve image by image (the reference implementation's approach, tleemann/road_evaluation).

Prints one table: seconds (fastest of 5 runs for ours, 3 for the vectorised direct solve, 1 for
the per-pixel one) for N masks of H x W at a removed share, the speed-up over the vectorised
direct solve, and the largest difference from it (noise off). The reference builds each image's sparse
system with vectorised index arithmetic (faster than the reference code's per-pixel loop) and
solves it with scipy's ``spsolve``.

    python benchmarks/bench_road.py                     # 1,000 masks of 28x28, 50% removed
    python benchmarks/bench_road.py --images 200 --size 56,28 --removed 0.9
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.sparse import coo_matrix, lil_matrix
from scipy.sparse.linalg import spsolve

from gradaudit.audit.imputation import NEIGHBOURS, noisy_linear_impute


def direct_solve(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """One image's imputation by a sparse direct solve over its removed pixels."""
    height, width = image.shape
    index = -np.ones(image.shape, dtype=np.int64)
    rows, cols = np.nonzero(removed)
    index[rows, cols] = np.arange(len(rows))
    diagonal, rhs = np.zeros(len(rows)), np.zeros(len(rows))
    entries_i, entries_j, entries_v = [], [], []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            weight = NEIGHBOURS[di + 1][dj + 1]
            if weight == 0:
                continue
            ni, nj = rows + di, cols + dj
            inside = (ni >= 0) & (ni < height) & (nj >= 0) & (nj < width)
            diagonal[inside] += weight
            neighbour = np.where(inside, index[ni.clip(0, height - 1), nj.clip(0, width - 1)], -1)
            unknown = inside & (neighbour >= 0)
            entries_i.append(np.nonzero(unknown)[0])
            entries_j.append(neighbour[unknown])
            entries_v.append(np.full(unknown.sum(), -weight))
            known = inside & (neighbour < 0)
            rhs[known] += weight * image[ni[known], nj[known]]
    n = len(rows)
    matrix = coo_matrix((np.concatenate([diagonal, *entries_v]),
                         (np.concatenate([np.arange(n), *entries_i]), np.concatenate([np.arange(n), *entries_j]))),
                        shape=(n, n)).tocsc()
    out = image.copy()
    out[rows, cols] = spsolve(matrix, rhs)
    return out


def loop_solve(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same system built pixel by pixel into a ``lil_matrix``, as the reference code builds it."""
    height, width = image.shape
    where = np.argwhere(removed)
    index = -np.ones(image.shape, dtype=int)
    index[removed] = np.arange(len(where))
    matrix, rhs = lil_matrix((len(where), len(where))), np.zeros(len(where))
    for n, (i, j) in enumerate(where):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                weight, ii, jj = NEIGHBOURS[di + 1][dj + 1], i + di, j + dj
                if weight == 0 or not (0 <= ii < height and 0 <= jj < width):
                    continue
                matrix[n, n] += weight
                if removed[ii, jj]:
                    matrix[n, index[ii, jj]] -= weight
                else:
                    rhs[n] += weight * image[ii, jj]
    out = image.copy()
    out[removed] = spsolve(matrix.tocsc(), rhs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", default="28,28", help="H,W")
    parser.add_argument("--removed", type=float, default=0.5, help="share of pixels removed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split(","))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 1, height, width, generator=generator)
    removed = torch.rand(args.images, height, width, generator=generator) < args.removed
    noisy_linear_impute(x[:8], removed[:8], noise=0.0)                       # warm-up
    def fastest(call, repeats):
        """(fastest wall time of ``repeats`` calls, the last result): this machine's speed drifts."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = call()
            times.append(time.perf_counter() - start)
        return min(times), result

    timings, results = {}, {}
    for dtype in (torch.float32, torch.float64):
        timings[dtype], results[dtype] = fastest(lambda dtype=dtype: noisy_linear_impute(x.to(dtype), removed,
                                                                                          noise=0.0), 5)
    references = {}
    for label, solve, repeats in (("spsolve per image, vectorised build", direct_solve, 3),
                                  ("spsolve per image, per-pixel build (as ROAD)", loop_solve, 1)):
        references[label] = fastest(lambda solve=solve: np.stack(
            [solve(x[i, 0].double().numpy(), removed[i].numpy()) for i in range(args.images)]), repeats)
    direct, reference = references["spsolve per image, vectorised build"]
    print(f"{args.images} masks of {height}x{width}, {args.removed:.0%} removed, {args.threads} threads")
    print(f"{'way':46} {'seconds':>8} {'speed-up vs vectorised spsolve':>31} {'max |diff|':>11}")
    for label, (seconds, _) in references.items():
        print(f"{label:46} {seconds:8.2f} {direct / seconds:30.1f}x {'-':>11}")
    for dtype, seconds in timings.items():
        error = np.abs(results[dtype][:, 0].double().numpy() - reference).max()
        label = f"gradaudit batched CG ({str(dtype).replace('torch.', '')})"
        print(f"{label:46} {seconds:8.2f} {direct / seconds:30.1f}x {error:11.1e}")


if __name__ == "__main__":
    main()
