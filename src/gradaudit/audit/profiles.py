"""Neuron activation profiles: which classes each channel of a layer responds to.

The global technique of the COVID-19 chest X-ray interpretability study (several trained
models compared side by side): for every class (or label of a multilabel model), the mean
activation of each channel of ``layer`` over the examples of that class, spatially averaged.
Each channel's profile is then min-max normalised across classes (1 = the class it fires most
for, 0 = the least), so channels of different scales compare; two classes whose normalised
profiles are close are ones the layer hardly tells apart.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.inputs import as_examples
from ..engine import observe, prepared, resolve_layer
from ..store import Store
from .common import call_arguments, memo
from .results import AuditResult


def _membership(y: Tensor) -> Tensor:
    """Bool [N, K]: example n belongs to class (or carries label) k. y: class indices [N] or multi-hot [N, K]."""
    if y.ndim == 2:
        return y.bool()
    return torch.nn.functional.one_hot(y.long(), int(y.max()) + 1).bool()


def class_profiles(model: nn.Module, x: Tensor, y: Tensor, layer, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Raw profiles [K, C] (mean spatially averaged activation of each channel over each class's
    examples) and the number of examples per class [K]; classes without examples get NaN."""
    name, module = resolve_layer(model, layer)
    per_example = []
    with prepared(model):
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            rows = torch.arange(start, start + len(chunk), device=x.device)
            activation = observe(model, chunk, rows, [(name, module)])[0]
            per_example.append(activation.flatten(2).mean(2) if activation.ndim > 2 else activation)
    channels = torch.cat(per_example).double()                                   # [N, C]
    members = _membership(y).to(channels.device).double()                         # [N, K]
    counts = members.sum(0)
    return (members.T @ channels) / counts.unsqueeze(1), counts


def normalised(profiles: Tensor) -> Tensor:
    """Each channel min-max scaled across the classes with examples: [K, C] in [0, 1]."""
    low, high = profiles.nan_to_num(math.inf).amin(0), profiles.nan_to_num(-math.inf).amax(0)
    return (profiles - low) / (high - low).clamp_min(1e-12)


def activation_profiles(model: nn.Module, data, layer, *, limit: int | None = None, batch_size: int = 256,
                        model_name: str = "model", store: Store | None = None) -> AuditResult:
    """One row per class: its normalised ``profile`` [C], ``raw`` profile, number of ``examples``,
    and its ``nearest`` class with the root-mean-square ``nearest_distance`` between their
    normalised profiles (0: the layer responds to both alike; 1: opposite extremes everywhere).

    data: any dataset (see ``data.as_examples``) with labels: class indices [N] or, for a
        multilabel model, multi-hot labels [N, K]. limit: the first ``limit`` examples.
    """
    call = call_arguments(locals())
    examples = as_examples(data, "data")
    x, y = examples.x[:limit], examples.y[:limit]
    layer_name = resolve_layer(model, layer)[0]
    label = {"model": model_name, "layer": layer_name}
    computed: list[dict] = []

    def compute(k: int) -> dict:
        if not computed:
            computed.extend(_profile_rows(model, x, y, layer, batch_size))
        return computed[k]

    rows = [memo(store, "activation_profiles", {**label, "class": k}, {"call": call}, lambda k=k: compute(k))
            for k in range(int(_membership(y).shape[1]))]
    return AuditResult("activation_profiles", rows)


def _profile_rows(model: nn.Module, x: Tensor, y: Tensor, layer, batch_size: int) -> list[dict]:
    """One dict per class: its profiles, example count and nearest class (``activation_profiles``'s rows)."""
    labels = int(_membership(y).shape[1])
    raw, counts = class_profiles(model, x, y, layer, batch_size)
    scaled = normalised(raw)
    present = counts > 0
    distance = torch.cdist(scaled.nan_to_num(), scaled.nan_to_num()) / math.sqrt(scaled.shape[1])
    distance[~present] = math.inf
    distance[:, ~present] = math.inf
    distance.fill_diagonal_(math.inf)
    rows = []
    for k in range(labels):
        nearest = int(distance[k].argmin()) if present[k] else None
        rows.append({"examples": int(counts[k]), "profile": scaled[k].tolist() if present[k] else None,
                     "raw": raw[k].tolist() if present[k] else None, "nearest": nearest,
                     "nearest_distance": distance[k, nearest].item() if nearest is not None and present[nearest]
                     else None})
    return rows
