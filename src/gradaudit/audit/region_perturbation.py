"""Faithfulness by removing regions in order of relevance: region perturbation / AOPC (Samek et al. 2017) and IROF
(Rieger & Hansen 2020), Quantus 0.6.0's ``RegionPerturbation`` and ``IROF`` given the same regions and fill.

Both cut each image into regions (square patches; IROF: segments), order the regions by the map (most relevant
first), replace them one after another and read the class's softmax probability after each step
(``region_curves``). A faithful map loses the class fastest. They take methods as every metric in ``metrics.py``
does, including precomputed maps [N, H, W], with the signed map (attribution summed over channels, signs kept: the
relevance the papers order by), and explain and score each image's label (``explained_classes``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..engine import auto_rows, prepared, sample_scores
from ..engine.target import Classes, class_logits
from ..maps import heatmap
from ..store import Store
from .common import call_arguments, per_method, rank_pixels
from .metrics import explained_classes, explained_maps, image_data
from .results import AuditResult
from .stats import mean_interval


class ClassProbability(Classes):
    """The softmax probability of one class per example: ``Classes``'s logit less the row's log-sum-exp."""

    def scores(self, output, rows):
        return (super().scores(output, rows) - class_logits(output).logsumexp(1)).exp()


def grid_regions(height: int, width: int, side: int) -> Tensor:
    """LongTensor [H, W]: the square ``side`` x ``side`` patch each pixel belongs to, numbered row by row (patches at
    the right and bottom edges are cut short, as Quantus's padding leaves them)."""
    across = math.ceil(width / side)
    rows = torch.arange(height)[:, None] // side
    cols = torch.arange(width)[None, :] // side
    return rows * across + cols


def region_order(maps: Tensor, regions: Tensor, reduce: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(step [N, P], count [N]): the step at which each pixel's region is removed (0 = first) when the regions of
    ``regions`` [N, H, W] (labels 0..R - 1) are taken in descending order of the map's ``reduce`` ("sum" or "mean")
    over them (``maps`` [N, H, W]; ties in a seeded random order), and how many regions each image has (regions
    with no pixel in an image come last and are never reached)."""
    flat, labels = maps.flatten(1).double(), regions.flatten(1).long().to(maps.device)
    count = int(labels.max()) + 1
    sums = torch.zeros(len(flat), count, dtype=torch.float64, device=maps.device).scatter_add_(1, labels, flat)
    sizes = torch.zeros_like(sums).scatter_add_(1, labels, torch.ones_like(flat))
    score = sums / sizes.clamp(min=1) if reduce == "mean" else sums
    score = torch.where(sizes > 0, score, torch.full_like(score, -math.inf))
    position = count - 1 - rank_pixels(score, seed).to(maps.device)
    return position.gather(1, labels), (sizes > 0).sum(1)


def region_curves(model: nn.Module, x: Tensor, step: Tensor, fill: Tensor, classes: Tensor, steps: int,
                  probability: bool = True) -> Tensor:
    """Scores [N, steps + 1] of ``classes`` [N] (softmax probability, or logit) with the pixels of ``x``
    [N, C, H, W] whose ``step`` [N, P] is below k set to ``fill`` (like ``x``; all channels of a pixel), k = 0 ..
    ``steps``: the first score is of x. Rows run in memory-bounded chunks without gradients."""
    target = ClassProbability(classes) if probability else Classes(classes)

    def removed(examples: Tensor, samples: Tensor) -> Tensor:
        done = (step[examples] < samples[:, None]).view(len(examples), 1, *x.shape[2:])
        return torch.where(done, fill[examples], x[examples])

    with prepared(model):
        chunk = auto_rows(model, x[:1], gradients=False)
        return sample_scores(model, target, len(x), steps + 1, chunk, removed, device=x.device).double()


def _signed(attribution: Tensor) -> Tensor:
    return heatmap(attribution, reduce="sum")


def _fill(x: Tensor, baseline, seed: int, allowed: tuple[str, ...]) -> Tensor:
    """The value each removed pixel takes [N, C, H, W]: a number; "mean" (each image's channel means, Rieger &
    Hansen's mean value); "uniform" (Samek et al.'s uniform noise: seeded draws between the image's minimum and
    maximum, drawn once, so every step of a curve sees the same noise)."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "mean" and "mean" in allowed:
        return x.mean((2, 3), keepdim=True).expand_as(x).contiguous()
    if baseline == "uniform" and "uniform" in allowed:
        low, high = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
        draws = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return (low + (high - low) * draws.to(x.device)).to(x.dtype)
    raise ValueError(f"baseline must be a number or one of {', '.join(repr(a) for a in allowed)}; got {baseline!r}")


def region_perturbation(methods, model: nn.Module, data, *, patch: int | None = None, regions: int | None = None,
                        baseline="uniform", probability: bool = True, limit: int | None = None, seed: int = 0,
                        model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Region perturbation (Samek et al. 2017, MoRF) and its area over the perturbation curve: each image is cut
    into square patches of ``patch`` px (None: ceil(max(H, W) / 8), 8 x 8 patches; Samek's 9 x 9 px at 224 px
    are 1/25 of the side), taken in descending order of the map summed over the patch; after k of them are
    replaced (k = 0 .. L, L = ``regions``, None: every patch) the class's score f_k is read. AOPC = 1 / (L + 1)
    sum_k (f_0 - f_k); higher is better. ``baseline``: "uniform" (Samek's uniform noise, seeded), "mean" or a
    number. ``probability``: softmax probability (Quantus's default) or logit. Given the same patches, a
    numeric baseline and no ties, AOPC = the sum of Quantus's curve / (L + 1).

    Rows, one per method: ``aopc`` with its 95% interval, ``aopc_each``, ``curve`` (mean f_0 - f_k, k = 0..L),
    ``patch``, ``regions``, ``images``."""
    call = call_arguments(locals())
    data, x = image_data(data, limit)
    side = math.ceil(max(x.shape[2:]) / 8) if patch is None else patch
    if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= max(x.shape[2:]):
        raise ValueError(f"patch must be a side in pixels from 1 to {max(x.shape[2:])}; got {patch!r}")
    labels = grid_regions(*x.shape[2:], side).expand(len(x), -1, -1)
    total = int(labels.max()) + 1
    count = total if regions is None else regions
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= total:
        raise ValueError(f"regions must be a number of patches from 1 to the image's {total}; got {regions!r}")
    fill = _fill(x, baseline, seed, ("uniform", "mean"))
    classes = explained_classes(model, data, x)

    def compute(method, name):
        step, _ = region_order(explained_maps(method, model, x, classes, _signed, name), labels, "sum", seed)
        curves = region_curves(model, x, step, fill, classes, count, probability)
        drops = curves[:, :1] - curves
        aopc = drops.mean(1)
        return {**mean_interval(aopc).as_row("aopc"), "aopc_each": aopc.tolist(), "curve": drops.mean(0).tolist(),
                "images": len(x)}

    label = {"model": model_name, "patch": side, "regions": count, "baseline": baseline, "probability": probability,
             "seed": seed}
    return AuditResult("region_perturbation", per_method(store, "region_perturbation", methods, call, label, compute))


def irof(methods, model: nn.Module, data, *, segments: Tensor | None = None, segment: int | None = None,
         baseline="mean", limit: int | None = None, seed: int = 0, model_name: str = "model",
         store: Store | None = None) -> AuditResult:
    """IROF (Rieger & Hansen 2020): each image's segments are removed in descending order of the map's mean over
    the segment (ties in a seeded random order), replaced by ``baseline`` ("mean": the image's channel means, the
    paper's mean value; or a number); with c_k the class probability after k of the image's L segments are gone
    over the clean image's (c_0 = 1), IROF = 1 - trapezoid area under c on [0, 1] = 1 - (sum c - c_0 / 2 - c_L / 2)
    / L: the area over the curve; higher is better, 0 for a model the removals do not move.

    segments: LongTensor [N, H, W] of segment labels 0..S - 1 per image (e.g. skimage's ``slic(image,
        start_label=0)``, Quantus's); None: square cells of ``segment`` px (None: ceil(max(H, W) / 8)), a
        deterministic stand-in for superpixels that needs no skimage (not a dependency here).
    Where we differ from Quantus 0.6.0 on purpose: Quantus leaves out the clean point and integrates its L
    points with dx = 1, returning L - trapz(c_1..c_L) = L IROF + (1 + c_1) / 2 (so a model blind to the removals
    scores 1, not 0, and the score grows with the number of segments); its "mean" baseline is the mean of the whole
    batch as perturbed so far. Given the same segments and a numeric baseline, that identity holds exactly.

    Rows, one per method: ``irof`` with its 95% interval, ``irof_each``, ``segments`` (mean count), ``images``."""
    call = call_arguments(locals())
    data, x = image_data(data, limit)
    side = "given"
    if segments is None:
        side = math.ceil(max(x.shape[2:]) / 8) if segment is None else segment
        if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= max(x.shape[2:]):
            raise ValueError(f"segment must be a side in pixels from 1 to {max(x.shape[2:])}; got {segment!r}")
        labels = grid_regions(*x.shape[2:], side).expand(len(x), -1, -1).to(x.device)
    elif not isinstance(segments, Tensor) or segments.shape[1:] != x.shape[2:] or len(segments) < len(x) \
            or segments.is_floating_point() or segments.min() < 0:
        shape = list(segments.shape) if isinstance(segments, Tensor) else type(segments).__name__
        raise ValueError(f"segments must be an integer tensor [N, H, W] = [{len(x)}, {x.shape[2]}, {x.shape[3]}] of "
                         f"labels 0, 1, ... (one map per image); got {shape}")
    else:
        labels = segments[:len(x)].long().to(x.device)
    fill = _fill(x, baseline, seed, ("mean",))
    classes = explained_classes(model, data, x)

    def compute(method, name):
        step, count = region_order(explained_maps(method, model, x, classes, _signed, name), labels, "mean", seed)
        curves = region_curves(model, x, step, fill, classes, int(count.max()), True)
        curves = curves / curves[:, :1]
        index = torch.arange(curves.shape[1], device=curves.device)
        inside = (index[None] <= count[:, None]).double()
        last = curves.gather(1, count[:, None])[:, 0]
        area = ((curves * inside).sum(1) - curves[:, 0] / 2 - last / 2) / count.double()
        values = 1 - area
        return {**mean_interval(values).as_row("irof"), "irof_each": values.tolist(),
                "segments": count.double().mean().item(), "images": len(x)}

    label = {"model": model_name, "segment": side, "baseline": baseline, "seed": seed}
    return AuditResult("irof", per_method(store, "irof", methods, call, label, compute))
