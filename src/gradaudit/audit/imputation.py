"""ROAD's noisy linear imputation (Rong et al., ICML 2022), solved for a whole batch at once.

Removing pixels by a constant lets the *shape* of the removal tell the class. ROAD instead
fills every removed pixel with the weighted mean of its 8 neighbours (weight 1/6 for the 4
direct and 1/12 for the 4 diagonal ones; a neighbour outside the image drops out), which is
one sparse linear system per image over the removed pixels, then adds 0.01 * N(0, 1) noise
(tleemann/road_evaluation, ``road/imputations.py``). The reference solves each image with a
sparse direct solver on the CPU; here the systems of every image and channel are solved
together by Jacobi-preconditioned conjugate gradients whose matrix-vector product is the 3x3
stencil as shifted slices, on the input's device. The matrix is the graph Laplacian of the
removed pixels (symmetric, positive definite wherever a removed region touches a kept pixel),
so CG applies.
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


def noisy_linear_impute(x: Tensor, removed: Tensor, noise: float = 0.01, seed: int = 0, tol: float = 1e-5,
                        max_iter: int | None = None) -> Tensor:
    """x [B, C, H, W] with the ``removed`` pixels replaced by ROAD's noisy linear imputation.

    removed: bool [B, H, W] (or [B, 1, H, W], or x's shape): True where a pixel is removed.
    noise: standard deviation of the Gaussian noise added to imputed pixels (ROAD: 0.01).
    seed: fixes the noise (drawn on the CPU). tol: CG stops once every system's preconditioned
    residual norm has fallen by this factor; max_iter: default H * W.
    A removed region that touches no kept pixel has no information to interpolate and gets 0.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape [B, C, H, W], got {list(x.shape)}")
    r = _removed_like(x, removed)
    batch, channels, height, width = x.shape
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    r = r.to(work.dtype)
    direct, diagonal = NEIGHBOURS[0][1], NEIGHBOURS[0][0]

    def neighbour_sum(t: Tensor) -> Tensor:          # the 3x3 stencil as shifted slices (faster than conv2d)
        p = F.pad(t, (1, 1, 1, 1))
        side = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
        corner = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
        return side.mul_(direct).add_(corner, alpha=diagonal)

    degree = neighbour_sum(torch.ones(1, 1, height, width, dtype=work.dtype, device=x.device))
    inverse_degree = degree.reciprocal()

    def dot(a: Tensor, b: Tensor) -> Tensor:         # one inner product per image and channel
        return (a * b).sum((2, 3), keepdim=True)

    b = r * neighbour_sum(work * (1 - r))
    u = torch.zeros_like(b)
    residual = b.clone()
    z = residual * inverse_degree
    direction = z.clone()
    rz = dot(residual, z)
    threshold = tol**2 * rz                          # stop on the preconditioned residual norm r . D^-1 r
    for _ in range(max_iter or height * width):
        if bool((rz <= threshold).all()):
            break
        moved = (degree * direction).sub_(neighbour_sum(r * direction)).mul_(r)   # the matrix on removed pixels
        curvature = dot(direction, moved)
        step = torch.where(curvature > 0, rz / curvature.clamp(min=1e-300), torch.zeros_like(rz))
        u.addcmul_(step, direction)
        residual.addcmul_(step, moved, value=-1)
        z = residual * inverse_degree
        rz_next = dot(residual, z)
        direction = z.addcmul_(torch.where(rz > 0, rz_next / rz.clamp(min=1e-300), torch.zeros_like(rz)), direction)
        rz = rz_next
    if noise:
        generator = torch.Generator().manual_seed(seed)
        u.add_(torch.randn(x.shape, generator=generator, dtype=work.dtype).to(x.device), alpha=noise)
    return torch.where(r.bool(), u, work).to(x.dtype)
