"""Randomisation checks: does the map change when the model it explains does?

- ``randomization`` and ``mprt``: model parameter randomisation (Adebayo et al. 2018), layers re-initialised
  cumulatively from the output down (the cascade), the Spearman correlation of each map with the trained model's.
- ``smprt`` and ``emprt``: its smooth and efficient variants (Hedström et al. 2024, "Sanity checks revisited"):
  maps denoised by averaging over noisy copies of the input; the relative rise of a map's histogram entropy
  once every layer is random.
- ``random_logit``: Sixt et al. (2020): the SSIM of the map for the image's class and for a random other class.

Models are re-initialised as Quantus 0.6.0's ``get_random_layer_generator`` does (``cascade``), so given the same
seed our copies hold the same weights as Quantus's. The user's model is never modified (copies), and the
caller's random number generator is left as found.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.inputs import as_examples
from ..engine import prepared
from ..engine.forward import run_model
from ..engine.noise import GaussianNoise, noise_scale
from ..engine.target import class_logits
from ..keys import fingerprint
from ..maps import heatmap, resize
from ..store import Store
from .common import (
    call_arguments,
    explain_rows,
    finite_maps,
    importance,
    memo,
    named_methods,
    per_method,
    refuse_maps,
    spearman,
)
from .metrics import absolute_map, explained_classes, explained_maps, image_data
from .results import AuditResult
from .stats import mean_interval

ORDERS = ("top_down", "bottom_up", "independent")


def randomised_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, in registration order (input side first for a
    model that registers its layers in the order it runs them, as ``nn.Sequential``)."""
    return [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]


def cascade(model: nn.Module, order: str = "top_down", seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Copies of ``model`` with one more layer re-initialised at each step: (layer name, copy) for each layer of
    ``randomised_layers`` from the output down ("top_down", Adebayo's cascade), from the input up ("bottom_up",
    Hedström et al.'s choice) or each layer alone in a fresh copy ("independent"). The same copy is yielded again,
    modified, by the cascading orders. Each layer's ``reset_parameters`` runs right after ``torch.manual_seed(seed)``
    (Quantus's generator seeds ``seed + 1``: our ``seed`` s equals its ``seed`` s - 1), inside ``fork_rng``."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
    layers = randomised_layers(model)
    if not layers:
        raise ValueError("the model has no layer with parameters to randomise")
    for name in layers:
        if not callable(getattr(model.get_submodule(name), "reset_parameters", None)):
            raise ValueError(f"layer {name!r} ({type(model.get_submodule(name)).__name__}) has parameters but no "
                             "reset_parameters(): it cannot be re-initialised")
    randomised = copy.deepcopy(model)
    for name in layers[::-1] if order == "top_down" else layers:
        if order == "independent":
            randomised = copy.deepcopy(model)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            randomised.get_submodule(name).reset_parameters()
        yield name, randomised


def cascade_maps(explain: Callable[[nn.Module], Tensor], model: nn.Module, order: str = "top_down", seed: int = 0,
                 last_only: bool = False) -> tuple[list[str], Tensor, list[Tensor]]:
    """(layers, ``explain(model)``, [``explain(copy)`` per step of ``cascade``]); ``last_only``: only the copy
    with every layer re-initialised is explained (one entry)."""
    original = explain(model)
    if last_only:
        *_, (name, last) = cascade(model, order, seed)
        return [name], original, [explain(last)]
    layers, maps = [], []
    for name, randomised in cascade(model, order, seed):
        layers.append(name)
        maps.append(explain(randomised))
    return layers, original, maps


def _cascading(order: str, audit: str) -> None:
    if order not in ("top_down", "bottom_up"):
        raise ValueError(f"{audit} compares the trained model with the fully randomised one: order must be "
                         f"'top_down' or 'bottom_up'; got {order!r}")


def randomization(methods, model: nn.Module, data, *, limit: int | None = 100, seed: int = 0,
                  model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Re-initialise the model's layers one by one from the output down (cumulatively, ``cascade``) and
    report the Spearman rank correlation of each map with the trained model's map, one row per depth.

    A method that explains the model should decorrelate as layers are randomized; one that stays
    near 1 is explaining the input, not the model. The user's model is never modified (copies).
    """
    call = call_arguments(locals())
    data = as_examples(data)
    x, y = data.x[:limit], data.y[:limit]
    layers = randomised_layers(model)[::-1]
    rows = []
    for name, method in named_methods(methods).items():
        found = {}

        def compute(depth, method=method, name=name, found=found):
            if not found:
                def explain(net):
                    return importance(method, net, x, y, desc=f"sanity {name}")
                _, original, maps = cascade_maps(explain, model, "top_down", seed)
                found.update(enumerate(spearman(original, m) for m in maps))
            r = found[depth - 1]
            return {**mean_interval(r).as_row("spearman"), "spearman_std": r.std().item(), "images": len(x)}

        for depth in range(1, len(layers) + 1):
            settings = {"model": model_name, "method": name, "randomized": "+".join(layers[:depth]), "depth": depth}
            rows.append(memo(store, "randomization", settings, {"call": call, "method": fingerprint(method, name)},
                             lambda depth=depth, compute=compute: compute(depth)))
    return AuditResult("randomization", rows)


def mprt(methods, model: nn.Module, data, *, order: str = "top_down", limit: int | None = None, seed: int = 0,
         model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Model parameter randomisation test (Adebayo et al. 2018) as a metric, Quantus's ``MPRT``: each image's map
    (|attribution| summed over channels) on the trained model and on each copy of ``cascade`` (``order``,
    default Adebayo's top-down cascade), compared by Spearman's rank correlation (ties at their mean rank, as
    scipy). The per-image score is the correlation with the fully randomised model (Quantus's
    ``return_last_correlation``); lower is better: a map that still looks the same once no weight is trained does
    not explain the model. Quantus's ``return_average_correlation`` averages the layers together with the
    original model's self-correlation (it skips a key "orig" that its dict names "original"); the per-layer
    means here (``spearman_by_layer``) are the layers' only.

    Rows, one per method: ``mprt`` with its 95% interval over images, ``mprt_each``, ``layers`` (in the order
    randomised), ``spearman_by_layer`` (mean over images after each step) and ``images``. Precomputed maps are
    refused (the method is re-run on each copy)."""
    call = call_arguments(locals())
    refuse_maps(methods, "mprt", "changed models")
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)

    def compute(method, name):
        layers, original, maps = cascade_maps(
            lambda net: explained_maps(method, net, x, classes, absolute_map, name), model, order, seed)
        similarity = torch.stack([spearman(original, m) for m in maps])                   # [L, N]
        return {**mean_interval(similarity[-1]).as_row("mprt"), "mprt_each": similarity[-1].tolist(),
                "layers": layers, "spearman_by_layer": similarity.mean(1).tolist(), "images": len(x)}

    label = {"model": model_name, "order": order, "seed": seed}
    return AuditResult("mprt", per_method(store, "mprt", methods, call, label, compute))


def smoothed_maps(method, model: nn.Module, x: Tensor, classes: Tensor, noise: list[Tensor], name: str) -> Tensor:
    """sMPRT's denoised map [N, H, W]: |mean over the perturbations of ``method``'s attribution| summed over
    channels, the perturbations being ``x`` + each tensor of ``noise`` (like ``x``) and ``x`` itself last
    (Quantus's ``explain_smooth_batch``: n - 1 noisy copies and the clean input)."""
    total = None
    for eps in [*noise, torch.zeros_like(x)]:
        attribution = explain_rows(method, model, x + eps, classes, lambda a: a, name).double()
        total = attribution if total is None else total + attribution
    return resize(finite_maps(absolute_map(total / (len(noise) + 1)).float(), name), x.shape[-2:])


def smprt(methods, model: nn.Module, data, *, samples: int = 50, noise: float = 0.1, order: str = "bottom_up",
          limit: int | None = None, seed: int = 0, model_name: str = "model",
          store: Store | None = None) -> AuditResult:
    """Smooth MPRT (Hedström et al. 2024), Quantus's ``SmoothMPRT`` with ``skip_layers=True``: as ``mprt``, but each
    map is averaged over ``samples`` inputs, ``samples`` - 1 of them x + N(0, sigma^2) with sigma = ``noise`` x (max
    - min of the image) and x itself (``smoothed_maps``), before the Spearman correlation of the trained model's
    map with the map once every layer is re-initialised (``order``: bottom-up by default, as Hedström et al. and
    Quantus). The noise is drawn once per image and sample (seeded) and reused for both models, so the
    comparison sees the model change and not new noise (Quantus draws new noise for each model). Lower is better.

    Rows, one per method: ``smprt`` with its 95% interval, ``smprt_each``, ``images``. Precomputed maps refused."""
    call = call_arguments(locals())
    refuse_maps(methods, "smprt", "changed models")
    _cascading(order, "smprt")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive number of inputs to average over; got {samples!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative share of each image's range; got {noise!r}")
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)
    draws = GaussianNoise(seed, len(x), x.shape[1:], x.dtype)
    scale = noise_scale(x, float(noise), None).view(-1, *[1] * (x.ndim - 1))
    rows = torch.arange(len(x))
    eps = [draws.rows(rows, torch.full_like(rows, k)).to(x.device) * scale for k in range(samples - 1)]

    def compute(method, name):
        _, original, maps = cascade_maps(lambda net: smoothed_maps(method, net, x, classes, eps, name), model, order,
                                         seed, last_only=True)
        similarity = spearman(original, maps[-1])
        return {**mean_interval(similarity).as_row("smprt"), "smprt_each": similarity.tolist(), "images": len(x)}

    label = {"model": model_name, "samples": samples, "noise": noise, "order": order, "seed": seed}
    return AuditResult("smprt", per_method(store, "smprt", methods, call, label, compute))


def histogram_entropy(maps: Tensor, bins: int = 100) -> Tensor:
    """Entropy [N] (nats, float64) of the histogram of each map [N, ...] in ``bins`` equal bins between its minimum
    and maximum (``numpy.histogram``, Quantus's ``discrete_entropy``): 0 for a constant map."""
    values = []
    for row in maps.flatten(1).detach().double().cpu().numpy():
        counts = np.histogram(row, bins=bins)[0].astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        values.append(float(-(p * np.log(p)).sum()))
    return torch.tensor(values, dtype=torch.float64)


def _signed(attribution: Tensor) -> Tensor:
    return heatmap(attribution, reduce="sum")


def emprt(methods, model: nn.Module, data, *, bins: int = 100, order: str = "bottom_up", limit: int | None = None,
          seed: int = 0, model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Efficient MPRT (Hedström et al. 2024), Quantus's ``EfficientMPRT``: the relative rise (H_random - H) / H of a
    map's complexity once every layer is re-initialised (``order``: bottom-up, as theirs), H being the entropy of
    the histogram of the map's values (``histogram_entropy``, ``bins`` equal bins: Quantus's default 100; the
    signed attribution summed over channels, Quantus's abs=False). Higher is better: explaining a random model
    should give a noisier map. A map that is constant on the trained model (H = 0, e.g. a Grad-CAM of zeros)
    has no relative rise: it scores 0, the controls' score, as a flat map carries no evidence (as
    ``faithfulness_correlation`` scores a constant side); Quantus divides by 0 there (inf or NaN).

    Rows, one per method: ``emprt`` with its 95% interval, ``emprt_each``, ``entropy_trained`` and
    ``entropy_random`` (means), ``images``. Precomputed maps refused."""
    call = call_arguments(locals())
    refuse_maps(methods, "emprt", "changed models")
    _cascading(order, "emprt")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer of at least 2; got {bins!r}")
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)

    def compute(method, name):
        _, original, maps = cascade_maps(lambda net: explained_maps(method, net, x, classes, _signed, name), model,
                                         order, seed, last_only=True)
        trained, random = histogram_entropy(original, bins), histogram_entropy(maps[-1], bins)
        rise = torch.where(trained > 0, (random - trained) / trained.clamp(min=1e-300), torch.zeros_like(trained))
        return {**mean_interval(rise).as_row("emprt"), "emprt_each": rise.tolist(),
                "entropy_trained": trained.mean().item(), "entropy_random": random.mean().item(), "images": len(x)}

    label = {"model": model_name, "bins": bins, "order": order, "seed": seed}
    return AuditResult("emprt", per_method(store, "emprt", methods, call, label, compute))


SSIM_WINDOW = 7                      # skimage's structural_similarity default (uniform window)


def ssim(a: Tensor, b: Tensor, window: int = SSIM_WINDOW) -> Tensor:
    """Mean structural similarity [N] (Wang et al. 2004) of maps ``a`` and ``b`` [N, L] or [N, H, W], as
    ``skimage.metrics.structural_similarity`` with its defaults (a uniform ``window``-wide window, sample
    covariances, K1 = 0.01, K2 = 0.03, the mean over the positions where the window fits) and Quantus's data range
    (max - min over both maps of a pair). Two equal constant maps score 1."""
    if a.shape != b.shape or a.ndim not in (2, 3) or min(a.shape[1:]) < window:
        raise ValueError(f"ssim needs two maps of the same shape [N, L] or [N, H, W], each side at least {window}; "
                         f"got {list(a.shape)} and {list(b.shape)}")
    a, b = a.double(), b.double()
    pool = (lambda t: F.avg_pool1d(t[:, None], window, 1)) if a.ndim == 2 else \
        (lambda t: F.avg_pool2d(t[:, None], window, 1))
    both = torch.cat([a.flatten(1), b.flatten(1)], 1)
    span = (both.amax(1) - both.amin(1)).view(-1, *[1] * (a.ndim))
    mean_a, mean_b = pool(a), pool(b)
    covariance = window ** (a.ndim - 1) / (window ** (a.ndim - 1) - 1)
    var_a = covariance * (pool(a * a) - mean_a ** 2)
    var_b = covariance * (pool(b * b) - mean_b ** 2)
    cov = covariance * (pool(a * b) - mean_a * mean_b)
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2))
    return torch.where(span.flatten() > 0, index.flatten(1).mean(1), torch.ones(len(a), dtype=torch.float64))


def _by_max(maps: Tensor) -> Tensor:
    top = maps.flatten(1).abs().amax(1).view(-1, *[1] * (maps.ndim - 1))
    return torch.where(top > 0, maps / top.clamp(min=1e-300), maps)


def off_classes(classes: Tensor, count: int, seed: int = 0) -> Tensor:
    """A class other than ``classes[i]`` for each image, uniform among the ``count`` - 1 others: Quantus's draw
    (``np.random.seed(seed)``, ``randint(0, count - 1, N)`` indexing the other classes in order), from its own
    ``RandomState`` so numpy's global generator is left alone."""
    if count < 2:
        raise ValueError(f"random_logit needs a model with at least 2 classes; it has {count}")
    index = torch.from_numpy(np.random.RandomState(seed).randint(0, count - 1, len(classes))).to(classes.device)
    return index + (index >= classes).long()


def random_logit(methods, model: nn.Module, data, *, limit: int | None = None, seed: int = 0,
                 model_name: str = "model", store: Store | None = None) -> AuditResult:
    """Random Logit (Sixt et al. 2020): the SSIM (``ssim``, 2-D) of each image's map for its class and for a random
    other class (``off_classes``, seeded), maps as |attribution| summed over channels, each divided by its maximum
    (Quantus's normalise_by_max, which divides by the batch's maximum instead). Lower is better: a map that does not
    change with the class explained ignores the output it claims to explain. Where we differ from Quantus 0.6.0 on
    purpose: Quantus flattens the maps before its SSIM, so its window slides along rows of pixels (a 1-D SSIM of the
    raster order); ours is the 2-D SSIM Sixt et al. and skimage mean.

    Rows, one per method: ``random_logit`` with its 95% interval, ``random_logit_each``, ``images``. Precomputed
    maps refused."""
    call = call_arguments(locals())
    refuse_maps(methods, "random_logit", "another class")
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)
    with prepared(model), torch.no_grad():
        count = class_logits(run_model(model, x[:1], torch.zeros(1, dtype=torch.long, device=x.device))).shape[1]
    others = off_classes(classes, count, seed)

    def compute(method, name):
        same = _by_max(explained_maps(method, model, x, classes, absolute_map, name))
        other = _by_max(explained_maps(method, model, x, others, absolute_map, name))
        values = ssim(same, other)
        return {**mean_interval(values).as_row("random_logit"), "random_logit_each": values.tolist(),
                "images": len(x)}

    label = {"model": model_name, "seed": seed}
    return AuditResult("random_logit", per_method(store, "random_logit", methods, call, label, compute))
