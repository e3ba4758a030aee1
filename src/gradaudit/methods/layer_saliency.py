"""The grid of "There and Back Again" (Rebuffi et al. 2020): virtual identity layer x aggregation.

A virtual identity layer inserted after ``layer`` has parameter gradients at each location u
built from the activation a_u and the gradient g_u (C values each); an aggregation turns them
into one number per location. The C x C (or 9C x C) products of the conv virtual layers are
never materialised: their sum, norm, positive-part norm and max follow from O(C) statistics
of each factor (see METHODS.md), so every cell costs O(C) per location. On 1-D and 3-D feature maps
the 3x3 neighbourhoods of conv3x3 and depthwise3x3 are 3 and 3x3x3 (a Conv1d / Conv3d virtual layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import backprop, sample_sum
from ..engine.checks import check_choice
from ..maps import minmax, resize
from .base import LayerMethod, Method

VIRTUALS = ("scaling", "conv1x1", "conv3x3", "depthwise3x3", "bias")
AGGREGATES = ("sum", "norm", "filter_norm", "max")


def _box(t: Tensor, reduce: str) -> Tensor:
    """3 x ... x 3 neighbourhood (3, 3x3 or 3x3x3 for 1 to 3 spatial axes) sum or max of [N, C, *spatial],
    zero padded."""
    rank = t.ndim - 2
    padded = F.pad(t, (1, 1) * rank)
    if reduce == "sum":
        return (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1](padded, 3, stride=1) * 3**rank
    return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1](padded, 3, stride=1)


def _pos(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _neg(t: Tensor) -> Tensor:
    return t.clamp(max=0)


def _factor_stats(p: Tensor, patch: bool) -> dict[str, Tensor]:
    """Sum, squared norms (all, positive part, negative part), max and min of the vector p_u
    at each location: p = a (conv1x1) or its 3x3 zero-padded patch (conv3x3; see ``_box``). Each [R, *spatial]."""
    stats = {
        "sum": p.sum(1), "sq": (p * p).sum(1), "sq_pos": (_pos(p) ** 2).sum(1),
        "sq_neg": (_neg(p) ** 2).sum(1), "max": p.amax(1), "min": p.amin(1),
    }
    if not patch:
        return stats
    boxed = {k: _box(stats[k].unsqueeze(1), "sum").squeeze(1) for k in ("sum", "sq", "sq_pos", "sq_neg")}
    boxed["max"] = _box(stats["max"].unsqueeze(1), "max").squeeze(1)
    boxed["min"] = -_box(-stats["min"].unsqueeze(1), "max").squeeze(1)
    return boxed


def _outer(p: dict[str, Tensor], q: dict[str, Tensor], aggregate: str) -> Tensor:
    """Aggregate of the outer product p q^T from the factors' statistics."""
    if aggregate == "sum":
        return p["sum"] * q["sum"]
    if aggregate == "norm":
        return torch.sqrt(p["sq"] * q["sq"])
    if aggregate == "filter_norm":
        return torch.sqrt(p["sq_pos"] * q["sq_pos"] + p["sq_neg"] * q["sq_neg"])
    corners = [p["max"] * q["max"], p["min"] * q["min"], p["max"] * q["min"], p["min"] * q["max"]]
    return torch.stack(corners).amax(0)


def _elementwise(v: Tensor, aggregate: str) -> Tensor:
    """Aggregate over the channel axis of per-channel values v [R, C, *spatial]."""
    if aggregate == "sum":
        return v.sum(1)
    if aggregate == "norm":
        return v.norm(dim=1)
    if aggregate == "filter_norm":
        return _pos(v).norm(dim=1)
    return v.amax(1)


def _depthwise(a: Tensor, g: Tensor, aggregate: str) -> Tensor:
    """Aggregate of v[c, d] = a_{u+d, c} g_{u, c} over channels c and 3x3 offsets d."""
    if aggregate == "sum":
        return (g * _box(a, "sum")).sum(1)
    if aggregate == "norm":
        return torch.sqrt((g * g * _box(a * a, "sum")).sum(1))
    if aggregate == "filter_norm":
        positive = _pos(g) ** 2 * _box(_pos(a) ** 2, "sum") + _neg(g) ** 2 * _box(_neg(a) ** 2, "sum")
        return torch.sqrt(positive.sum(1))
    return torch.where(g >= 0, g * _box(a, "max"), g * -_box(-a, "max")).amax(1)


def grid_map(a: Tensor, g: Tensor, virtual: str, aggregate: str) -> Tensor:
    """One cell of the grid: [R, *spatial] map from a, g [R, C, *spatial]."""
    if virtual == "scaling":
        return _elementwise(a * g, aggregate)
    if virtual == "bias":
        return _elementwise(g, aggregate)
    if virtual == "depthwise3x3":
        return _depthwise(a, g, aggregate)
    return _outer(_factor_stats(a, virtual == "conv3x3"), _factor_stats(g, False), aggregate)


@dataclass(frozen=True)
class LayerSaliency(LayerMethod):
    """Any cell of the "There and Back Again" grid at ``layer``. [B, H, W].

    virtual: "scaling" (a*g per channel), "conv1x1" (a g^T), "conv3x3" (3x3 patch of a times
        g^T), "depthwise3x3" (patch times g per channel) or "bias" (g).
    aggregate: "sum", "norm" (L2), "filter_norm" (L2 of the positive part, class-selective)
        or "max".
    """

    virtual: str = "conv1x1"
    aggregate: str = "norm"

    def __post_init__(self):
        super().__post_init__()
        check_choice("virtual", self.virtual, VIRTUALS)
        check_choice("aggregate", self.aggregate, AGGREGATES)

    def _map(self, a, g):
        return grid_map(a, g, self.virtual, self.aggregate)


@dataclass(frozen=True)
class NormGrad(LayerMethod):
    """NormGrad: ||a_u|| * ||g_u|| (conv1x1 + norm); ``selective=True`` takes the positive-part
    norm (conv1x1 + filter_norm), the class-selective variant. [B, H, W]."""

    selective: bool = False

    def _map(self, a, g):
        return grid_map(a, g, "conv1x1", "filter_norm" if self.selective else "norm")


@dataclass(frozen=True)
class LinearApprox(LayerMethod):
    """The linear approximation sum_c a_c g_c at each location (scaling + sum). [B, H, W]."""

    def _map(self, a, g):
        return grid_map(a, g, "scaling", "sum")


def _single_pass(method: Method) -> bool:
    """A layer method whose map needs just one ordinary pass (it only defines ``_map``)."""
    return isinstance(method, LayerMethod) and type(method)._explain is LayerMethod._explain


@dataclass(frozen=True)
class Combine(Method):
    """Product of min-max normalised maps of several layer methods, upsampled to the input
    (the paper's layer combination, e.g. NormGrad at layer2, layer3, layer4). [B, H, W].

    Methods that need a single ordinary pass share one forward + backward for all layers.
    """

    methods: Sequence[Method] = ()

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        if not self.methods or not all(isinstance(m, LayerMethod) for m in self.methods):
            raise ValueError("methods must be a non-empty list of layer methods (GradCAM, NormGrad, ...)")

    @property
    def evaluations(self) -> int:
        return sum(m.evaluations for m in self.methods)

    def _explain(self, model, x, target, chunk):
        shared = [m for m in self.methods if _single_pass(m)]
        observed = [m._observed(model, x) for m in shared]
        layers = list(dict.fromkeys(layer for layer, _ in observed))

        def rows(r, e, k):
            p = backprop(model, x[e], target, e, layers=layers, wrt_input=False)
            found = {name: (a, g) for (name, _), a, g in zip(layers, p.activations, p.gradients, strict=True)}
            return tuple(m._map(*read(*found[layer[0]])) for m, (layer, read) in zip(shared, observed, strict=True))

        maps = dict(zip(shared, sample_sum(len(x), 1, chunk, rows, x.device), strict=False)) if shared else {}
        result = None
        for method in self.methods:
            raw = maps[method] if method in maps else method._explain(model, x, target, chunk)
            normalised = minmax(resize(raw, x.shape[2:], method.interpolation))
            result = normalised if result is None else result * normalised
        return result.to(x.dtype)
