"""Counter-based random numbers: the draw for row r depends only on (seed, r), never on chunking.

Methods that sample (SmoothGrad, Random, ...) key their noise by the global row index, so any
``batch_size`` and any device give the same numbers for the same seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF


def _hash32(x):
    """A bijective 32-bit integer mix on ints or int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK
    return x ^ (x >> 16)


def uniform(seed: int, stream: int, rows: Tensor, shape, dtype=torch.float32) -> Tensor:
    """U(0, 1) draws of shape [len(rows), *shape]; ``stream`` separates independent uses."""
    key = _hash32(_hash32(stream & _MASK) ^ (seed & _MASK))
    row_keys = _hash32(key ^ (rows.long() & _MASK))
    count = math.prod(shape)
    cells = torch.arange(count, device=rows.device, dtype=torch.long)
    bits = _hash32(_hash32(row_keys[:, None] ^ cells[None, :]) ^ key)
    draws = (bits.double() + 0.5) / 2.0**32
    return draws.to(dtype).reshape(len(rows), *shape)


def gaussian(seed: int, rows: Tensor, shape, dtype=torch.float32) -> Tensor:
    """N(0, 1) draws of shape [len(rows), *shape] by Box-Muller on two uniform streams."""
    u1 = uniform(seed, 1, rows, shape, torch.float64)
    u2 = uniform(seed, 2, rows, shape, torch.float64)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)


def noise_scale(x: Tensor, noise: float | None, sigma: float | None) -> Tensor:
    """Per-example standard deviation [B]: ``sigma`` if given, else noise * (max(x) - min(x))."""
    if sigma is not None:
        return torch.full((len(x),), float(sigma), dtype=x.dtype, device=x.device)
    flat = x.flatten(1)
    return noise * (flat.amax(1) - flat.amin(1))


def noisy(x: Tensor, rows: Tensor, examples: Tensor, scale: Tensor, seed: int) -> Tensor:
    """Copies ``x[examples] + scale[examples] * eps`` with eps keyed by global ``rows``."""
    base = x[examples]
    eps = gaussian(seed, rows, x.shape[1:], x.dtype)
    return base + scale[examples].view(-1, *[1] * (x.ndim - 1)) * eps
