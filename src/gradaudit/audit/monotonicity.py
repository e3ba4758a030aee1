"""Monotonicity (Arya et al. 2019; AIX360's ``monotonicity_metric``), as Quantus's ``Monotonicity`` is meant to be.

Features are inserted into an all-baseline image in ascending order of importance; the image passes when the
class probability never falls. Quantus 0.6.0's insert step writes the baseline back, so the image never
changes and every map passes; here the image's pixels really go in. It takes methods as every metric in
``metrics.py`` does, including precomputed maps [N, H, W], and explains and scores each image's label (the
prediction on the clean image for multi-hot labels: ``explained_classes``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..store import Store
from .common import call_arguments, per_method
from .metrics import DEFAULT_STEPS, absolute_map, causal_curves, explained_classes, explained_maps, image_data
from .results import AuditResult
from .stats import mean_interval


def insertion_probabilities(model: nn.Module, x: Tensor, maps: Tensor, classes: Tensor, step: int,
                            baseline: float = 0.0, seed: int = 0) -> Tensor:
    """Softmax probabilities [N, n] of ``classes`` [N] as the pixels of ``x`` [N, C, H, W] (all channels
    together) go into an all-``baseline`` image, ``step`` at a time, in ascending order of ``maps``
    [N, H, W] (ties in a seeded random order); n = ceil(H W / step), score k taken after k steps (the
    all-baseline image itself is not scored, as Arya et al. and Quantus; the last score is of x)."""
    start = torch.full_like(x, baseline)
    return causal_curves(model, x, -maps, classes, start, x, step, probability=True, seed=seed)[:, 1:]


def monotonicity(methods, model: nn.Module, data, *, step: int | None = None, baseline: float = 0.0,
                 limit: int | None = None, seed: int = 0, model_name: str = "model",
                 store: Store | None = None) -> AuditResult:
    """Monotonicity (Arya et al. 2019) of each method on the first ``limit`` images of ``data``: starting from
    an all-``baseline`` image, the image's pixels (all channels together) go in ``step`` at a time in
    ascending order of the map (|attribution| summed over channels, Quantus's ``abs=True``; precomputed maps
    as given; ties in a seeded random order), and the class's softmax probability is read after each step
    (``insertion_probabilities``). An image scores 1 when that probability never falls (each step's is >= the
    one before, Arya's and Quantus's test), else 0: inserting the least important pixels first, a faithful
    map should only ever add evidence. Higher is better.

    Where we differ from the references on purpose: the pixels really go in (Quantus 0.6.0 writes the
    baseline back, so its image never changes and every map scores 1); ``step=None`` takes ceil(H W / 32)
    pixels, about 32 steps at any size (Arya and Quantus insert one feature per step, where one step's
    float noise in a flat stretch already fails an image); a pixel's channels go in together (Quantus
    inserts each channel element apart; at one channel the two agree).

    Rows, one per method: ``monotonicity`` (the share of monotonic images with its 95% interval),
    ``monotonicity_each`` (1 or 0 per image), ``rising_steps`` (the share of steps whose probability does not
    fall, per image, mean with its interval: a graded view of the same curves), ``rising_steps_each`` and
    ``images``.

    The insertions follow each map's own order, so methods share no forward pass (unlike ``infidelity`` and
    ``faithfulness_correlation``).
    """
    call = call_arguments(locals())
    data, x = image_data(data, limit)
    pixels = x.shape[2] * x.shape[3]
    step = math.ceil(pixels / DEFAULT_STEPS) if step is None else step
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step < pixels:
        raise ValueError(f"step must be a number of pixels from 1 to {pixels - 1} (at least two insertion steps "
                         f"to compare); got {step!r}")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise ValueError(f"baseline must be a number (the value of the image pixels are inserted into); "
                         f"got {baseline!r}")
    classes = explained_classes(model, data, x)

    def compute(method, name):
        maps = explained_maps(method, model, x, classes, absolute_map, name)
        rising = insertion_probabilities(model, x, maps, classes, step, float(baseline), seed).diff(dim=1) >= 0
        monotonic = rising.all(1).double()
        return {**mean_interval(monotonic).as_row("monotonicity"), "monotonicity_each": monotonic.tolist(),
                **mean_interval(rising.double().mean(1)).as_row("rising_steps"),
                "rising_steps_each": rising.double().mean(1).tolist(), "images": len(x)}

    label = {"model": model_name, "step": step, "baseline": baseline, "seed": seed}
    return AuditResult("monotonicity", per_method(store, "monotonicity", methods, call, label, compute))
