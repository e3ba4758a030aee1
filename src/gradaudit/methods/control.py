"""Controls every audit compares against: random attributions and an edge map, both blind to the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine.noise import uniform
from .base import Method


@dataclass(frozen=True)
class Random(Method):
    """U(0, 1) attributions of the input's shape, a function of (seed, example index) only.
    The model is not evaluated."""

    seed: int = 0
    needs_gradients = False

    def _explain(self, model, x, target, chunk):
        rows = torch.arange(len(x), device=x.device)
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return uniform(self.seed, 0, rows, x.shape[1:], dtype)


@dataclass(frozen=True)
class Sobel(Method):
    """An edge map of the input that ignores the model: the gradient magnitude sqrt(s_h^2 + s_w^2) of the
    Sobel filters (scipy.ndimage.sobel: derivative [-1, 0, 1] along one axis, smoothing [1, 2, 1] along the
    other, borders extended by their edge values, scipy's "reflect") applied to the channel-mean image,
    repeated over the channels: images [B, C, H, W] in, the same shape out. The second control of the
    metric audit (Tomsett et al. 2020 rank an edge detector beside Random): a metric that cannot tell a
    method from it rewards image structure, not the model. Deterministic; the model is not evaluated."""

    needs_gradients = False

    def _explain(self, model, x, target, chunk):
        if x.ndim != 4:
            raise ValueError(f"Sobel needs images [B, C, H, W]; got inputs of shape {list(x.shape)}")
        dtype = x.dtype if x.is_floating_point() and x.dtype != torch.bfloat16 else torch.float32
        grey = F.pad(x.to(dtype).mean(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
        derivative = torch.tensor([-1.0, 0.0, 1.0], dtype=dtype, device=x.device)
        smoothing = torch.tensor([1.0, 2.0, 1.0], dtype=dtype, device=x.device)
        along_h = F.conv2d(grey, torch.outer(derivative, smoothing)[None, None])
        along_w = F.conv2d(grey, torch.outer(smoothing, derivative)[None, None])
        magnitude = (along_h ** 2 + along_w ** 2).sqrt().to(x.dtype if x.is_floating_point() else dtype)
        return magnitude.expand_as(x).contiguous()
