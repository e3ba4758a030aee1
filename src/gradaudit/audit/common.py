"""Pieces every audit shares: naming methods, importance maps over a dataset, ranking, keyed rows (memo)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import NonFiniteAttribution
from ..keys import fingerprint, key
from ..maps import heatmap
from ..methods import LayerMethod, Method
from ..store import Store


def method_name(method: Method) -> str:
    """A short readable name: the class, plus the layer for layer methods."""
    name = type(method).__name__
    return f"{name}({method.layer})" if isinstance(method, LayerMethod) and isinstance(method.layer, str) else name


def named_methods(methods) -> dict[str, Method]:
    """Accept one method, a list of methods, or a dict name -> method."""
    if isinstance(methods, Method):
        return {method_name(methods): methods}
    if isinstance(methods, Mapping):
        return dict(methods)
    return {method_name(m): m for m in methods}


def refuse_maps(methods, audit: str, reruns: str) -> None:
    """Refuse precomputed maps where an audit re-runs each method (``reruns``: on what, for the message)."""
    for name, method in named_methods(methods).items():
        if isinstance(method, Tensor):
            raise ValueError(f"{audit} re-runs each method on {reruns}, so precomputed maps cannot be used; pass the "
                             f"method itself for {name!r}")


def explain_rows(method: Method, model: nn.Module, x: Tensor, targets: Tensor | None,
                 pool: Callable[[Tensor], Tensor], name: str, batch: int = 200, desc: str = "") -> Tensor:
    """``pool`` of ``method``'s attribution of every row of ``x`` [N, ...] for ``targets`` [N] (None: predicted),
    explained ``batch`` rows at a time and concatenated ([N, ...]). A non-finite attribution is a
    ValueError naming ``name`` and the row of ``x`` it belongs to."""
    parts = []
    for start in tqdm(range(0, len(x), batch), desc=desc or "explaining", leave=False, mininterval=1.0, disable=None):
        target = None if targets is None else targets[start:start + batch]
        try:
            attribution = method(model, x[start:start + batch], target)
        except NonFiniteAttribution as error:
            raise ValueError(f"{name} gave a non-finite attribution for image {start + error.example} of "
                             f"{len(x)}; nothing was stored") from error
        parts.append(pool(attribution.detach()))
    return torch.cat(parts)


def importance(method: Method, model: nn.Module, x: Tensor, y: Tensor | None, batch: int = 200,
               desc: str = "", absolute: bool = True) -> Tensor:
    """Per-pixel importance [N, H, W] for every image of ``x`` [N, C, H, W], explained for labels
    ``y`` (None: predicted): ``heatmap`` of the attribution (|.| summed over channels for
    input-space maps), and its absolute value unless ``absolute=False`` (the map as the method
    gives it: a signed layer map stays signed)."""
    maps = explain_rows(method, model, x, y, heatmap, method_name(method), batch, desc).float()
    return finite_maps(maps.abs() if absolute else maps, method_name(method))


def finite_maps(maps: Tensor, name: str) -> Tensor:
    """``maps`` [N, ...] as they are, or a ValueError naming ``name`` and the first row holding a NaN or infinity."""
    bad = ~torch.isfinite(maps.flatten(1)).all(1)
    if bad.any():
        raise ValueError(f"{name} gave a non-finite attribution for image {int(bad.nonzero()[0])} "
                         f"({int(bad.sum())} of {len(maps)} images); nothing was stored")
    return maps


def rank_pixels(scores: Tensor, seed: int = 0) -> Tensor:
    """Rank [N, P] of each pixel within its image (0 = least important); ties broken at random
    so a flat map (e.g. Grad-CAM's zeros) does not favour the image's top-left corner."""
    flat = scores.flatten(1)
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.rand(flat.shape, generator=generator).argsort(1)
    order = shuffle.gather(1, flat.gather(1, shuffle).argsort(dim=1, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order).contiguous())
    return ranks


def keep_masks(ranks: Tensor, fraction: float, top: bool) -> Tensor:
    """Bool [N, P]: the ``fraction`` of pixels with the highest (top) or lowest ranks kept."""
    count = int(round(fraction * ranks.shape[1]))
    return ranks >= ranks.shape[1] - count if top else ranks < count


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Per-row Pearson correlation of [N, ...] tensors (0 where a row is constant)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > 0, (a * b).sum(1) / denominator.clamp(min=1e-300), torch.zeros_like(denominator))


def average_ranks(values: Tensor) -> Tensor:
    """Ranks [N, P] (float64, 0-based) of each row of ``values`` [N, ...]; tied values share their mean rank."""
    flat = values.flatten(1)
    ordered, order = flat.sort(dim=1)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(1) - 1
    position = torch.arange(flat.shape[1], dtype=torch.float64).expand_as(group)
    total = torch.zeros_like(position).scatter_add_(1, group, position)
    count = torch.zeros_like(position).scatter_add_(1, group, torch.ones_like(position))
    mean_rank = (total / count.clamp(min=1)).gather(1, group)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-row Spearman rank correlation of [N, ...] tensors, ties at their mean rank (as scipy)."""
    return pearson(average_ranks(a), average_ranks(b))


CONTROLS = ("Random", "Sobel")
"""The names of the control maps, blind to the model, that ``metric_audit`` and the figures expect by default."""

HOW = frozenset({"store", "progress", "executor", "methods"})
"""Arguments that say how an audit runs or what it iterates over, not what a unit's numbers are."""


def call_arguments(arguments: dict, units: tuple[str, ...] = ()) -> dict:
    """The part of an audit call that keys its rows: ``arguments`` is the audit's ``locals()`` taken as its
    first statement (so every argument, defaults included, is there), less ``HOW`` and ``units`` (arguments
    that enumerate the units, each of which keys its own value), each fingerprinted once (``keys.fingerprint``:
    data and tensors by content, the model by its weights, callables by name and code)."""
    return {k: fingerprint(v, k) for k, v in arguments.items() if k not in HOW and k not in units}


def first_non_finite(value, where: str = "") -> str | None:
    """Where the first NaN (or infinity, outside an interval's ``_low``/``_high`` bound) in a row sits, or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = first_non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = first_non_finite(v, f"{where}[{i}]")
            if found:
                return found
    elif isinstance(value, float) and (math.isnan(value) or (math.isinf(value)
                                                             and not where.endswith(("_low", "_high")))):
        return f"{where} = {value}"
    return None


def stored(store: Store | None, audit: str, label: dict, arguments: dict) -> dict | None:
    """The row ``memo`` would serve for this unit, or None when ``store`` holds none (or is None)."""
    return None if store is None else store.get(audit, key(audit, {"label": label, **arguments}))


def memo(store: Store | None, audit: str, label: dict, arguments: dict, compute: Callable[[], dict]) -> dict:
    """The stored row of one unit of ``audit``, or ``compute()`` stored at once. The row's key is derived
    from ``label`` (readable fields kept in the row: model name, method name, fraction) and ``arguments``
    (everything else that can change its numbers: ``call_arguments`` and the unit's own method, seed, ...).
    A computed row holding a NaN (or an infinite value) is neither stored nor returned: a ValueError
    names the unit and the first bad entry."""
    unit = key(audit, {"label": label, **arguments})
    found = None if store is None else store.get(audit, unit)
    if found is not None:
        return found
    row = {**label, **compute()}
    bad = first_non_finite(row)
    if bad is not None:
        raise ValueError(f"{audit} for {', '.join(f'{k} {v}' for k, v in label.items())} gave a non-finite number "
                         f"({bad}); it is not stored")
    if store is not None:
        store.put(audit, unit, row)
    return row


def per_method(store: Store | None, audit: str, methods, call: dict, label: dict,
               compute: Callable[[object, str], dict]) -> list[dict]:
    """The rows of an audit with one unit per method: ``memo`` of ``compute(method, name)`` under ``label``
    plus the method's name, keyed by ``call`` (``call_arguments``) and the method's full configuration
    (precomputed maps by content)."""
    return [memo(store, audit, {"model": label.get("model"), "method": name} | label,
                 {"call": call, "method": fingerprint(method, name)},
                 lambda method=method, name=name: compute(method, name))
            for name, method in named_methods(methods).items()]
