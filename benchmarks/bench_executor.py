"""Models per minute of a DiffROAR sweep: the local executor vs Ray with 2 workers on this machine,
and Ray's overhead per task (an empty task's round trip). Same cells, same seeds in both runs.

    python benchmarks/bench_executor.py [--methods 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from gradaudit import data, methods, models
from gradaudit.audit import diffroar
from gradaudit.jobs.executor import RayExecutor
from gradaudit.units import LocalExecutor, Unit


def _sweep(executor, n_methods: int, repeats: int, epochs: int, fractions=(0.05, 0.1, 0.2)) -> tuple[float, int]:
    train, test = data.blockmnist("train", digits=(0, 1), copies=1), data.blockmnist("test", digits=(0, 1), copies=1)
    torch.manual_seed(0)
    net = models.small_cnn(in_shape=(1, 56, 28), classes=2, width=8).eval()
    chosen = [methods.Saliency(), methods.InputXGradient(), methods.Random(seed=0), methods.SmoothGrad(
        methods.Saliency(), samples=4)][:n_methods]

    def mlp():
        return models.mlp(in_shape=(1, 56, 28), classes=2, hidden=64)

    start = time.perf_counter()
    diffroar(chosen, net, train, test, model_fn=mlp, fractions=fractions, repeats=repeats, epochs=epochs, fill=0.0,
             executor=executor, progress=False)
    return time.perf_counter() - start, len(chosen) * len(fractions) * repeats * 2


def _noop(x):
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    seconds, trained = _sweep(LocalExecutor(), args.methods, args.repeats, args.epochs)
    rows.append(("local (this process, all cores)", seconds, trained))
    start = time.perf_counter()
    ray_executor = RayExecutor(num_cpus=2)
    startup = time.perf_counter() - start
    try:
        seconds, trained = _sweep(ray_executor, args.methods, args.repeats, args.epochs)
        rows.append((f"ray, {ray_executor.workers} workers x 1 CPU", seconds, trained))
        ray_executor.run([Unit("warm", _noop, (0,))], lambda u, r: None)
        start = time.perf_counter()
        count = 50
        ray_executor.run([Unit(str(i), _noop, (i,)) for i in range(count)], lambda u, r: None)
        per_task = (time.perf_counter() - start) / count
    finally:
        ray_executor.close()
    print(f"DiffROAR sweep: {args.methods} methods x 3 levels x {args.repeats} repeats x top/bottom, MLP retrained "
          f"{args.epochs} epochs on {len(data.blockmnist('train', digits=(0, 1), copies=1))} BlockMNIST images; "
          f"torch threads in this process: {torch.get_num_threads()}")
    print(f"{'executor':34} {'seconds':>8} {'models':>7} {'models/min':>11}")
    for name, seconds, trained in rows:
        print(f"{name:34} {seconds:8.1f} {trained:7d} {60 * trained / seconds:11.1f}")
    print(f"ray start-up (local instance): {startup:.1f} s; overhead per task (empty task, {count} in flight): "
          f"{1000 * per_task:.1f} ms")


if __name__ == "__main__":
    main()
