"""Does an influence score predict what retraining does? Three checks of training-data attribution.

Scores follow ``gradaudit.influence``: score(q, m) = grad L(q)^T (G + lambda)^-1 grad L(z_m), positive when
z_m helps the query, not divided by N; score / N predicts how much the query's loss rises when z_m is
removed from the mean training loss.

- ``loo_correlation`` (Koh & Liang 2017): multinomial logistic regression (convex) trained to convergence
  with L-BFGS on the mean cross-entropy plus (l2 / 2) |theta|^2, so ``exact`` with ``damping=l2`` is its
  Hessian; each of ``removals`` training examples is left out in turn (its term dropped from the mean, the
  others' weights 1 / N kept: Koh & Liang's upweighting by -1 / N) and the model retrained from the optimum;
  per query, Pearson and Spearman between score / N and the actual change of the query's loss.
- ``lds`` (Park et al. 2023, the linear datamodeling score, as TRAK and dattri run it): fresh models retrained
  on random alpha-subsets S_j, ``lds_seeds`` per subset (units on an executor, local or Ray); per query,
  Spearman over subsets between the datamodel sum_{m in S_j} score and the query's margin log(p / (1 - p))
  averaged over the subset's models.
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

def check_int(name: str, value, low: int) -> int:
    """``value`` as an int when it is an integer >= ``low``; otherwise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_share(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a share in (0, 1), got {value!r}")
    return float(value)


def strategy_names(strategies) -> dict:
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


def _fitted(value: str, model, train_set, damping, fisher: str, seed: int, fit_options: Mapping | None):
    """``influence.fit`` with strategy ``value`` (identity undamped); ``fit_options`` (TRAK's ``projection``)
    reach ``trak`` alone, which takes no ``fisher`` (its margin gradients sample no labels)."""
    options = {"damping": None if value == "identity" else damping, "seed": seed}
    options |= dict(fit_options or {}) if value == "trak" else {"fisher": fisher}
    return influence.fit(model, train_set, strategy=value, **options)


def attribution_scores(value, model, train_set, queries, damping, fisher: str, seed: int,
                       fit_options: Mapping | None = None) -> Tensor:
    """Scores [Q, N] of one entry of ``strategy_names``: precomputed, random, or fitted with that strategy on
    ``model`` (or a list of models: an ensemble)."""
    train_set, queries = as_examples(train_set, "train"), as_examples(queries, "queries")
    q, n = len(queries), len(train_set)
    if isinstance(value, Tensor):
        if tuple(value.shape) != (q, n):
            raise ValueError(f"precomputed scores must have shape [queries, train examples] = [{q}, {n}]; "
                             f"got {list(value.shape)}")
        return value.detach().double().cpu()
    if value == RANDOM:
        return random_scores(q, n, seed)
    fitted = _fitted(value, model, train_set, damping, fisher, seed, fit_options)
    return fitted.scores(queries, train_set).detach().double().cpu()


def _self_scores(value: str, model: nn.Module, train_set, damping, fisher: str, seed: int) -> Tensor:
    train_set = as_examples(train_set, "train")
    if value == RANDOM:
        return random_scores(1, len(train_set), seed)[0]
    return _fitted(value, model, train_set, damping, fisher, seed, None).self_scores(train_set).detach().double().cpu()


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
    removals = min(check_int("removals", removals, 3), len(found))
    named = strategy_names(strategies)
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
            scores = attribution_scores(value, model, data, asked_d, float(l2), fisher, seed)
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


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """TRAK's output function of a classifier, the margin log(p_y / (1 - p_y)) = z_y - logsumexp_{k != y} z_k
    [B] of logits [B, C] at labels y [B] (float64)."""
    z = logits.double()
    others = z.scatter(1, y[:, None], -math.inf)
    return z.gather(1, y[:, None])[:, 0] - torch.logsumexp(others, 1)


@torch.no_grad()
def retrained_outputs(model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor, queries: tuple[Tensor, Tensor],
                      seeds: list[int], recipe: Recipe) -> tuple[Tensor, Tensor]:
    """Train one fresh ``model_fn`` per seed on (x, y) together (``train.fit_ensemble``: equal to training each
    alone) and answer for the queries (xq, yq): (the margins [Q] and the softmax probabilities [Q, C], each the
    mean over the seeds)."""
    with torch.enable_grad():
        trained = train.fit_ensemble(model_fn, x, y, None, 0.0, seeds, recipe, progress=False)
    xq, yq = queries
    logits = [model(xq).double() for model in trained]
    return (torch.stack([margins(z, yq) for z in logits]).mean(0),
            torch.stack([z.softmax(1) for z in logits]).mean(0))


def _retrain_lds(model_fn, shared, chosen: list[tuple[int, Tensor]], recipe: Recipe, lds_seeds: int,
                 seed: int) -> dict[int, list[float]]:
    """One unit of work (any executor): {subset j: the query margins [Q], mean over ``lds_seeds`` fresh models
    trained on that subset}; a model's seed depends on its subset and seed index alone, so a resumed run agrees."""
    (x, y), queries = shared
    return {j: retrained_outputs(model_fn, x[members], y[members], queries,
                                 [seed + 100_003 * r + 7 * j + 1 for r in range(lds_seeds)], recipe)[0].tolist()
            for j, members in chosen}


def lds(model, train_data, queries, strategies=("ekfac",), *, model_fn: Callable[[], nn.Module],
        subsets_count: int = 20, alpha: float = 0.5, lds_seeds: int = 1, recipe: Recipe | None = None,
        damping: float | None = None, fisher: str = "true", fit_options: Mapping | None = None, seed: int = 0,
        model_name: str = "model", store: Store | None = None, executor=None, progress: bool = True,
        **settings) -> AuditResult:
    """The linear datamodeling score as TRAK (Park et al. 2023) and dattri run it, of each strategy's scores.

    model: the trained model (on ``train_data``) whose scores are checked, or a list of them (an ensemble,
        as ``influence.fit`` takes it).
    strategies: names, or a mapping name -> strategy name or precomputed scores [Q, N] (e.g. from a saved
        fit, or TracIn's); the ``random`` and ``identity`` controls are added.
    model_fn: builds the fresh model retrained on each subset with ``recipe`` / ``settings`` (``train.Recipe``).
    subsets_count: random alpha-subsets S_j (at least 3). lds_seeds: models trained per subset with different
        seeds, their query margins averaged (TRAK's protocol; dattri's benchmark).
    fit_options: further keyword arguments of ``influence.fit`` for ``trak`` (its ``projection``).
    executor: where the retraining units run (``units.LocalExecutor`` by default, or ``jobs.executor``'s Ray);
        this process alone writes ``store``.
    Rows: one per strategy: ``lds`` (the mean over queries of the Spearman correlation over subsets between
    the datamodel's prediction sum_{m in S_j} score[q, m] and the margin log(p / (1 - p)) of the query's label
    under the models retrained on S_j) with its interval, ``lds_each`` per query (``paired`` compares two).
    """
    call = call_arguments(locals(), units=("strategies",))
    # A subset's retrained margins depend on neither the explained model, its scores' settings, nor the count.
    retraining = {k: v for k, v in call.items()
                  if k not in ("model", "damping", "fisher", "fit_options", "subsets_count")}
    recipe = Recipe.of(recipe, **settings)
    subsets_count = check_int("subsets_count", subsets_count, 3)
    lds_seeds = check_int("lds_seeds", lds_seeds, 1)
    alpha = _check_share("alpha", alpha)
    found, asked = as_examples(train_data, "train"), as_examples(queries, "queries")
    named = strategy_names(strategies)
    label = {"model": model_name, "output": "margin", "alpha": alpha, "subsets": subsets_count,
             "lds_seeds": lds_seeds, "seed": seed}
    arguments = {name: {"call": call, "method": fingerprint(value, name)} for name, value in named.items()}
    rows = {name: stored(store, "lds", {**label, "method": name}, arguments[name]) for name in named}
    if all(rows.values()):
        return AuditResult("lds", list(rows.values()))
    chosen = subsets(len(found), alpha, subsets_count, seed)
    outputs: dict[int, list[float]] = {}
    for j in range(subsets_count):
        found_outputs = stored(store, "lds_retraining", {**label, "subset": j}, {"call": retraining})
        if found_outputs is not None:
            outputs[j] = found_outputs["margins"]
    todo = [(j, chosen[j]) for j in range(subsets_count) if j not in outputs]
    if todo:
        executor = executor or LocalExecutor()
        shared = executor.share(((found.x, found.y), (asked.x, asked.y)), pins=(found.x, found.y, asked.x, asked.y))
        units = [Unit(f"LDS subset {j} ({model_name})", _retrain_lds, (model_fn, shared, [(j, members)], recipe,
                                                                         lds_seeds, seed)) for j, members in todo]
        if progress:
            print(f"  LDS: retraining {len(todo) * lds_seeds} models on {alpha:g}-subsets, one unit per subset "
                  f"({executor.name}, {executor.workers} workers)", flush=True)

        def write(unit: Unit, result: dict) -> None:
            for j, values in result.items():
                row = memo(store, "lds_retraining", {**label, "subset": j}, {"call": retraining},
                           lambda v=values: {"margins": v})
                outputs[j] = row["margins"]

        executor.run(units, write)
    actual = torch.tensor([outputs[j] for j in range(subsets_count)], dtype=torch.float64).T      # [Q, J]
    inside = torch.zeros(subsets_count, len(found), dtype=torch.float64)
    for j, members in enumerate(chosen):
        inside[j, members] = 1
    for name, value in named.items():
        def compute(value=value):
            scores = attribution_scores(value, model, found, asked, damping, fisher, seed, fit_options)
            values = spearman(scores @ inside.T, actual)
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
    named = strategy_names(strategies)
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

def paired(rows, column: str, method: str, against: str = "identity") -> Interval | None:
    """mean(method - against) with its 95% interval over the paired units of ``<column>_each`` (queries, flipped
    examples; same model, same settings), e.g. ``paired(lds(...).rows, "lds", "trak")``: is TRAK above the
    gradient dot product? None when the two rows do not pair up."""
    def each(name):
        found = [r for r in rows if r.get("method") == name and r.get(f"{column}_each")]
        return [v for r in sorted(found, key=lambda r: str(r.get("seed"))) for v in r[f"{column}_each"]]

    a, b = each(method), each(against)
    if not a or len(a) != len(b):
        return None
    return mean_interval([x - y for x, y in zip(a, b, strict=True)])


def _word(interval: Interval, lower_is_better: bool = False) -> str:
    if interval.low > 0:
        return "is below" if lower_is_better else "beats"
    if interval.high < 0:
        return "beats" if lower_is_better else "is below"
    return "is not distinguishable from"


def verdicts(results: Mapping[str, list[dict]]) -> list[str]:
    """Sentences on the influence checks in a run's results: each strategy against ``identity`` and ``random``,
    paired over queries (LOO, LDS, brittleness) or flipped examples (mislabel detection), with 95% intervals.
    Brittleness: fewer removals to flip a prediction is better."""
    checks = (("loo_correlation", "pearson", "leave-one-out Pearson r"), ("lds", "lds", "LDS"),
              ("brittleness", "smallest_k", "brittleness (top proponents removed to flip a correct prediction)"),
              ("mislabel_detection", "found_10", "share of flips in the top 10% of self-influence"))
    lines = []
    for audit, column, label in checks:
        rows = list(results.get(audit, []))
        for model in dict.fromkeys(r.get("model") for r in rows):
            mine = [r for r in rows if r.get("model") == model]
            methods = list(dict.fromkeys(r["method"] for r in mine))
            for method in (m for m in methods if m not in CONTROLS):
                for control in (c for c in ("identity", RANDOM) if c in methods):
                    difference = paired(mine, column, method, control)
                    if difference is None or not math.isfinite(difference.low):
                        continue
                    lines.append(f"{model}: {method} {_word(difference, audit == 'brittleness')} {control} on the "
                                 f"{label} (difference {difference.text(signed=True)}, n = {difference.n}).")
    return lines
