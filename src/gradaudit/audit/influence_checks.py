"""Does an influence score predict what retraining does? Three checks of training-data attribution.

Scores follow ``gradaudit.influence``: score(q, m) = grad L(q)^T (G + lambda)^-1 grad L(z_m), positive when
z_m helps the query, not divided by N; score / N predicts how much the query's loss rises when z_m is
removed from the mean training loss.

- ``loo_correlation`` (Koh & Liang 2017): multinomial logistic regression (convex) trained to convergence
  with L-BFGS on the mean cross-entropy plus (l2 / 2) |theta|^2, so ``exact`` with ``damping=l2`` is its
  Hessian; each of ``removals`` training examples is left out in turn (its term dropped from the mean, the
  others' weights 1 / N kept: Koh & Liang's upweighting by -1 / N) and the model retrained from the optimum;
  per query, Pearson and Spearman between score / N and the actual change of the query's loss.
- ``lds`` (Park et al. 2023, the linear datamodeling score): fresh models retrained on random alpha-subsets
  S_j (units on an executor, local or Ray); per query, Spearman over subsets between the predicted rise of
  its loss, sum over the examples left out of S_j of score / N, and the retrained models' loss.
- ``mislabel_detection``: a share of labels flipped (seeded), a model trained on them, training examples
  ranked by self-influence: the share of flipped examples found in the top 10% / 20% against the random rate.
Controls in every check: ``random`` (seeded standard-normal scores) and the ``identity`` strategy (plain
gradient dot products), the baseline the curvature strategies must beat (``verdicts`` says whether they do).
Each row holds its mean with a 95% interval and the per-unit values ``<column>_each`` (queries, or flipped
examples) for paired comparisons.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch import Tensor, nn

from .. import influence, train
from ..data.inputs import as_examples
from ..keys import fingerprint
from ..store import Store
from ..train import Recipe
from ..units import LocalExecutor, Unit
from .common import call_arguments, memo, pearson, spearman, stored
from .results import AuditResult
from .stats import LEVEL, Interval, mean_interval

RANDOM = "random"
CONTROLS = (RANDOM, "identity")


# ---- shared pieces ----

def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_share(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a share in (0, 1), got {value!r}")
    return float(value)


def _names(strategies) -> dict:
    """{name: strategy name or precomputed scores}, controls added: a name, a list of names, or a mapping."""
    if isinstance(strategies, str):
        strategies = (strategies,)
    named = dict(strategies) if isinstance(strategies, Mapping) else {s: s for s in strategies}
    for name, value in named.items():
        if not isinstance(value, (str, Tensor)):
            raise ValueError(f"strategies[{name!r}] must be a strategy name ({', '.join(influence.STRATEGIES)}) or "
                             f"precomputed scores [queries, train examples]; got {type(value).__name__}")
        if isinstance(value, str) and value != RANDOM and value not in influence.STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose from {', '.join(influence.STRATEGIES)} or {RANDOM}")
    return {**named, **{c: c for c in CONTROLS if c not in named}}


def random_scores(queries: int, train: int, seed: int) -> Tensor:
    """The control: standard-normal scores [queries, train] from ``seed``."""
    return torch.randn(queries, train, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _scores(value, model: nn.Module, train_set, queries, damping, fisher: str, seed: int) -> Tensor:
    """Scores [Q, N] of one entry of ``_names``: precomputed, random, or fitted with that strategy."""
    train_set, queries = as_examples(train_set, "train"), as_examples(queries, "queries")
    q, n = len(queries), len(train_set)
    if isinstance(value, Tensor):
        if tuple(value.shape) != (q, n):
            raise ValueError(f"precomputed scores must have shape [queries, train examples] = [{q}, {n}]; "
                             f"got {list(value.shape)}")
        return value.detach().double().cpu()
    if value == RANDOM:
        return random_scores(q, n, seed)
    fitted = influence.fit(model, train_set, strategy=value, damping=None if value == "identity" else damping,
                           fisher=fisher, seed=seed)
    return fitted.scores(queries, train_set).detach().double().cpu()


def _self_scores(value: str, model: nn.Module, train_set, damping, fisher: str, seed: int) -> Tensor:
    train_set = as_examples(train_set, "train")
    if value == RANDOM:
        return random_scores(1, len(train_set), seed)[0]
    fitted = influence.fit(model, train_set, strategy=value, damping=None if value == "identity" else damping,
                           fisher=fisher, seed=seed)
    return fitted.self_scores(train_set).detach().double().cpu()


@torch.no_grad()
def query_losses(model: nn.Module, queries) -> Tensor:
    """Cross-entropy [Q] of ``model`` at each query's label (float64)."""
    found = as_examples(queries, "queries")
    return F.cross_entropy(model(found.x), found.y, reduction="none").double()


def binomial_interval(found: int, n: int, level: float = LEVEL) -> Interval:
    """found / n with its Clopper-Pearson (exact binomial) interval."""
    tail = (1 - level) / 2
    low = 0.0 if found == 0 else float(scipy_stats.beta.ppf(tail, found, n - found + 1))
    high = 1.0 if found == n else float(scipy_stats.beta.ppf(1 - tail, found + 1, n - found))
    return Interval(found / n, low, high, n, level)


def _correlations(predicted: Tensor, actual: Tensor) -> dict:
    """Per query (rows of [Q, K] tensors): Pearson, Spearman and the least-squares slope of actual on predicted
    (through the origin; 1 where score / N has the right scale), means with their intervals over queries."""
    r, rho = pearson(predicted, actual), spearman(predicted, actual)
    denominator = (predicted * predicted).sum(1)
    slope = torch.where(denominator > 0, (predicted * actual).sum(1) / denominator.clamp(min=1e-300),
                        torch.zeros_like(denominator))
    return {**mean_interval(r).as_row("pearson"), "pearson_each": r.tolist(),
            **mean_interval(rho).as_row("spearman"), "spearman_each": rho.tolist(),
            **mean_interval(slope).as_row("slope"), "slope_each": slope.tolist(), "queries": len(r)}


# ---- leave-one-out on a convex model ----

def logistic_regression(x: Tensor, y: Tensor, classes: int, l2: float, weights: Tensor | None = None,
                        start: Tensor | None = None, tolerance: float = 1e-9) -> tuple[Tensor, float]:
    """theta [classes, d + 1] (bias last) minimising (1/N) sum_n w_n CE_n + (l2/2) |theta|^2 with L-BFGS, in
    float64, from ``start`` (zeros); x [N, d], weights [N] (ones). Returns theta and the final gradient norm."""
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    w = torch.ones(len(x), dtype=torch.float64) if weights is None else weights.double()
    theta = (torch.zeros(classes, x.shape[1], dtype=torch.float64) if start is None
             else start.detach().clone()).requires_grad_(True)
    optimiser = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=tolerance, tolerance_change=1e-16,
                                  history_size=50, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        value = (w * F.cross_entropy(x @ theta.T, y, reduction="none")).sum() / len(x) + l2 / 2 * theta.square().sum()
        value.backward()
        return value

    previous = math.inf
    for _ in range(20):                     # L-BFGS restarts until the gradient is tiny or stops shrinking
        optimiser.step(objective)
        objective()
        current = float(theta.grad.abs().max())
        if current <= tolerance or current > previous / 2:
            break
        previous = current
    return theta.detach(), float(theta.grad.norm())


def _linear(theta: Tensor) -> nn.Module:
    """Flatten + Linear holding ``theta`` [classes, d + 1] (bias last), float64, in eval mode."""
    layer = nn.Linear(theta.shape[1] - 1, theta.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(theta[:, :-1])
        layer.bias.copy_(theta[:, -1])
    return nn.Sequential(nn.Flatten(), layer).eval()


def _theta_losses(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    return F.cross_entropy(x @ theta.T, y, reduction="none")


def loo_correlation(train_data, queries, strategies=("exact", "ekfac"), *, l2: float = 0.01, removals: int = 40,
                    fisher: str = "true", seed: int = 0, model_name: str = "logistic", store: Store | None = None
                    ) -> AuditResult:
    """Koh & Liang's check: leave-one-out retraining of a convex model against score / N.

    train_data, queries: (x, y) examples (any dataset ``train.fit`` accepts); inputs are flattened into features.
    strategies: influence strategies (names; the ``random`` and ``identity`` controls are added).
    l2: the L2 penalty (l2 / 2) |theta|^2 on the mean loss, and the damping of every strategy (so ``exact``
        is the Hessian of the objective, G + l2 I); identity has no damping.
    removals: training examples left out one at a time (a seeded random choice, the same for every strategy).
    Rows: one per strategy with ``pearson``, ``spearman`` and ``slope`` (least-squares slope of the actual
    change on score / N; 1 = the right scale), each a mean over queries with its interval and ``<column>_each``
    per query; ``max_gradient_norm`` says how far from converged the retrained models stopped.
    """
    call = call_arguments(locals(), units=("strategies",))
    retraining = {k: v for k, v in call.items() if k != "fisher"}
    if isinstance(l2, bool) or not isinstance(l2, numbers.Real) or not l2 > 0:
        raise ValueError(f"l2 must be a number > 0 (the penalty and the damping), got {l2!r}")
    found, asked = as_examples(train_data, "train"), as_examples(queries, "queries")
    removals = min(_check_int("removals", removals, 3), len(found))
    named = _names(strategies)
    x, y = found.x.flatten(1).double(), found.y
    xq = asked.x.flatten(1).double()
    if xq.shape[1] != x.shape[1]:
        raise ValueError(f"queries have {xq.shape[1]} features per example; the training examples {x.shape[1]}")
    classes = int(max(y.max(), asked.y.max())) + 1
    label = {"model": model_name, "l2": float(l2), "removals": removals, "seed": seed}

    def retrain() -> dict:
        theta, norm = logistic_regression(x, y, classes, l2)
        removed = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:removals].sort().values
        base = _theta_losses(theta, xq, asked.y)
        changes, norms = [], [norm]
        for m in removed.tolist():
            weights = torch.ones(len(x), dtype=torch.float64)
            weights[m] = 0
            left, left_norm = logistic_regression(x, y, classes, l2, weights, start=theta)
            changes.append((_theta_losses(left, xq, asked.y) - base).tolist())
            norms.append(left_norm)
        return {"theta": theta.tolist(), "removed": removed.tolist(), "changes": changes,
                "max_gradient_norm": max(norms)}

    fitted = None
    rows = []
    for name, value in named.items():
        def compute(value=value):
            nonlocal fitted
            fitted = fitted or memo(store, "loo_retraining", label, {"call": retraining}, retrain)
            theta = torch.tensor(fitted["theta"], dtype=torch.float64)
            model = _linear(theta)
            data, asked_d = (found.x.double(), y), (asked.x.double(), asked.y)
            scores = _scores(value, model, data, asked_d, float(l2), fisher, seed)
            removed = torch.tensor(fitted["removed"])
            predicted = scores[:, removed] / len(x)
            actual = torch.tensor(fitted["changes"], dtype=torch.float64).T
            return {**_correlations(predicted, actual), "max_gradient_norm": fitted["max_gradient_norm"],
                    "train_examples": len(x)}

        rows.append(memo(store, "loo_correlation", {**label, "method": name},
                         {"call": call, "method": fingerprint(value, name)}, compute))
    return AuditResult("loo_correlation", rows)


# ---- the linear datamodeling score ----

def subsets(n: int, alpha: float, count: int, seed: int) -> list[Tensor]:
    """``count`` random subsets of round(alpha n) of the indices 0..n-1 (sorted), subset j from seed + j."""
    size = max(1, round(alpha * n))
    return [torch.randperm(n, generator=torch.Generator().manual_seed(seed + j))[:size].sort().values
            for j in range(count)]


def _retrain_lds(model_fn, shared, chosen: list[tuple[int, Tensor]], recipe: Recipe, repeats: int,
                seed: int) -> dict[int, list[float]]:
    """One unit of work (any executor): {subset j: the query losses [Q], mean over ``repeats`` fresh models
    trained on that subset}; a model's seed depends on its subset and repeat alone, so a resumed run agrees."""
    (x, y), queries = shared
    out = {}
    for j, members in chosen:
        losses = 0.0
        for r in range(repeats):
            model_seed = seed + 100_003 * r + 7 * j + 1
            torch.manual_seed(model_seed)
            model = train.fit(model_fn(), (x[members], y[members]), recipe, seed=model_seed, progress=False)
            losses = losses + query_losses(model, queries)
        out[j] = (losses / repeats).tolist()
    return out


def lds(model: nn.Module, train_data, queries, strategies=("ekfac",), *, model_fn: Callable[[], nn.Module],
        subsets_count: int = 20, alpha: float = 0.5, repeats: int = 1, recipe: Recipe | None = None,
        damping: float | None = None, fisher: str = "true", seed: int = 0, model_name: str = "model",
        store: Store | None = None, executor=None, progress: bool = True, **settings) -> AuditResult:
    """The linear datamodeling score of each strategy's scores of ``model`` (trained on ``train_data``).

    strategies: names, or a mapping name -> strategy name or precomputed scores [Q, N] (e.g. from a saved
        fit); the ``random`` and ``identity`` controls are added.
    model_fn: builds the fresh model retrained on each subset with ``recipe`` / ``settings`` (``train.Recipe``).
    subsets_count: random alpha-subsets (at least 3); repeats: models per subset (their losses averaged).
    executor: where the retraining units run (``units.LocalExecutor`` by default, or ``jobs.executor``'s Ray);
        this process alone writes ``store``.
    Rows: one per strategy: ``lds`` (mean over queries of the Spearman correlation over subsets between
    sum_{m not in S_j} score / N and the loss of the models retrained on S_j) with its interval, ``lds_each``.
    """
    call = call_arguments(locals(), units=("strategies",))
    # A subset's retrained losses depend on neither the explained model, its scores' settings, nor the count.
    retraining = {k: v for k, v in call.items() if k not in ("model", "damping", "fisher", "subsets_count")}
    recipe = Recipe.of(recipe, **settings)
    subsets_count = _check_int("subsets_count", subsets_count, 3)
    repeats = _check_int("repeats", repeats, 1)
    alpha = _check_share("alpha", alpha)
    found, asked = as_examples(train_data, "train"), as_examples(queries, "queries")
    named = _names(strategies)
    label = {"model": model_name, "alpha": alpha, "subsets": subsets_count, "repeats": repeats, "seed": seed}
    arguments = {name: {"call": call, "method": fingerprint(value, name)} for name, value in named.items()}
    rows = {name: stored(store, "lds", {**label, "method": name}, arguments[name]) for name in named}
    if all(rows.values()):
        return AuditResult("lds", list(rows.values()))
    chosen = subsets(len(found), alpha, subsets_count, seed)
    losses: dict[int, list[float]] = {}
    for j in range(subsets_count):
        found_losses = stored(store, "lds_retraining", {**label, "subset": j}, {"call": retraining})
        if found_losses is not None:
            losses[j] = found_losses["losses"]
    todo = [(j, chosen[j]) for j in range(subsets_count) if j not in losses]
    if todo:
        executor = executor or LocalExecutor()
        shared = executor.share(((found.x, found.y), (asked.x, asked.y)), pins=(found.x, found.y, asked.x, asked.y))
        units = [Unit(f"LDS subset {j} ({model_name})", _retrain_lds, (model_fn, shared, [(j, members)], recipe,
                                                                         repeats, seed)) for j, members in todo]
        if progress:
            print(f"  LDS: retraining {len(todo) * repeats} models on {alpha:g}-subsets, one unit per subset "
                  f"({executor.name}, {executor.workers} workers)", flush=True)

        def write(unit: Unit, result: dict) -> None:
            for j, values in result.items():
                row = memo(store, "lds_retraining", {**label, "subset": j}, {"call": retraining},
                           lambda v=values: {"losses": v})
                losses[j] = row["losses"]

        executor.run(units, write)
    actual = torch.tensor([losses[j] for j in range(subsets_count)], dtype=torch.float64).T       # [Q, J]
    actual = actual - query_losses(model, asked)[:, None]
    outside = torch.ones(subsets_count, len(found), dtype=torch.float64)
    for j, members in enumerate(chosen):
        outside[j, members] = 0
    for name, value in named.items():
        def compute(value=value):
            scores = _scores(value, model, found, asked, damping, fisher, seed)
            predicted = scores @ outside.T / len(found)
            values = spearman(predicted, actual)
            return {**mean_interval(values).as_row("lds"), "lds_each": values.tolist(), "queries": len(values),
                    "train_examples": len(found)}

        rows[name] = memo(store, "lds", {**label, "method": name}, arguments[name], compute)
    return AuditResult("lds", list(rows.values()))


# ---- mislabel detection ----

def flip_labels(y: Tensor, fraction: float, classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """(labels with round(fraction N) of them changed to another class drawn at random, flipped indices)."""
    generator = torch.Generator().manual_seed(seed)
    flipped = torch.randperm(len(y), generator=generator)[:max(1, round(fraction * len(y)))].sort().values
    shift = torch.randint(1, classes, (len(flipped),), generator=generator)
    out = y.clone()
    out[flipped] = (y[flipped] + shift) % classes
    return out, flipped


def mislabel_detection(train_data, strategies=("ekfac",), *, model_fn: Callable[[], nn.Module],
                       fraction: float = 0.1, seeds=(0, 1), shares=(0.1, 0.2), recipe: Recipe | None = None,
                       damping: float | None = None, fisher: str = "true", model_name: str = "model",
                       store: Store | None = None, progress: bool = True, **settings) -> AuditResult:
    """Flip ``fraction`` of the labels, train ``model_fn`` on them, rank the examples by self-influence.

    strategies: influence strategies (names; the ``random`` and ``identity`` controls are added).
    seeds: one flip, model and fit per seed. shares: the top shares of the ranking searched for flips.
    Rows: one per (strategy, seed): ``found_10`` (for share 0.1: the share of flipped examples ranked in the
    top 10% by self-influence; the random rate is 0.1) with its Clopper-Pearson interval over the flipped
    examples, ``found_10_each`` (1 per flipped example found), ``random_rate_10``; ``flipped``; ``accuracy``
    (the model's accuracy on the labels it was trained on).
    """
    call = call_arguments(locals(), units=("strategies", "seeds"))
    recipe = Recipe.of(recipe, **settings)
    fraction = _check_share("fraction", fraction)
    shares = tuple(_check_share("shares", s) for s in shares)
    found = as_examples(train_data, "train")
    classes = int(found.y.max()) + 1
    named = _names(strategies)
    if any(isinstance(v, Tensor) for v in named.values()):
        raise ValueError("mislabel_detection retrains its own models: strategies must be names, not scores")
    rows = []
    for seed in seeds:
        label = {"model": model_name, "fraction": fraction, "seed": seed}
        trained = None
        for name, value in named.items():
            def compute(value=value, seed=seed):
                nonlocal trained
                if trained is None:
                    noisy, flipped = flip_labels(found.y, fraction, classes, seed)
                    if progress:
                        print(f"  mislabel detection: {len(flipped)} labels flipped (seed {seed}), training",
                              flush=True)
                    torch.manual_seed(seed)
                    net = train.fit(model_fn(), (found.x, noisy), recipe, seed=seed, progress=False)
                    trained = (net, noisy, flipped, train.accuracy(net, (found.x, noisy)))
                net, noisy, flipped, accuracy = trained
                ranks = _self_scores(value, net, (found.x, noisy), damping, fisher, seed).argsort(descending=True)
                row = {"flipped": len(flipped), "accuracy": accuracy, "train_examples": len(found)}
                for share in shares:
                    top = ranks[:max(1, round(share * len(found)))]
                    hit = torch.isin(flipped, top).double()
                    column = f"found_{round(100 * share)}"
                    row |= {**binomial_interval(int(hit.sum()), len(hit)).as_row(column),
                            f"{column}_each": hit.tolist(), f"random_rate_{round(100 * share)}": len(top) / len(found)}
                return row

            rows.append(memo(store, "mislabel_detection", {**label, "method": name},
                             {"call": call, "method": fingerprint(value, name)}, compute))
    return AuditResult("mislabel_detection", rows)


# ---- verdicts ----

def _paired(rows: list[dict], column: str, method: str, against: str) -> Interval | None:
    """mean(method - against) over the paired units of ``column``_each (same model, same settings)."""
    def each(name):
        found = [r for r in rows if r.get("method") == name and r.get(f"{column}_each")]
        return [v for r in sorted(found, key=lambda r: str(r.get("seed"))) for v in r[f"{column}_each"]]

    a, b = each(method), each(against)
    if not a or len(a) != len(b):
        return None
    return mean_interval([x - y for x, y in zip(a, b, strict=True)])


def _word(interval: Interval) -> str:
    if interval.low > 0:
        return "beats"
    if interval.high < 0:
        return "is below"
    return "is not distinguishable from"


def verdicts(results: Mapping[str, list[dict]]) -> list[str]:
    """Sentences on the influence checks in a run's results: each strategy against ``identity`` and ``random``,
    paired over queries (LOO, LDS) or flipped examples (mislabel detection), with 95% intervals."""
    checks = (("loo_correlation", "pearson", "leave-one-out Pearson r"), ("lds", "lds", "LDS"),
              ("mislabel_detection", "found_10", "share of flips in the top 10% of self-influence"))
    lines = []
    for audit, column, label in checks:
        rows = list(results.get(audit, []))
        for model in dict.fromkeys(r.get("model") for r in rows):
            mine = [r for r in rows if r.get("model") == model]
            methods = list(dict.fromkeys(r["method"] for r in mine))
            for method in (m for m in methods if m not in CONTROLS):
                for control in (c for c in ("identity", RANDOM) if c in methods):
                    difference = _paired(mine, column, method, control)
                    if difference is None or not math.isfinite(difference.low):
                        continue
                    lines.append(f"{model}: {method} {_word(difference)} {control} on the {label} "
                                 f"(difference {difference.text(signed=True)}, n = {difference.n}).")
    return lines
