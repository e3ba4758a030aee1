"""The audit of the metrics themselves: can a metric be trusted on this model and these images?

Tomsett et al. (2020, "Sanity checks for saliency metrics") treat each image as a rater ranking the
methods and ask whether the ranking reproduces; the issue adds controls a metric must rank last.
Per metric (a column of the metrics' rows with its per-image values, ``<column>_each``):

(a) controls: each method's paired per-image difference to each control (``Random``, ``Sobel``: maps
    blind to the model), oriented so that positive means the method scores better, with its 95%
    Student-t interval over images. A metric that separates no method from the controls, or ranks a
    control above every method, is flagged. For a robustness metric (``sensitivity_max``) the test
    means something else: a map that ignores the model is trivially stable, so the controls are
    reported and not judged.
(b) reliability across images: Krippendorff's alpha of the methods' ranks (controls included), images
    as raters and methods as units, with a bias-corrected and accelerated bootstrap interval over images,
    read with Krippendorff's thresholds (``reliability``): reliable when the interval lies at or above 0.8,
    tentative at or above 0.667, otherwise not reliable.
(c) agreement between metrics: Spearman's rho of their rankings of the methods (means oriented so that
    higher is better), with a bootstrap interval over images where both metrics hold the same images.
(d) for ROAD: the same rho between MoRF and LeRF, over the mean of the fractions and per fraction.

The words of each row (``trust``, ``reliability``, ``reading``) claim only what these intervals support.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .common import CONTROLS, average_ranks, pearson
from .results import AuditResult
from .stats import LEVEL, Interval, bca_interval, mean_interval

DIRECTIONS = {
    "insertion": "higher", "deletion": "lower", "infidelity": "lower", "sensitivity_max": "lower",
    "faithfulness_correlation": "higher", "monotonicity": "higher", "hit_rate": "higher",
    "relevance_mass": "higher", "relevance_rank": "higher", "morf_accuracy": "lower", "lerf_accuracy": "higher",
    "unexplained": "lower", "rising_steps": "higher",
    "sparseness": "higher", "complexity": "lower", "mprt": "lower", "smprt": "lower", "emprt": "higher",
    "random_logit": "lower", "completeness": "lower", "input_invariance": "higher", "local_lipschitz": "lower",
    "relative_input_stability": "lower", "irof": "higher", "aopc": "higher",
}
"""Which way is better for each metric column: "higher" or "lower" (``metric_audit(directions=)`` overrides)."""

ROBUSTNESS = frozenset({"sensitivity_max", "local_lipschitz", "relative_input_stability", "input_invariance"})
"""Metrics of an explanation's stability, where maps blind to the model are the most stable by design (input
invariance too: a map that ignores the model cannot see the shift the model absorbs)."""

LEVELS = ("ordinal", "interval")

RELIABLE, TENTATIVE = 0.8, 0.667
"""Krippendorff's guidance (2004, Content Analysis, 2nd ed., ch. 11; 2011): rely on data with alpha >= 0.800,
draw only tentative conclusions from 0.667 <= alpha < 0.800, none below. Judged by alpha's interval: a level is
claimed only when the interval's lower bound reaches it (Krippendorff's own test asks that the smallest
acceptable alpha be reached with confidence, not by the point estimate)."""


def _alphas(values: Tensor, weights: Tensor, level: str) -> Tensor:
    """Krippendorff's alpha [B] of ``values`` [R raters, U units] (NaN = missing) with the raters counted
    ``weights`` [B, R] times (ones: the plain alpha; bootstrap counts: a resample). NaN where the data hold
    no disagreement to expect (a single value, or fewer than two pairable values)."""
    present = ~values.isnan()
    levels = values[present].unique()
    onehot = (values[..., None] == levels).double()                                    # [R, U, V]
    counts = torch.einsum("br,ruv->buv", weights.double(), onehot)                      # [B, U, V]
    pairable = counts.sum(-1)
    share = torch.where(pairable >= 2, 1 / (pairable - 1).clamp(min=1), torch.zeros_like(pairable))
    coincidences = torch.einsum("buc,buk,bu->bck", counts, counts, share) \
        - torch.diag_embed(torch.einsum("buc,bu->bc", counts, share))                  # [B, V, V]
    marginals = coincidences.sum(-1)                                                    # [B, V]
    total = marginals.sum(-1)
    if level == "interval":
        distance = ((levels[:, None] - levels[None, :]).double() ** 2).expand_as(coincidences)
    else:
        cumulative = marginals.cumsum(-1)
        between = cumulative[:, None, :] - cumulative[:, :, None] + (marginals[:, :, None] - marginals[:, None, :]) / 2
        distance = between ** 2
    observed = (coincidences * distance).sum((1, 2))
    expected = (marginals[:, :, None] * marginals[:, None, :] * distance).sum((1, 2))
    alpha = 1 - (total - 1) * observed / expected.clamp(min=1e-300)
    return torch.where(expected > 0, alpha, torch.full_like(alpha, math.nan))


def krippendorff_alpha(values, level: str = "ordinal") -> float:
    """Krippendorff's alpha (Krippendorff 2011, "Computing Krippendorff's alpha-reliability") of a
    reliability matrix ``values`` [raters, units]: numbers, NaN where a rater gave no value. 1 = perfect
    agreement, 0 = agreement at chance, below 0 = systematic disagreement; NaN when no disagreement can be
    expected (one value throughout). ``level``: "ordinal" (a disagreement weighs by how many pooled values
    lie between the two: ranks are ordered but their gaps are not equal) or "interval" (squared difference)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be a matrix [raters, units]; got shape {list(values.shape)}")
    return _alphas(values, torch.ones(1, len(values), dtype=torch.float64), level)[0].item()


def _spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rho [B] of the rows of ``a`` and ``b`` [B, M] (ties at their mean rank); NaN for a constant row."""
    ranks_a, ranks_b = average_ranks(a), average_ranks(b)
    constant = (ranks_a.std(1) == 0) | (ranks_b.std(1) == 0)
    rho = pearson(ranks_a, ranks_b)
    return torch.where(constant, torch.full_like(rho, math.nan), rho)


def _percentiles(values: Tensor) -> tuple[float, float]:
    """The central ``LEVEL`` percentile interval of bootstrap values (NaNs left out; NaN if all are)."""
    finite = values[~values.isnan()]
    if len(finite) == 0:
        return math.nan, math.nan
    low, high = torch.quantile(finite, torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=finite.dtype))
    return low.item(), high.item()


@dataclass
class _Metric:
    """One audited metric: per-image values [N] of each method, oriented so that higher is better."""

    name: str
    column: str
    audit: str
    direction: str
    values: dict[str, Tensor]
    fractions: dict[float, dict[str, Tensor]] = field(default_factory=dict)
    key: str | None = None

    @property
    def images(self) -> int:
        return len(next(iter(self.values.values())))


def _results(results) -> list[tuple[str | None, AuditResult]]:
    """(name, result) pairs: a dict's keys, else each result's audit."""
    if isinstance(results, AuditResult):
        return [(results.audit, results)]
    if isinstance(results, Mapping):
        items = list(results.items())
    else:
        items = []
        for result in results:
            items.extend(_results(result) if isinstance(result, (AuditResult, Mapping)) else [(None, result)])
    for key, result in items:
        if not isinstance(result, AuditResult):
            raise TypeError(f"results must be AuditResults (or dicts name -> AuditResult); got {type(result).__name__}"
                            + (f" under {key!r}" if key is not None else ""))
    return [(key, result) for key, result in items]


def _direction(column: str, directions: Mapping) -> str:
    direction = directions.get(column, DIRECTIONS.get(column))
    if direction is None:
        raise ValueError(f"no direction known for the metric column {column!r}: pass directions={{{column!r}: "
                         "'higher' | 'lower'}")
    return direction


def _per_image(rows: list[dict], column: str, audit: str) -> dict[str, Tensor]:
    values = {}
    for row in rows:
        if f"{column}_each" not in row:
            raise ValueError(f"the {audit!r} row of method {row['method']!r} has no {column}_each")
        if row["method"] in values:
            raise ValueError(f"the {audit!r} result holds several rows for method {row['method']!r} with the same "
                             "settings; pass one result per setting")
        values[row["method"]] = torch.tensor(row[f"{column}_each"], dtype=torch.float64)
    sizes = {len(v) for v in values.values()}
    if len(sizes) != 1:
        raise ValueError(f"{column} of the {audit!r} result has per-image lists of different lengths "
                         f"{sorted(sizes)}: every method must be scored on the same images")
    return values


def _metrics(results, directions: Mapping) -> list[_Metric]:
    """The metrics in ``results``: every ``<column>_each`` list, one metric per column and setting (rows of one
    method that differ in a text setting, such as a model or a neighbourhood, are different metrics); ROAD's
    fractions are averaged per image (the area under its accuracy curve) and kept apart for (d)."""
    found = []
    for key, result in _results(results):
        if not result.rows:
            raise ValueError(f"the {result.audit!r} result has no rows")
        if any("method" not in row for row in result.rows):
            raise ValueError(f"the rows of the {result.audit!r} result need a 'method' key")
        columns = [k[:-len("_each")] for k in result.rows[0] if k.endswith("_each")]
        if not columns:
            raise ValueError(f"the {result.audit!r} result has no per-image values (<column>_each): recompute it "
                             "with this version of gradaudit")
        texts: dict[tuple, set] = {}
        for row in result.rows:
            for k, v in row.items():
                if isinstance(v, str) and k != "method":
                    texts.setdefault((row["method"], k), set()).add(v)
        varying = sorted({k for (_, k), seen in texts.items() if len(seen) > 1})
        groups: dict[tuple, list[dict]] = {}
        for row in result.rows:
            groups.setdefault(tuple((k, row.get(k)) for k in varying), []).append(row)
        for setting, rows in groups.items():
            label = ",".join(f"{k}={v}" for k, v in setting)
            for column in columns:
                direction = _direction(column, directions)
                fractions = {}
                if "fraction" in rows[0]:
                    for fraction in sorted({row["fraction"] for row in rows}):
                        fractions[fraction] = _per_image([r for r in rows if r["fraction"] == fraction], column,
                                                         result.audit)
                    methods = list(next(iter(fractions.values())))
                    if any(set(f) != set(methods) for f in fractions.values()):
                        raise ValueError(f"the {result.audit!r} result has different methods at different fractions: "
                                         "every method must be scored at every fraction")
                    values = {m: torch.stack([f[m] for f in fractions.values()]).mean(0) for m in methods}
                else:
                    values = _per_image(rows, column, result.audit)
                sign = 1.0 if direction == "higher" else -1.0
                found.append(_Metric(f"{column}[{label}]" if label else column, column, result.audit, direction,
                                     {m: sign * v for m, v in values.items()},
                                     {k: {m: sign * v for m, v in f.items()} for k, f in fractions.items()}, key))
    names = [m.name for m in found]
    for i, metric in enumerate(found):
        if names.count(metric.name) > 1:
            metric.name = f"{metric.key if metric.key is not None else f'{metric.audit}#{i}'}/{metric.name}"
    if len({m.name for m in found}) != len(found):
        raise ValueError(f"results name the same metric twice ({', '.join(names)}): pass a dict name -> result")
    return found


def _weights(images: int, resamples: int, seed: int) -> Tensor:
    """Bootstrap counts [resamples, images]: how often each image is drawn in each resample (seeded)."""
    draws = torch.randint(images, (resamples, images), generator=torch.Generator().manual_seed(seed))
    return torch.zeros(resamples, images, dtype=torch.float64).scatter_add_(1, draws, torch.ones_like(draws).double())


def _rho(a: dict[str, Tensor], b: dict[str, Tensor], weights: dict[int, Tensor]) -> dict:
    """Spearman's rho of the mean rankings of the methods two metrics share, with its bootstrap interval when
    both hold the same number of images (resampled together)."""
    shared = [m for m in a if m in b]
    table_a, table_b = torch.stack([a[m] for m in shared], 1), torch.stack([b[m] for m in shared], 1)
    rho = _spearman(table_a.mean(0, keepdim=True), table_b.mean(0, keepdim=True))[0].item() \
        if len(shared) >= 2 else math.nan
    low = high = math.nan
    if len(shared) >= 2 and len(table_a) == len(table_b):
        w = weights[len(table_a)]
        low, high = _percentiles(_spearman(w @ table_a / len(table_a), w @ table_b / len(table_b)))
    return {"rho": rho, "low": low, "high": high, "methods": len(shared)}


def reliability(alpha: Interval) -> str:
    """Krippendorff's word for alpha's interval (``RELIABLE``, ``TENTATIVE``): "reliable" when its lower bound is
    at least 0.8, "tentative" when at least 0.667, "undefined" when alpha is NaN, else "not reliable"."""
    if math.isnan(alpha.mean):
        return "undefined"
    return "reliable" if alpha.low >= RELIABLE else "tentative" if alpha.low >= TENTATIVE else "not reliable"


def _alpha_words(alpha: Interval) -> str:
    if math.isnan(alpha.mean):
        return "α undefined (no disagreement to expect: every image scores the methods alike)"
    text = f"α = {alpha.text(2)} over {alpha.n} images"
    word = reliability(alpha)
    if word == "reliable":
        return f"{text}: rankings reliable across images (interval at or above {RELIABLE})"
    if word == "tentative":
        return (f"{text}: rankings tentatively reliable across images (interval at or above {TENTATIVE}, "
                f"not all above {RELIABLE})")
    if alpha.high >= TENTATIVE:
        return f"{text}: rankings not shown reliable across images (the interval reaches below {TENTATIVE})"
    if alpha.high < 0:
        return f"{text}: rankings not reliable across images; images rank the methods against each other"
    if alpha.low <= 0:
        return f"{text}: rankings not reliable across images, not distinguishable from chance"
    return f"{text}: rankings not reliable across images (above chance, below {TENTATIVE})"


def _control_test(metric: _Metric, methods: list[str], controls: list[str]) -> dict:
    """(a): the paired differences, who is separated from every control, and the flag with its words."""
    pairs = {(m, c): mean_interval(metric.values[m] - metric.values[c]) for m in methods for c in controls}
    separated = [m for m in methods if all(pairs[m, c].low > 0 for c in controls)]
    means = {m: v.mean().item() for m, v in metric.values.items()}
    best = max(methods, key=means.get)
    above = [c for c in controls if means[c] > means[best]]

    def closest(among: list[str]) -> str:
        method, control = min(((m, c) for m in among for c in controls), key=lambda pair: pairs[pair].low)
        return f"{method} vs {control}: {pairs[method, control].text(3, signed=True)}"

    if metric.column in ROBUSTNESS:
        flag, words = None, (f"a robustness metric: {' and '.join(controls)} ignore the model and are stable by "
                             f"construction, so the control test does not apply (reported, not judged; "
                             f"{closest([best])})")
    elif above:
        flag = words = f"ranks {' and '.join(above)} above every method ({closest([best])})"
    elif not separated:
        flag = words = f"cannot tell any method from {' and '.join(controls)} here ({closest([best])})"
    elif len(separated) == len(methods):
        flag, words = None, f"separates every method from {' and '.join(controls)}"
    else:
        missed = [m for m in methods if m not in separated]
        below = [m for m in missed if any(pairs[m, c].high < 0 for c in controls)]
        tied = [m for m in missed if m not in below]
        parts = [f"separates {', '.join(separated)} from the controls"]
        if below:
            parts.append(f"scores {', '.join(below)} below a control ({closest(below)}): worse than a map blind "
                         "to the model, under this metric")
        if tied:
            parts.append(f"cannot tell {', '.join(tied)} from the controls ({closest(tied)})")
        flag, words = None, "; ".join(parts)
    versus = [{"method": m, "control": c, **interval.as_row("difference")} for (m, c), interval in pairs.items()]
    return {"versus_controls": versus, "separated": separated, "flagged": flag is not None, "flag": flag,
            "words": words}


def metric_audit(results, *, directions: Mapping | None = None, controls=CONTROLS, resamples: int = 1000,
                 seed: int = 0, level: str = "ordinal") -> AuditResult:
    """Whether each metric in ``results`` can be trusted on the model and images it was computed on.

    results: AuditResults of the metrics (``insertion_deletion``, ``infidelity``, ``pointing_game``,
        ``relevance_mass``, ``relevance_rank``, ``road``, ... : any rows with ``method`` and ``<column>_each``),
        a dict name -> AuditResult, or a list of either, all computed on the same images with the controls
        among the methods (``methods.Random()``, ``methods.Sobel()``, named by ``controls``).
    directions: column -> "higher" | "lower" (which is better), over ``DIRECTIONS``.
    controls: the method names that are controls; each metric needs at least one of them and one method.
    resamples, seed: the bootstrap over images (the same resamples for every metric of the same size).
    level: Krippendorff's metric for the ranks, "ordinal" (default: a rank says which method is better, not by
        how much, so the distance between two ranks counts the pooled ranks between them) or "interval".

    Rows, one per metric: ``metric``, ``audit``, ``column``, ``direction``, ``images``, ``methods`` and
    ``controls`` (the names present), ``means`` (name -> mean, as the metric reports it), ``ranking`` (best
    first, controls included); (a) ``versus_controls`` (rows ``method``, ``control``, ``difference`` with
    ``_low``/``_high``/``_n``: paired, positive = the method better), ``separated`` (methods above every
    control), ``flagged`` and ``flag`` (why); (b) ``alpha``, ``alpha_low``, ``alpha_high`` (bootstrap
    percentile interval), ``alpha_n`` (images), ``alpha_level``; (c) ``agreement``, ``agreement_low``,
    ``agreement_high`` (other metric -> Spearman's rho); (d) for ROAD's columns ``morf_lerf`` with ``_low`` and
    ``_high``; ``reliability`` of alpha ("reliable", "tentative", "not reliable" or "undefined": ``reliability``);
    and the verdict ``trust``: "trusted" (every method separated from every control and alpha reliable),
    "tentative" (separated, alpha tentative), "flagged" (see (a)), "reported" (a robustness metric: not judged
    against the controls, its reliability stated) or "weak" (anything between), with ``reading``, a sentence
    that follows the intervals. ``extra``: "agreement" (one row per pair of metrics)
    and "morf_lerf" (one row per ROAD fraction and "mean").

    Resampling images duplicates some, and a duplicated image agrees with itself: alpha's bootstrap leans
    upwards, and near 1 the percentile interval can lie above the estimate. Alpha's interval is therefore the
    bias-corrected and accelerated one (``stats.bca_interval``, the acceleration from leaving each image out).
    """
    directions = dict(directions or {})
    for column, direction in directions.items():
        if direction not in ("higher", "lower"):
            raise ValueError(f"directions must map columns to 'higher' or 'lower'; got {column!r}: {direction!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer; got {resamples!r}")
    controls = (controls,) if isinstance(controls, str) else tuple(controls)
    metrics = _metrics(results, directions)
    weights = {n: _weights(n, resamples, seed) for n in {m.images for m in metrics}}
    rows = []
    for metric in metrics:
        present = [c for c in controls if c in metric.values]
        methods = [m for m in metric.values if m not in controls]
        if not present or not methods:
            raise ValueError(f"{metric.name} needs at least one control ({', '.join(controls)}) and one other method "
                             f"among its methods; it has {', '.join(metric.values)}")
        if metric.images < 2:
            raise ValueError(f"{metric.name} has {metric.images} image(s): the audit needs at least 2")
        table = torch.stack(list(metric.values.values()), 1)                            # [N, M], higher = better
        finite = table.isfinite().all(1)
        ranks = average_ranks(table[finite])
        alphas = _alphas(ranks, weights[metric.images][:, finite], level)
        kept = len(ranks)
        jackknife = _alphas(ranks, 1 - torch.eye(kept, dtype=torch.float64), level)        # each image left out
        estimate = krippendorff_alpha(ranks, level)
        alpha = Interval(estimate, *bca_interval(estimate, alphas, jackknife), kept)
        reliable = reliability(alpha)
        test = _control_test(metric, methods, present)
        sign = 1.0 if metric.direction == "higher" else -1.0
        means = {m: sign * v.mean().item() for m, v in metric.values.items()}
        if test["flagged"]:
            trust = "flagged"
        elif metric.column in ROBUSTNESS:
            trust = "reported"
        elif len(test["separated"]) == len(methods) and reliable in ("reliable", "tentative"):
            trust = "trusted" if reliable == "reliable" else "tentative"
        else:
            trust = "weak"
        rows.append({"metric": metric.name, "audit": metric.audit, "column": metric.column,
                     "direction": metric.direction, "images": metric.images, "methods": methods, "controls": present,
                     "means": means, "ranking": sorted(metric.values, key=lambda m: -sign * means[m]),
                     "versus_controls": test["versus_controls"], "separated": test["separated"],
                     "flagged": test["flagged"], "flag": test["flag"], **alpha.as_row("alpha"), "alpha_level": level,
                     "reliability": reliable, "trust": trust,
                     "reading": f"{metric.name}: {test['words']}; {_alpha_words(alpha)}"})
    pairs = []
    for i, a in enumerate(metrics):
        for b in metrics[i + 1:]:
            rho = _rho(a.values, b.values, weights)
            pairs.append({"metric_a": a.name, "metric_b": b.name, "spearman": rho["rho"], "spearman_low": rho["low"],
                          "spearman_high": rho["high"], "methods": rho["methods"]})
    for row in rows:
        mine = [(p["metric_b"] if p["metric_a"] == row["metric"] else p["metric_a"], p) for p in pairs
                if row["metric"] in (p["metric_a"], p["metric_b"])]
        for suffix, key in (("", "spearman"), ("_low", "spearman_low"), ("_high", "spearman_high")):
            row[f"agreement{suffix}"] = {other: p[key] for other, p in mine}
    extra = {"agreement": pairs, "morf_lerf": _morf_lerf(metrics, rows, weights)}
    return AuditResult("metric_audit", rows, extra)


def _morf_lerf(metrics: list[_Metric], rows: list[dict], weights: dict[int, Tensor]) -> list[dict]:
    """(d): Spearman's rho between ROAD's MoRF and LeRF rankings of the methods (both oriented so that higher is
    better), over the mean of the fractions and per fraction; written into the two metrics' rows too."""
    found = []
    for morf in (m for m in metrics if m.column == "morf_accuracy"):
        lerf = next((m for m in metrics if m.column == "lerf_accuracy" and m.name == morf.name.replace(
            "morf_accuracy", "lerf_accuracy", 1)), None)
        if lerf is None:
            continue
        mean = _rho(morf.values, lerf.values, weights)
        found.append({"morf": morf.name, "lerf": lerf.name, "fraction": "mean", "spearman": mean["rho"],
                      "spearman_low": mean["low"], "spearman_high": mean["high"]})
        for fraction, values in morf.fractions.items():
            rho = _rho(values, lerf.fractions[fraction], weights)
            found.append({"morf": morf.name, "lerf": lerf.name, "fraction": fraction, "spearman": rho["rho"],
                          "spearman_low": rho["low"], "spearman_high": rho["high"]})
        for row in rows:
            if row["metric"] in (morf.name, lerf.name):
                row.update({"morf_lerf": mean["rho"], "morf_lerf_low": mean["low"], "morf_lerf_high": mean["high"]})
                agree = "agree" if mean["low"] > 0 else "disagree" if mean["high"] < 0 else "neither agree nor disagree"
                row["reading"] += (f"; MoRF and LeRF {agree} on the ranking (ρ = {mean['rho']:+.2f} "
                                   f"[{mean['low']:+.2f}, {mean['high']:+.2f}])")
    return found
