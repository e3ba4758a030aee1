"""Brittleness (Ilyas et al. 2022, datamodels; dattri's metric): how few of its top proponents must leave the
training set for a correct prediction to flip. Smaller = the attribution found the examples that matter.

For each query the model classifies correctly and each strategy, the k training examples with the highest
scores (k on a grid, ascending) are removed, ``retrain_seeds`` fresh models are trained on the rest
(``train.fit_ensemble``), and the prediction is their mean softmax's argmax; the smallest k that moves it off the
label is the query's brittleness. The controls: ``random`` (k random examples, a seeded standard-normal score)
and ``identity`` (the gradient dot product's top k). Retrained models use the same seeds for every strategy
(common random numbers: paired differences carry less noise), and a removal set is stored by its content.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..data.inputs import as_examples
from ..keys import fingerprint
from ..store import Store
from ..train import Recipe
from ..units import LocalExecutor, Unit
from .common import call_arguments, memo, stored
from .influence_checks import attribution_scores, binomial_interval, check_int, retrained_outputs, strategy_names
from .results import AuditResult
from .stats import mean_interval


def _grid(ks, n: int) -> tuple[int, ...]:
    """The grid of removal counts: integers in [1, n), ascending, each once."""
    if isinstance(ks, numbers.Integral):
        ks = (ks,)
    found = sorted({check_int("ks", k, 1) for k in ks})
    if not found or found[-1] >= n:
        raise ValueError(f"ks must be removal counts between 1 and {n - 1} (the training examples less one); "
                         f"got {list(ks)}")
    return tuple(found)


@torch.no_grad()
def _predicted(model, x):
    """Predicted classes [Q] of ``model``, or of an ensemble's mean softmax (a list of models)."""
    members = model if isinstance(model, (list, tuple)) else [model]
    return torch.stack([m(x).double().softmax(1) for m in members]).mean(0).argmax(1)


def _flip_scan(model_fn, shared, query: int, order: list[int], ks: tuple[int, ...], seeds: list[int],
               recipe: Recipe) -> dict:
    """One unit: remove order[:k] for each k in turn, retrain, stop at the first k whose prediction of query
    ``query`` leaves its label. {"smallest_k": k or None, "margins": the mean margin after each k tried}."""
    (x, y), (xq, yq) = shared
    keep = torch.ones(len(y), dtype=torch.bool)
    one = (xq[query:query + 1], yq[query:query + 1])
    tried = []
    for k in ks:
        keep[:] = True
        keep[torch.tensor(order[:k], dtype=torch.long)] = False
        margin, probabilities = retrained_outputs(model_fn, x[keep], y[keep], one, seeds, recipe)
        tried.append(float(margin[0]))
        if int(probabilities[0].argmax()) != int(one[1][0]):
            return {"smallest_k": k, "margins": tried}
    return {"smallest_k": None, "margins": tried}


def brittleness(model, train_data, queries, strategies=("ekfac",), *, model_fn: Callable[[], nn.Module],
                ks=(10, 20, 40, 80, 160), retrain_seeds: int = 1, recipe: Recipe | None = None,
                damping: float | None = None, fisher: str = "true", fit_options: Mapping | None = None,
                seed: int = 0, model_name: str = "model", store: Store | None = None, executor=None,
                progress: bool = True, **settings) -> AuditResult:
    """The smallest number of top proponents whose removal (and retraining) flips each correct prediction.

    model: the trained model (or a list: an ensemble) whose scores are checked and whose correct queries count.
    strategies: names, or a mapping name -> strategy name or precomputed scores [Q, N] for all ``queries``;
        the ``random`` and ``identity`` controls are added.
    model_fn, recipe / settings: the fresh models retrained without the removed examples (``train.Recipe``).
    ks: the grid of removal counts. retrain_seeds: models per removal, their softmax averaged.
    Rows: one per strategy: ``flipped`` (share of the correct queries flipped within the grid, Clopper-Pearson
    interval) and ``flipped_each``; ``smallest_k`` (mean over queries, t interval) with ``smallest_k_each``,
    where a query not flipped within the grid counts as twice the largest k (so the mean is a lower bound for
    such queries; smaller = better); ``queries`` (the correct ones) and ``asked``.
    """
    call = call_arguments(locals(), units=("strategies",))
    # What a retraining is depends on the data, the removed examples (keyed by content) and the recipe only.
    retraining = {k: v for k, v in call.items() if k in ("train_data", "queries", "model_fn", "retrain_seeds",
                                                             "recipe", "settings", "seed", "ks")}
    recipe = Recipe.of(recipe, **settings)
    found, asked = as_examples(train_data, "train"), as_examples(queries, "queries")
    ks = _grid(ks, len(found))
    retrain_seeds = check_int("retrain_seeds", retrain_seeds, 1)
    named = strategy_names(strategies)
    correct = (_predicted(model, asked.x) == asked.y).nonzero()[:, 0]
    if len(correct) == 0:
        raise ValueError("brittleness needs queries the model classifies correctly; it gets none of "
                         f"the {len(asked)} right")
    label = {"model": model_name, "ks": list(ks), "retrain_seeds": retrain_seeds, "seed": seed}
    seeds = [seed + 100_003 * r + 1 for r in range(retrain_seeds)]
    executor = executor or LocalExecutor()
    shared = None
    rows = []
    for name, value in named.items():
        def compute(value=value, name=name):
            nonlocal shared
            scores = attribution_scores(value, model, found, asked, damping, fisher, seed, fit_options)[correct]
            orders = scores.argsort(dim=1, descending=True, stable=True)[:, :ks[-1]].tolist()
            results: dict[int, dict] = {}
            units, places = [], {}
            for i, q in enumerate(correct.tolist()):
                unit_label = {"model": model_name, "query": q, "ks": list(ks), "retrain_seeds": retrain_seeds}
                unit_arguments = {"call": retraining, "removed": orders[i]}
                found_row = stored(store, "brittleness_retraining", unit_label, unit_arguments)
                if found_row is not None:
                    results[i] = found_row
                    continue
                if shared is None:
                    shared = executor.share(((found.x, found.y), (asked.x, asked.y)),
                                            pins=(found.x, found.y, asked.x, asked.y))
                units.append(Unit(f"brittleness {name} query {q} ({model_name})", _flip_scan,
                                  (model_fn, shared, q, orders[i], ks, seeds, recipe)))
                places[units[-1].name] = (i, unit_label, unit_arguments)
            if units and progress:
                print(f"  brittleness ({name}): {len(units)} queries, up to {len(ks) * retrain_seeds} retrainings "
                      f"each ({executor.name}, {executor.workers} workers)", flush=True)

            def write(unit: Unit, result: dict) -> None:
                i, unit_label, unit_arguments = places[unit.name]
                results[i] = memo(store, "brittleness_retraining", unit_label, unit_arguments, lambda: result)

            executor.run(units, write)
            smallest = [results[i]["smallest_k"] for i in range(len(correct))]
            flipped = [0.0 if k is None else 1.0 for k in smallest]
            censored = [float(2 * ks[-1] if k is None else k) for k in smallest]
            return {**binomial_interval(int(sum(flipped)), len(flipped)).as_row("flipped"), "flipped_each": flipped,
                    **mean_interval(censored).as_row("smallest_k"), "smallest_k_each": censored,
                    "queries": len(correct), "asked": len(asked), "train_examples": len(found)}

        rows.append(memo(store, "brittleness", {**label, "method": name},
                         {"call": call, "method": fingerprint(value, name)}, compute))
    return AuditResult("brittleness", rows)
