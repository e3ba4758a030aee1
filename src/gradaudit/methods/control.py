"""Random attributions: the control every audit compares against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
