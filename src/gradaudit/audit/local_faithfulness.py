"""Local faithfulness (Han, Srinivas, Lakkaraju 2022): which method's linear model fits f on
which neighbourhood? No method wins everywhere; pick the one that fits the neighbourhood you
care about.

For method attribution e (as a gradient-like slope; contributions are divided by x) and
neighbourhood samples x', the residual r = f(x') - f(x) - e . (x' - x). The score is the
fraction of f's variance over the neighbourhood that the slope leaves unexplained,
var(r) / var(f(x')): 0 = a perfect local linear model, 1 = no better than a constant. The
intercept is free, so each method is judged on its slope alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.inputs import as_examples
from ..engine import as_target, prepared, sample_scores
from ..engine.backprop import predicted_classes
from ..engine.chunks import auto_rows, chunk_rows
from ..engine.noise import GaussianNoise, uniform
from ..keys import fingerprint
from ..store import Store
from .common import call_arguments, memo, named_methods
from .results import AuditResult
from .stats import Interval, mean_interval

DEFAULT_NEIGHBOURHOODS = ("gaussian:0.01", "gaussian:0.3", "mask:0.5", "shap", "uniform", "occlusion")


class Neighbourhood:
    """A named distribution of x' around x. Names: "gaussian:SIGMA" (x + N(0, SIGMA^2)),
    "mask:P" (x * z, z ~ Bernoulli(P) per element: LIME's), "shap" (x * z with coalition sizes
    drawn by the Shapley kernel: KernelSHAP's), "uniform" (x * u, u ~ U(0, 1) per element: the IG
    path's), "occlusion" (x with one element set to 0: Occlusion's)."""

    def __init__(self, name: str, seed: int = 0):
        kind, _, value = name.partition(":")
        needs_value = kind in ("gaussian", "mask")
        if kind not in ("gaussian", "mask", "shap", "uniform", "occlusion") or needs_value != bool(value):
            raise ValueError(f"neighbourhood must be gaussian:SIGMA, mask:P, shap, uniform or occlusion; got {name!r}")
        self.name, self.kind, self.seed = name, kind, seed
        self.value = float(value) if value else None

    def sample(self, x: Tensor, examples: Tensor, samples: Tensor, draws: GaussianNoise) -> Tensor:
        """x' for the rows given by ``examples`` and ``samples`` ([R] each); the draw of a row
        depends only on (seed, example, sample)."""
        rows = samples * len(x) + examples
        base = x[examples]
        shape = x.shape[1:]
        if self.kind == "gaussian":
            return base + self.value * draws.rows(examples, samples).to(x.device)
        if self.kind == "uniform":
            return base * uniform(self.seed, 6, rows, shape, x.dtype)
        if self.kind == "mask":
            return base * (uniform(self.seed, 7, rows, shape, x.dtype) < self.value)
        count = math.prod(shape)
        if self.kind == "occlusion":
            keep = torch.ones(len(rows), count, dtype=torch.bool, device=x.device)
            keep[torch.arange(len(rows)), samples % count] = False
            return base * keep.view_as(base)
        sizes = torch.arange(1, count, dtype=torch.float64)
        kernel = (count - 1) / (sizes * (count - sizes))
        cumulative = (kernel / kernel.sum()).cumsum(0)
        size = torch.searchsorted(cumulative, uniform(self.seed, 8, rows, (1,), torch.float64)[:, 0].cpu()) + 1
        rank = uniform(self.seed, 9, rows, (count,), torch.float64).argsort(1).argsort(1)
        return base * (rank < size.clamp(max=count - 1).to(x.device)[:, None]).view_as(base)


def _slope(method, attribution: Tensor, x: Tensor) -> Tensor:
    kind = method.linear_model
    if kind is None:
        raise ValueError(f"{type(method).__name__} with these settings is not a local linear model "
                         "(use Saliency(abs=False), SmoothGrad of one, IG, InputXGradient, LIME, ...)")
    if kind == "gradient":
        return attribution
    return torch.where(x != 0, attribution / torch.where(x != 0, x, torch.ones_like(x)), torch.zeros_like(x))


def local_faithfulness(methods, model: nn.Module, data, *, neighbourhoods=DEFAULT_NEIGHBOURHOODS,
                       samples: int = 256, limit: int | None = 32, seed: int = 0, model_name: str = "model",
                       store: Store | None = None) -> AuditResult:
    """Unexplained variance of each method's linear model on each neighbourhood, averaged over
    the first ``limit`` examples of ``data`` (``.x`` tensor or a tensor), with its interval over them
    and each example's value (``unexplained_each``, for paired comparisons: ``recommendation``).
    Rows carry ``best``: the lowest mean of each neighbourhood (ties within 1e-9). The model runs over each
    neighbourhood's samples once, when a first method's row is not in the store, and that serves every method."""
    call = call_arguments(locals(), units=("neighbourhoods",))
    x = as_examples(data, labels=False).x[:limit]
    hoods = [Neighbourhood(n, seed) for n in neighbourhoods]
    methods = named_methods(methods)
    with prepared(model):
        chunk = auto_rows(model, x, gradients=False)
        target = as_target(predicted_classes(model, x, chunk), len(x))
        clean = sample_scores(model, target, len(x), 1, chunk, lambda e, k: x[e], x.device)[:, 0]
        cache: dict[str, Tensor] = {}

        def neighbourhood_scores(hood):
            if hood.name not in cache:
                draws = GaussianNoise(seed, len(x), x.shape[1:], x.dtype)
                cache[hood.name] = sample_scores(model, target, len(x), samples, chunk,
                                                 lambda e, k: hood.sample(x, e, k, draws), x.device)
            return cache[hood.name]

        rows = []
        for name, method in methods.items():
            slope = None
            for hood in hoods:
                def compute(method=method, hood=hood):
                    nonlocal slope
                    if slope is None:
                        slope = _slope(method, method(model, x, target.classes), x).double()
                    f = neighbourhood_scores(hood).double()                          # [B, n]
                    draws = GaussianNoise(seed, len(x), x.shape[1:], x.dtype)
                    linear = torch.empty_like(f)
                    for _, e, k in chunk_rows(len(x), samples, chunk, x.device):
                        step = (hood.sample(x, e, k, draws) - x[e]).double()
                        linear[e, k] = (slope[e] * step).flatten(1).sum(1)
                    residual = f - clean.double()[:, None] - linear
                    unexplained = residual.var(1) / f.var(1).clamp(min=1e-12)
                    return {**mean_interval(unexplained).as_row("unexplained"),
                            "unexplained_std": unexplained.std().item(), "unexplained_each": unexplained.tolist(),
                            "examples": len(x), "samples": samples}

                rows.append(memo(store, "local_faithfulness",
                                 {"model": model_name, "method": name, "neighbourhood": hood.name},
                                 {"call": call, "method": fingerprint(method, name), "hood": fingerprint(hood)},
                                 compute))
    for hood in hoods:
        scores = [r["unexplained"] for r in rows if r["neighbourhood"] == hood.name]
        for r in rows:
            if r["neighbourhood"] == hood.name:
                r["best"] = r["unexplained"] <= min(scores) + 1e-9
    return AuditResult("local_faithfulness", rows)


@dataclass(frozen=True)
class Recommendation:
    """One neighbourhood's verdict: ``ranking`` (method names, lowest mean unexplained variance first);
    ``recommended``: the first, only when its paired difference from the runner-up (``margin``: runner-up
    minus first, over the same examples) excludes zero; otherwise None and ``tied``: the methods whose
    paired difference from the first does not exclude zero (the first included)."""

    neighbourhood: str
    ranking: tuple
    recommended: str | None
    tied: tuple
    margin: Interval | None


def recommendation(rows: list[dict], neighbourhood: str) -> Recommendation:
    """The verdict of ``local_faithfulness`` rows (with ``unexplained_each``) on ``neighbourhood``."""
    mine = sorted((r for r in rows if r["neighbourhood"] == neighbourhood), key=lambda r: r["unexplained"])
    if not mine:
        raise ValueError(f"no local_faithfulness rows for neighbourhood {neighbourhood!r}")
    ranking = tuple(r["method"] for r in mine)
    if len(mine) == 1:
        return Recommendation(neighbourhood, ranking, ranking[0], ranking, None)
    first = torch.tensor(mine[0]["unexplained_each"], dtype=torch.float64)

    def paired(row) -> Interval:
        return mean_interval(torch.tensor(row["unexplained_each"], dtype=torch.float64) - first)

    margin = paired(mine[1])
    if margin.low > 0:
        return Recommendation(neighbourhood, ranking, ranking[0], (ranking[0],), margin)
    tied = (ranking[0], *(r["method"] for r in mine[1:] if not paired(r).low > 0))
    return Recommendation(neighbourhood, ranking, None, tied, margin)
