"""Random numbers that depend only on (seed, example, sample), never on chunking or device.

``uniform`` is counter-based (a hash of seed, row and cell) and serves ``Random``; Gaussian noise
for SmoothGrad-like methods comes in per-sample blocks from seeded CPU generators (``torch.randn``
is 4x faster than hashing). Either way any ``batch_size`` and any device give the same numbers.
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


class GaussianNoise:
    """N(0, 1) noise for (sample k, example e) rows: row e of a [B, *shape] block drawn on the CPU
    from a generator seeded by (seed, k). A function of (seed, k, e) only, so the same for any
    chunking and on any device; each block is drawn once (consecutive chunks reuse it)."""

    def __init__(self, seed: int, batch: int, shape, dtype=torch.float32):
        self.seed, self.shape, self.dtype = seed, (batch, *shape), dtype
        self._sample, self._block = None, None

    def _block_of(self, sample: int) -> Tensor:
        if sample != self._sample:
            # CPU generators seed from 32 bits: mix (seed, sample) into 32 bits, bijective in sample.
            mixed = _hash32(_hash32((self.seed + 0x9E3779B9) & _MASK) ^ (sample & _MASK))
            generator = torch.Generator().manual_seed(mixed)
            dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
            self._sample, self._block = sample, torch.randn(self.shape, generator=generator, dtype=dtype)
        return self._block

    def rows(self, examples: Tensor, samples: Tensor) -> Tensor:
        """[R, *shape] noise for rows given by LongTensors ``examples`` and ``samples`` (sample-major)."""
        kinds, counts = samples.cpu().unique_consecutive(return_counts=True)
        examples = examples.cpu()
        parts, start = [], 0
        for sample, count in zip(kinds.tolist(), counts.tolist(), strict=False):
            parts.append(self._block_of(sample)[examples[start:start + count]])
            start += count
        return torch.cat(parts).to(self.dtype)


def noise_scale(x: Tensor, noise: float | None, sigma: float | None) -> Tensor:
    """Per-example standard deviation [B]: ``sigma`` if given, else noise * (max(x) - min(x))."""
    if sigma is not None:
        return torch.full((len(x),), float(sigma), dtype=x.dtype, device=x.device)
    flat = x.flatten(1)
    return noise * (flat.amax(1) - flat.amin(1))


def noisy(x: Tensor, examples: Tensor, samples: Tensor, scale: Tensor, noise: GaussianNoise) -> Tensor:
    """Copies ``x[examples] + scale[examples] * eps`` with eps from ``noise`` for each row."""
    eps = noise.rows(examples, samples).to(x.device)
    return x[examples] + scale[examples].view(-1, *[1] * (x.ndim - 1)) * eps
