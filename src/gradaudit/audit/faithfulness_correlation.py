"""Faithfulness correlation (Bhatt et al. 2020), as Quantus's ``FaithfulnessCorrelation`` computes it.

Quantus's is the only implementation: per image, the Pearson correlation over random pixel subsets between
the subset's summed attribution and the drop of the class's logit when the subset is set to a baseline.
It takes methods as every metric in ``metrics.py`` does, including precomputed maps [N, H, W], and explains
and scores each image's label (the prediction on the clean image for multi-hot labels: ``explained_classes``).
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor, nn

from ..engine import auto_rows, prepared, sample_scores
from ..engine.target import Classes
from ..maps import heatmap
from ..store import Store
from .common import call_arguments, pearson, per_method
from .metrics import explained_classes, explained_maps, image_data
from .results import AuditResult
from .stats import mean_interval

SUBSET_SHARE = 224                 # Quantus: 224 elements of a 224 x 224 image, one pixel in 224


def _signed(attribution: Tensor) -> Tensor:
    """Attribution summed over channels ([B, C, H, W]) or a layer map ([B, h, w]), signs kept."""
    return heatmap(attribution, reduce="sum")


def random_subsets(n: int, pixels: int, size: int, samples: int, seed: int = 0) -> Tensor:
    """LongTensor [n, samples, size]: for each of ``n`` images and ``samples`` draws, ``size`` distinct pixel
    indices in 0..``pixels`` - 1, uniformly at random (a seeded generator, image by image): the ``size``
    smallest of ``pixels`` uniform keys, found with ``topk`` rather than a full sort."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(samples, pixels, generator=generator).topk(size, 1, largest=False, sorted=False)[1]
                        for _ in range(n)])


def subset_drops(model: nn.Module, x: Tensor, classes: Tensor, subsets: Tensor, baseline: float = 0.0) -> Tensor:
    """f(x) - f(x with the subset's pixels, all channels, set to ``baseline``) [N, samples] (float64) for the
    logits of ``classes`` [N] on images ``x`` [N, C, H, W], one column per draw of ``subsets`` [N, samples, size]
    (flat pixel indices). The model's part of the metric: it does not depend on the map, so one call serves
    every map scored on the same subsets. The perturbed rows run in memory-bounded chunks without gradients;
    ``model`` is evaluated in eval mode and given back as found."""
    n, samples = subsets.shape[:2]
    subsets = subsets.to(x.device)
    target = Classes(classes)

    def removed(examples: Tensor, draws: Tensor) -> Tensor:
        hidden = torch.zeros(len(examples), x.shape[2] * x.shape[3], dtype=torch.bool, device=x.device)
        hidden.scatter_(1, subsets[examples, draws], True)
        return x[examples].masked_fill(hidden.view(len(examples), 1, *x.shape[2:]), baseline)

    with prepared(model):
        chunk = auto_rows(model, x[:1], gradients=False)
        clean = sample_scores(model, target, n, 1, chunk, lambda e, _: x[e], device=x.device).double()
        return clean - sample_scores(model, target, n, samples, chunk, removed, device=x.device).double()


def subset_sums(maps: Tensor, subsets: Tensor) -> Tensor:
    """The sum of each map [N, H, W] over each of its subsets [N, samples, size]: [N, samples] (float64)."""
    n, samples = subsets.shape[:2]
    return maps.flatten(1).double().gather(1, subsets.to(maps.device).flatten(1)).view(n, samples, -1).sum(2)


def correlation_scores(model: nn.Module, x: Tensor, maps: Tensor, classes: Tensor, subsets: Tensor,
                       baseline: float = 0.0) -> Tensor:
    """Faithfulness correlation [N] (float64) of ``maps`` [N, H, W] for the logits of ``classes`` [N] on images
    ``x`` [N, C, H, W]: per image, Pearson over the draws of ``subsets`` [N, samples, size] (flat pixel
    indices) between the sum of the map over the subset (``subset_sums``) and the output drop when the
    subset's pixels are set to ``baseline`` (``subset_drops``); 0 where either is constant over the draws."""
    return pearson(subset_sums(maps, subsets), subset_drops(model, x, classes, subsets, baseline))


def faithfulness_correlation(methods, model: nn.Module, data, *, subset: int | None = None, samples: int = 50,
                             baseline: float = 0.0, limit: int | None = None, seed: int = 0,
                             model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Faithfulness correlation (Bhatt et al. 2020) of each method on the first ``limit`` images of ``data``:
    per image, ``samples`` random subsets of ``subset`` pixels (seeded by ``seed``) are set to ``baseline``
    (all channels of a pixel together), and the Pearson correlation between each subset's summed attribution
    (the signed sum over channels; precomputed maps as given) and the drop of the class's logit is the
    image's score. Higher is better; a map blind to the model scores about 0.

    Where we differ from Quantus 0.6.0 on purpose: ``subset=None`` takes ceil(H W / 224) pixels, the share of
    the image Quantus's default 224 is at 224 x 224, so the default keeps its meaning at any size (Quantus's
    subset counts input elements, each channel apart: at one channel the two agree); 50 draws rather than
    Quantus's 100 (``samples``); a baseline is a number (Quantus's default "black" is each image's minimum);
    a correlation with a constant side is 0 rather than NaN (a flat map over the draws carries no evidence).
    Given the same subsets on single-channel images, the scores equal Quantus's (``correlation_scores``).

    Shared passes: the subsets do not depend on the map, so every method of one call is scored from one run
    of the model over the perturbed images (``subset_drops``, made once, and only when some method's row is
    not in the store); a map only adds its sums over the subsets. A method's number is the same alone or
    among others (tested).

    Rows, one per method: ``faithfulness_correlation`` (mean with its 95% interval over images),
    ``faithfulness_correlation_each`` (per image) and ``images``.
    """
    call = call_arguments(locals())
    data, x = image_data(data, limit)
    pixels = x.shape[2] * x.shape[3]
    size = math.ceil(pixels / SUBSET_SHARE) if subset is None else subset
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= pixels:
        raise ValueError(f"subset must be a number of pixels between 1 and the image's {pixels} (H x W); "
                         f"got {subset!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be at least 2 subsets (a correlation needs two points); got {samples!r}")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise ValueError(f"baseline must be a number (the value removed pixels take); got {baseline!r}")
    classes = explained_classes(model, data, x)
    subsets = random_subsets(len(x), pixels, size, samples, seed)
    drops = cache(lambda: subset_drops(model, x, classes, subsets, float(baseline)))

    def compute(method, name):
        values = pearson(subset_sums(explained_maps(method, model, x, classes, _signed, name), subsets), drops())
        return {**mean_interval(values).as_row("faithfulness_correlation"),
                "faithfulness_correlation_each": values.tolist(), "images": len(x)}

    label = {"model": model_name, "subset": size, "samples": samples, "baseline": baseline, "seed": seed}
    rows = per_method(store, "faithfulness_correlation", methods, call, label, compute)
    return AuditResult("faithfulness_correlation", rows)
