"""Complexity of a map: Sparseness (Chalasani et al. 2020) and Complexity (Bhatt et al. 2020), as Quantus 0.6.0's
``Sparseness`` and ``Complexity`` compute them on |attribution|.

Both read only the map, never the model beyond explaining: a concise explanation puts its mass on few pixels.
They take methods as every metric in ``metrics.py`` does, including precomputed maps [N, H, W], and explain each
image's label (the prediction on the clean image for multi-hot labels: ``explained_classes``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..store import Store
from .common import call_arguments, per_method
from .metrics import absolute_map, explained_classes, explained_maps, image_data
from .results import AuditResult
from .stats import mean_interval


def gini(maps: Tensor) -> Tensor:
    """Gini index [N] (float64) of each non-negative map [N, ...] (Chalasani et al. 2020, eq. 7; Hurley & Rickard
    2009): with the n values sorted ascending, sum_k (2k - n - 1) a_(k) / (n sum_k a_(k)). 0 when every value
    is equal (an all-zero map included: no pixel stands out), 1 - 1/n for a one-hot map. Quantus adds 1e-7 to
    every value first (so its zero map is 0 too), which moves other maps by about n 1e-7 / sum a."""
    flat = maps.flatten(1).double().sort(1).values
    n = flat.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=flat.device) - n - 1
    total = flat.sum(1)
    return torch.where(total > 0, (flat * weights).sum(1) / (n * total.clamp(min=1e-300)), torch.zeros_like(total))


def entropy(maps: Tensor) -> Tensor:
    """Shannon entropy [N] (nats, float64) of each non-negative map [N, ...] read as a distribution p = a / sum a
    (Bhatt et al. 2020, eq. 4), 0 log 0 = 0: log n for a uniform map, 0 for a one-hot map. An all-zero map, the
    limit of a uniform one, scores log n (Quantus divides 0 by 0 there: NaN)."""
    flat = maps.flatten(1).double()
    total = flat.sum(1, keepdim=True)
    p = torch.where(total > 0, flat / total.clamp(min=1e-300), torch.full_like(flat, 1 / flat.shape[1]))
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)


def _map_audit(audit: str, score, methods, model: nn.Module, data, call: dict, limit, model_name, store):
    data, x = image_data(data, limit)
    classes = explained_classes(model, data, x)

    def compute(method, name):
        values = score(explained_maps(method, model, x, classes, absolute_map, name))
        return {**mean_interval(values).as_row(audit), f"{audit}_each": values.tolist(), "images": len(x),
                "pixels": x.shape[2] * x.shape[3]}

    return AuditResult(audit, per_method(store, audit, methods, call, {"model": model_name}, compute))


def sparseness(methods, model: nn.Module, data, *, limit: int | None = None, model_name: str = "model",
               store: Store | None = None) -> AuditResult:
    """Sparseness (Chalasani et al. 2020): the Gini index (``gini``) of each image's map (|attribution| summed over
    channels; precomputed maps as given), in [0, 1 - 1/n]; higher is sparser. Equal to Quantus's ``Sparseness``
    on single-channel images up to its 1e-7 offset (Quantus ranks every channel element apart). Rows, one per
    method: ``sparseness`` with its 95% interval over images, ``sparseness_each``, ``images``, ``pixels``."""
    return _map_audit("sparseness", gini, methods, model, data, call_arguments(locals()), limit, model_name, store)


def complexity(methods, model: nn.Module, data, *, limit: int | None = None, model_name: str = "model",
               store: Store | None = None) -> AuditResult:
    """Complexity (Bhatt et al. 2020): the entropy (``entropy``) of each image's map (|attribution| summed over
    channels; precomputed maps as given) as a distribution over its pixels, in [0, log n] nats; lower is less
    complex. Equal to Quantus's ``Complexity`` on single-channel images (up to its 1e-12 inside the log). Rows,
    one per method: ``complexity`` with its 95% interval, ``complexity_each``, ``images``, ``pixels`` (n; log n
    is the ceiling, ``math.log(pixels)``)."""
    return _map_audit("complexity", entropy, methods, model, data, call_arguments(locals()), limit, model_name, store)

