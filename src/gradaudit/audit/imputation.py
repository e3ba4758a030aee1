"""ROAD's noisy linear imputation (Rong et al., ICML 2022), solved for a whole batch at once.

Removing pixels by a constant lets the *shape* of the removal tell the class. ROAD instead
fills every removed pixel with the weighted mean of its 8 neighbours (weight 1/6 for the 4
direct and 1/12 for the 4 diagonal ones; a neighbour outside the image drops out), which is
one sparse linear system per image over the removed pixels, then adds 0.01 * N(0, 1) noise
(tleemann/road_evaluation, ``road/imputations.py``). The reference solves each image with a
sparse direct solver on the CPU; here the systems of every image and channel are solved
together by Jacobi-preconditioned conjugate gradients whose matrix-vector product is one 3x3
convolution, on the input's device. The matrix is the graph Laplacian of the removed pixels
(symmetric, positive definite wherever a removed region touches a kept pixel), so CG applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NEIGHBOURS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


def _removed_like(x: Tensor, removed: Tensor) -> Tensor:
    """``removed`` ([B, H, W], [B, 1, H, W] or x's shape, bool) as a float mask of x's shape."""
    if removed.dtype != torch.bool:
        raise TypeError(f"removed must be a bool tensor, got dtype {removed.dtype}")
    if removed.ndim == x.ndim - 1:
        removed = removed.unsqueeze(1)
    try:
        return removed.expand_as(x).to(x.dtype)
    except RuntimeError as err:
        raise ValueError(f"removed has shape {list(removed.shape)}; expected [B, H, W] or "
                         f"[B, 1, H, W] matching x {list(x.shape)}") from err


def noisy_linear_impute(x: Tensor, removed: Tensor, noise: float = 0.01, seed: int = 0, tol: float = 1e-6,
                        max_iter: int | None = None) -> Tensor:
    """x [B, C, H, W] with the ``removed`` pixels replaced by ROAD's noisy linear imputation.

    removed: bool [B, H, W] (or [B, 1, H, W], or x's shape): True where a pixel is removed.
    noise: standard deviation of the Gaussian noise added to imputed pixels (ROAD: 0.01).
    seed: fixes the noise. tol: relative residual at which CG stops; max_iter: default H * W.
    A removed region that touches no kept pixel has no information to interpolate and gets 0.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape [B, C, H, W], got {list(x.shape)}")
    r = _removed_like(x, removed)
    batch, channels, height, width = x.shape
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    r = r.to(work.dtype)
    kernel = torch.tensor(NEIGHBOURS, dtype=work.dtype, device=x.device).view(1, 1, 3, 3)

    def neighbour_sum(t: Tensor) -> Tensor:
        return F.conv2d(t.reshape(-1, 1, height, width), kernel, padding=1).view(t.shape)

    degree = neighbour_sum(torch.ones(1, 1, height, width, dtype=work.dtype, device=x.device))

    def apply(u: Tensor) -> Tensor:                  # the system's matrix on the removed pixels
        return r * (degree * u - neighbour_sum(r * u))

    def dot(a: Tensor, b: Tensor) -> Tensor:         # one inner product per image and channel
        return (a * b).sum((2, 3), keepdim=True)

    b = r * neighbour_sum(work * (1 - r))
    u = torch.zeros_like(b)
    residual = b.clone()
    z = residual / degree
    direction = z.clone()
    rz = dot(residual, z)
    threshold = (tol * b.flatten(2).norm(dim=2)).view(batch, channels, 1, 1) ** 2
    for _ in range(max_iter or height * width):
        if bool((dot(residual, residual) <= threshold).all()):
            break
        moved = apply(direction)
        curvature = dot(direction, moved)
        step = torch.where(curvature > 0, rz / curvature.clamp(min=1e-300), torch.zeros_like(rz))
        u = u + step * direction
        residual = residual - step * moved
        z = residual / degree
        rz_next = dot(residual, z)
        direction = z + torch.where(rz > 0, rz_next / rz.clamp(min=1e-300), torch.zeros_like(rz)) * direction
        rz = rz_next
    generator = torch.Generator().manual_seed(seed)
    jitter = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(device=x.device, dtype=work.dtype)
    return torch.where(r.bool(), u + noise * jitter, work).to(x.dtype)
