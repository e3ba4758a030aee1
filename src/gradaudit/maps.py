"""Turning attributions into 2-D maps: channel reduction, resizing, min-max normalisation."""

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
    """Resize [B, *spatial] maps to ``size`` with ``mode`` ("bilinear" / "nearest"; 1-D: "linear")."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    if mode == "bilinear" and len(size) == 1:
        mode = "linear"
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode=mode, **kwargs).squeeze(1)


def heatmap(attr: Tensor, reduce: str = "abs_sum", normalize: bool = False) -> Tensor:
    """Reduce any attribution to a [B, H, W] map.

    attr: [B, C, H, W] (input-space methods) or [B, H, W] (layer methods, returned as is).
    reduce: "abs_sum" (sum of |attr| over channels), "sum", "max_abs" or "l2" (channel norm).
    normalize: min-max scale each map to [0, 1].
    """
    if not isinstance(attr, Tensor) or attr.ndim not in (3, 4):
        shape = list(attr.shape) if isinstance(attr, Tensor) else type(attr).__name__
        raise ValueError(f"attr must have shape [B, C, H, W] or [B, H, W], got {shape}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
    if attr.ndim == 4:
        attr = {
            "abs_sum": lambda a: a.abs().sum(1),
            "sum": lambda a: a.sum(1),
            "max_abs": lambda a: a.abs().amax(1),
            "l2": lambda a: a.norm(dim=1),
        }[reduce](attr)
    return minmax(attr) if normalize else attr
