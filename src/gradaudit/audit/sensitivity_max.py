"""Sensitivity-max (Yeh et al. 2019): how far an explanation moves under tiny input noise, as Captum's
``metrics.sensitivity_max`` defines it.

For each image x, with phi the method's attribution for a fixed class,
max over ``samples`` draws d ~ U[-r, r] (each input element independently) of
||phi(x + d) - phi(x)|| / ||phi(x)||, Frobenius norms (Captum's default ``norm_ord="fro"``; where
||phi(x)|| = 0 the denominator is 1, as Captum's). Lower is better. Where we differ from the references
on purpose:

- Captum calls the explainer under ``torch.no_grad`` (captum #595): an explainer that takes its own
  gradients fails there. Here each method runs as it normally does, with gradients.
- The authors' code divides its running maximum by the norm at every step, so for more than one sample
  it is not a maximum; Captum's (and ours) is. The authors use r = 0.2 and 50 samples; Captum's defaults,
  r = 0.02 and 10 samples, are ours.
- Quantus's early ``MaxSensitivity`` divided by ||x|| instead of ||phi(x)|| (quantus #288).

As Captum's default perturbation, x + d is not clipped to the pixel range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..engine import auto_rows, prepared
from ..store import Store
from .common import call_arguments, per_method, refuse_maps
from .metrics import explained_classes, image_data
from .results import AuditResult
from .stats import mean_interval


def uniform_noise(x: Tensor, samples: int, radius: float, seed: int = 0) -> Callable[[Tensor], Tensor]:
    """Captum's default perturbation for ``sensitivity_max``: ``noise(examples [k]) -> d [k, samples, ...]``,
    each element of d uniform in [-``radius``, ``radius``]. Image i's draws come from its own generator,
    seeded by (``seed``, i), so they do not depend on how the images are chunked."""

    def noise(examples: Tensor) -> Tensor:
        draws = []
        for example in examples.tolist():
            state = int(np.random.SeedSequence([seed, example]).generate_state(1)[0])
            generator = torch.Generator().manual_seed(state)
            draws.append(torch.rand(samples, *x.shape[1:], generator=generator, dtype=torch.float64))
        return ((torch.stack(draws) * 2 - 1) * radius).to(x.device, x.dtype)

    return noise


def sensitivity_scores(method, model: nn.Module, x: Tensor, classes: Tensor, noise: Callable[[Tensor], Tensor],
                       samples: int, rows: int | None = None) -> Tensor:
    """Sensitivity-max [N] (float64) of ``method``'s attributions of the inputs ``x`` [N, ...] for ``classes``
    [N]: max over the ``samples`` perturbations x + d of ||phi(x + d) - phi(x)||_F / ||phi(x)||_F (1 in place
    of a zero denominator). ``noise(examples [k])`` gives the perturbations d [k, samples, ...] of those
    images. The images go in chunks of k = ``rows`` // (samples + 1) (at least 1; ``rows`` None: as many rows
    as one memory-bounded pass takes): one call of the method, with gradients, explains a chunk's clean
    images and all their perturbed copies together, each copy for its image's class. Equals Captum's
    ``sensitivity_max`` given the same perturbations and an explainer that works under no_grad."""
    if rows is None:
        with prepared(model):
            rows = auto_rows(model, x[:1])
    images = max(1, rows // (samples + 1))
    scores = []
    for start in range(0, len(x), images):
        examples = torch.arange(start, min(start + images, len(x)), device=x.device)
        clean, k = x[examples], len(examples)
        perturbed = (clean[:, None] + noise(examples)).flatten(0, 1)
        targets = torch.cat([classes[examples], classes[examples].repeat_interleave(samples)])
        explained = method(model, torch.cat([clean, perturbed]), targets).detach()
        base, moved = explained[:k].flatten(1), explained[k:].reshape(k, samples, -1)
        change = (moved - base[:, None]).double().norm(dim=2)
        norm = base.double().norm(dim=1, keepdim=True)
        scores.append((change / torch.where(norm == 0, torch.ones_like(norm), norm)).amax(1))
    return torch.cat(scores)


def sensitivity_max(methods, model: nn.Module, data, *, radius: float = 0.02, samples: int = 10,
                    limit: int | None = None, seed: int = 0, model_name: str = "model",
                    store: Store | None = None) -> AuditResult:
    """Sensitivity-max (Yeh et al. 2019; Captum's ``metrics.sensitivity_max``, see the module docstring) of
    each method on the first ``limit`` images of ``data``: max over ``samples`` draws of uniform noise of
    L-inf radius ``radius`` (seeded by ``seed``) of the relative Frobenius change of the attribution. The
    method's own output is compared (input-shaped, or a layer method's map), and the class explained is the
    same for an image and its perturbed copies: its label (the class the model predicts on the clean image
    when the data has multi-hot labels), so the metric measures the explanation's stability, not a change
    of the predicted class. The metric re-runs each method, so precomputed maps are refused.

    Rows, one per method: ``sensitivity_max`` (mean over images with its 95% interval; lower is more stable),
    ``sensitivity_max_each`` (the per-image values) and ``images``.
    """
    call = call_arguments(locals())
    data, x = image_data(data, limit)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive number of perturbations; got {samples!r}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius >= 0:
        raise ValueError(f"radius must be a non-negative number (the noise's L-inf radius); got {radius!r}")
    refuse_maps(methods, "sensitivity_max", "perturbed copies of the images")
    classes = explained_classes(model, data, x)
    noise = uniform_noise(x, samples, float(radius), seed)

    def compute(method, name):
        values = sensitivity_scores(method, model, x, classes, noise, samples)
        return {**mean_interval(values).as_row("sensitivity_max"), "sensitivity_max_each": values.tolist(),
                "images": len(x)}

    label = {"model": model_name, "radius": radius, "samples": samples, "seed": seed}
    return AuditResult("sensitivity_max", per_method(store, "sensitivity_max", methods, call, label, compute))
