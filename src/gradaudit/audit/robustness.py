"""Robustness of a map to small input changes: the Local Lipschitz Estimate (Alvarez-Melis & Jaakkola 2018) and
Relative Input Stability (Agarwal et al. 2022), Quantus 0.6.0's ``LocalLipschitzEstimate`` and
``RelativeInputStability`` given the same perturbations.

Both take, per image, a maximum over perturbed copies x' = x + d, d uniform in [-r, r] per element (the L-inf
ball of radius r, drawn as ``sensitivity_max`` draws it), of how far the attribution moves relative to how far
the input moved. Lower is better. Maps blind to the model (the metric audit's controls) are stable by
construction, so the metric audit reports and does not judge them there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..engine import auto_rows, prepared
from ..engine.backprop import predicted_classes
from ..store import Store
from .common import call_arguments, per_method, refuse_maps
from .metrics import explained_classes, image_data
from .results import AuditResult
from .sensitivity_max import uniform_noise
from .stats import mean_interval

EPS_MIN = 1e-6                       # Agarwal et al.'s and Quantus's epsilon_min


def perturbed_scores(method, model: nn.Module, x: Tensor, classes: Tensor, noise: Callable[[Tensor], Tensor],
                     samples: int, score: Callable[..., Tensor], rows: int | None = None) -> Tensor:
    """score(x [k, ...], x' [k, S, ...], a [k, ...], a' [k, S, ...], kept bool [k, S]) [k] for every image of ``x``
    [N, ...], where x' = x + ``noise(examples)`` (S = ``samples`` per image), a and a' are ``method``'s
    attributions of x and x' for the image's class (``classes`` [N]) and kept says whether the model predicts on
    x' the class it predicts on x. Images go in chunks of ``rows`` // (S + 1) (None: one memory-bounded pass):
    one call of the method explains a chunk's clean images and all their copies. [N] float64."""
    with prepared(model):
        rows = auto_rows(model, x[:1]) if rows is None else rows
    images = max(1, rows // (samples + 1))
    scores = []
    for start in range(0, len(x), images):
        examples = torch.arange(start, min(start + images, len(x)), device=x.device)
        clean, k = x[examples], len(examples)
        moved = clean[:, None] + noise(examples)
        flat = moved.flatten(0, 1)
        targets = torch.cat([classes[examples], classes[examples].repeat_interleave(samples)])
        explained = method(model, torch.cat([clean, flat]), targets).detach().double()
        with prepared(model):
            predicted = predicted_classes(model, torch.cat([clean, flat]), rows)
        kept = predicted[k:].view(k, samples) == predicted[:k, None]
        scores.append(score(clean.double(), moved.double(), explained[:k], explained[k:].view(k, samples,
                                                                                              *explained.shape[1:]),
                            kept))
    return torch.cat(scores)


def lipschitz_score(x: Tensor, moved: Tensor, a: Tensor, a_moved: Tensor, kept: Tensor) -> Tensor:
    """Alvarez-Melis & Jaakkola's estimate [k]: max over the copies of ||a - a'||_2 / ||x - x'||_2 (every element)."""
    change = (a_moved - a[:, None]).flatten(2).norm(dim=2)
    return (change / (moved - x[:, None]).flatten(2).norm(dim=2)).amax(1)


def stability_score(x: Tensor, moved: Tensor, a: Tensor, a_moved: Tensor, kept: Tensor) -> Tensor:
    """Agarwal et al.'s RIS [k] (eq. 2): max over the copies that keep the prediction of
    ||(a - a') / a||_2 / max(||(x - x') / x||_2, eps_min), a zero denominator element replaced by eps_min (as
    theirs and Quantus's). x itself belongs to the neighbourhood and scores 0, so an image none of whose copies
    keeps the prediction scores 0."""
    def relative(base: Tensor, other: Tensor) -> Tensor:
        base = base[:, None]
        return ((base - other) / (base + (base == 0) * EPS_MIN)).flatten(2).norm(dim=2)

    ratio = relative(a, a_moved) / relative(x, moved).clamp(min=EPS_MIN)
    return torch.where(kept, ratio, torch.zeros_like(ratio)).amax(1)


def _robustness(audit: str, score, call: dict, methods, model, data, radius, samples, limit, seed, model_name,
                store) -> AuditResult:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive number of perturbations; got {samples!r}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise ValueError(f"radius must be a positive number (the noise's L-inf radius); got {radius!r}")
    refuse_maps(methods, audit, "perturbed copies of the images")
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)
    noise = uniform_noise(x, samples, float(radius), seed)

    def compute(method, name):
        values = perturbed_scores(method, model, x, classes, noise, samples, score)
        return {**mean_interval(values).as_row(audit), f"{audit}_each": values.tolist(), "images": len(x)}

    label = {"model": model_name, "radius": radius, "samples": samples, "seed": seed}
    return AuditResult(audit, per_method(store, audit, methods, call, label, compute))


def local_lipschitz(methods, model: nn.Module, data, *, radius: float = 0.1, samples: int = 20,
                    limit: int | None = None, seed: int = 0, model_name: str = "model",
                    store: Store | None = None) -> AuditResult:
    """Local Lipschitz Estimate (Alvarez-Melis & Jaakkola 2018, eq. 5): per image, max over ``samples`` copies x'
    in the L-inf ball of ``radius`` around x of ||a(x) - a(x')||_2 / ||x - x'||_2, a being the method's own
    attribution for the image's class (``perturbed_scores``, ``lipschitz_score``). The paper maximises over the
    ball; sampling it, as Quantus does, gives a lower bound. Where we differ from Quantus 0.6.0 on purpose: its
    copies are x + N(0, 0.1^2) (unbounded, not a ball) and it divides each map by its batch's maximum first
    (``normalise=True``), which makes the estimate depend on the other images; here the attributions are
    compared as the method gives them. Lower is better.

    Rows, one per method: ``local_lipschitz`` with its 95% interval, ``local_lipschitz_each``, ``images``."""
    return _robustness("local_lipschitz", lipschitz_score, call_arguments(locals()), methods, model, data, radius,
                       samples, limit, seed, model_name, store)


def relative_input_stability(methods, model: nn.Module, data, *, radius: float = 0.1, samples: int = 20,
                             limit: int | None = None, seed: int = 0, model_name: str = "model",
                             store: Store | None = None) -> AuditResult:
    """Relative Input Stability (Agarwal et al. 2022, eq. 2): per image, max over the copies x' (as
    ``local_lipschitz``'s) on which the model keeps its prediction of the relative change of the attribution over
    the relative change of the input (``stability_score``). Where we differ from Quantus 0.6.0 on purpose: Quantus
    marks a copy that changes the prediction NaN and then takes ``np.max``, so one such copy makes the image NaN;
    here those copies are left out of the maximum, as the paper's constraint says. Quantus's default copies are
    x + U[0.02, 0.2] (every element pushed up: one side of the neighbourhood); ours are the ball. Lower is better.

    Rows, one per method: ``relative_input_stability`` with its 95% interval, ``relative_input_stability_each``,
    ``images``."""
    return _robustness("relative_input_stability", stability_score, call_arguments(locals()), methods, model, data,
                       radius, samples, limit, seed, model_name, store)
