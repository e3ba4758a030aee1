"""Turning attributions into maps over the input's spatial axes: channel reduction, resizing, min-max
normalisation. Spatial axes: one for signals [B, C, L], two for images [B, C, H, W], three for volumes
and video [B, C, D, H, W]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("abs_sum", "sum", "max_abs", "l2")


def minmax(maps: Tensor) -> Tensor:
    """Scale each example's map to [0, 1] (a constant map becomes 0). Shape kept: [B, ...]."""
    flat = maps.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return ((flat - low) / span).view_as(maps)


def resize(maps: Tensor, size, mode: str = "bilinear") -> Tensor:
    """Resize [B, *spatial] maps (1 to 3 spatial axes) to ``size``, a tuple of as many sizes.

    mode: "bilinear" (linear along each axis: linear for [B, L], trilinear for [B, D, H, W]) or "nearest".
    """
    size = tuple(size)
    if tuple(maps.shape[1:]) == size:
        return maps
    if maps.ndim - 1 != len(size) or not 1 <= len(size) <= 3:
        raise ValueError(f"cannot resize maps of shape {list(maps.shape)} to the inputs' spatial size {list(size)}: "
                         "the layer's map needs as many spatial axes as the inputs (1 to 3); pass upsample=False "
                         "or pick a layer of the inputs' rank")
    if mode == "bilinear":
        mode = ("linear", "bilinear", "trilinear")[len(size) - 1]
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, **kwargs).squeeze(1)


def heatmap(attr: Tensor, reduce: str = "abs_sum", normalize: bool = False, spatial: int | None = None) -> Tensor:
    """Reduce any attribution to a map [B, *spatial] over the input's spatial axes.

    attr: input-shaped [B, C, *spatial] (input-space methods: channels reduced) or [B, *spatial] (layer
        methods: returned as is).
    reduce: "abs_sum" (sum of |attr| over channels), "sum", "max_abs" or "l2" (channel norm).
    normalize: min-max scale each map to [0, 1].
    spatial: number of spatial axes of the inputs: 1 (signals: [B, C, L] -> [B, L]), 2 (images: [B, C, H, W]
        -> [B, H, W]) or 3 (volumes, video: [B, C, D, H, W] -> [B, D, H, W]). None reads attr as images,
        except a [B, L] map (1-D) and a [B, C, D, H, W] attribution (3-D), which can mean nothing else.
    """
    if spatial is not None and (isinstance(spatial, bool) or spatial not in (1, 2, 3)):
        raise ValueError(f"spatial must be None or the number of spatial axes of the inputs, 1, 2 or 3; got "
                         f"{spatial!r}")
    if spatial is None and isinstance(attr, Tensor):
        spatial = {2: 1, 5: 3}.get(attr.ndim, 2)
    if not isinstance(attr, Tensor) or attr.ndim - 1 not in (spatial, spatial + 1):
        shape = list(attr.shape) if isinstance(attr, Tensor) else type(attr).__name__
        axes = ("L", "H, W", "D, H, W")[(spatial or 2) - 1]
        raise ValueError(f"attr must have shape [B, C, {axes}] or [B, {axes}], got {shape}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
    if attr.ndim == spatial + 2:
        attr = {
            "abs_sum": lambda a: a.abs().sum(1),
            "sum": lambda a: a.sum(1),
            "max_abs": lambda a: a.abs().amax(1),
            "l2": lambda a: a.norm(dim=1),
        }[reduce](attr)
    return minmax(attr) if normalize else attr
