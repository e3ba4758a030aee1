"""The strategies: which curvature stands for G, how it is damped, and how it preconditions a gradient.

Per layer (weights [out, in], bias last), with eigenvalue matrix L [out, in] and damping lambda:
- identity: no curvature, no damping: the preconditioned gradient is the gradient (dot products);
- diagonal: G ~ diag(L), L the mean squared pseudo-gradient; v = grad / (L + lambda);
- kfac: G ~ A (x) S; L_ij = eig(S)_i eig(A)_j; v = Q_S ((Q_S^T grad Q_A) / (L + lambda)) Q_A^T;
- ekfac: as kfac, with L refitted from per-example pseudo-gradients in the (Q_A, Q_S) basis;
- exact: G itself over all tracked weights (cross-layer blocks included), v = (G + D)^-1 grad,
  D holding each layer's lambda on its weights.
``damping=None`` sets each layer's lambda to 0.1 x the mean of its eigenvalues (kfac, ekfac,
diagonal: the mean of L; exact: the mean eigenvalue of the layer's diagonal block of G, its
trace over its size), the rule of Grosse et al. and kronfluence; a number sets every layer's.
The approximate strategies divide by L + lambda, and L is 0 wherever a direction is never seen (an
input feature that is always 0), so they need lambda > 0: ``fit`` refuses damping=0, and ``dampings``
names a layer whose curvature is 0 throughout (the heuristic would give it lambda = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .layers import Layer

STRATEGIES = ("identity", "diagonal", "kfac", "ekfac", "exact", "trak")   # trak: its own estimator (trak.py)
APPROXIMATE = ("diagonal", "kfac", "ekfac")            # curvatures divided by eigenvalue, never factorised
HEURISTIC_DAMPING = 0.1
EXACT_LIMIT = 10_000  # tracked weights: G is EXACT_LIMIT^2 float64 values (800 MB)


def check_exact_size(layers: list[Layer]) -> None:
    """A ValueError when the tracked weights are too many for ``exact`` (G is D x D)."""
    size = sum(layer.size for layer in layers)
    if size > EXACT_LIMIT:
        raise ValueError(
            f"strategy='exact' builds the {size} x {size} Gauss-Newton matrix of the {size} tracked weights "
            f"({size * size * 8 / 2**30:.1f} GiB in float64), more than the {EXACT_LIMIT} weights it allows; "
            "use strategy='ekfac' (or track fewer layers with layers=[...])")


def eigenvalues(strategy: str, layers: list[Layer], factors: dict) -> dict[str, Tensor]:
    """{layer: its curvature's eigenvalues} (an [out, in] matrix; for exact, the diagonal of its block of G)."""
    if strategy in ("diagonal", "ekfac"):
        return {layer.name: factors[layer.name]["Lambda"] for layer in layers}
    if strategy == "kfac":
        return {layer.name: torch.outer(factors[layer.name]["S_values"], factors[layer.name]["A_values"])
                for layer in layers}
    if strategy == "exact":
        diagonal = factors["gauss_newton"]["G"].diagonal().split([layer.size for layer in layers])
        return {layer.name: d for layer, d in zip(layers, diagonal, strict=True)}
    return {}


def dampings(strategy: str, layers: list[Layer], factors: dict, damping: float | None) -> dict[str, float]:
    """{layer: lambda}: ``damping`` for every layer, or the heuristic 0.1 x mean eigenvalue per layer. A ValueError
    naming the layer when the heuristic gives an approximate strategy no damping: a layer without curvature."""
    if strategy == "identity":
        return {}
    values = eigenvalues(strategy, layers, factors)
    if damping is not None:
        return {layer.name: float(damping) for layer in layers}
    found = {name: HEURISTIC_DAMPING * float(v.mean()) for name, v in values.items()}
    for name, lam in found.items():
        if strategy in APPROXIMATE and not lam > 0:
            raise ValueError(f"layer {name!r} has no curvature on the training set (the mean eigenvalue of its "
                             f"{strategy} estimate is {float(values[name].mean())!r}: its gradients are zero, as "
                             "behind a dead ReLU), so damping=None gives it no damping and its inverse is undefined; "
                             "pass damping > 0, or leave the layer out with layers=[...]")
    return found


class Curvature:
    """The damped curvature of one strategy over ``layers``; ``precondition`` applies its inverse."""

    def __init__(self, strategy: str, layers: list[Layer], factors: dict, damping: dict[str, float]):
        self.strategy, self.layers, self.factors, self.damping = strategy, layers, factors, damping
        self._cholesky: Tensor | None = None

    def precondition(self, grads: list[Tensor]) -> list[Tensor]:
        """(G + lambda)^-1 applied to gradients, one [Q, out, in] per layer; same shapes and dtypes back."""
        if self.strategy == "identity":
            return grads
        if self.strategy == "exact":
            return self._exact(grads)
        return [self._layer(layer, g.to(torch.promote_types(g.dtype, torch.float32))).to(g.dtype)
                for layer, g in zip(self.layers, grads, strict=True)]

    def _layer(self, layer: Layer, grad: Tensor) -> Tensor:
        """One layer's (G + lambda)^-1 grad, in the gradient's precision (float64 factors cast to float32 for
        float32 gradients, as kronfluence computes: about half the time of float64 rotations)."""
        f, damping = self.factors[layer.name], self.damping[layer.name]

        def factor(t: Tensor) -> Tensor:
            return t.to(device=grad.device, dtype=grad.dtype)

        if self.strategy == "diagonal":
            return grad / (factor(f["Lambda"]) + damping)
        q_a, q_s = factor(f["A_vectors"]), factor(f["S_vectors"])
        values = f["Lambda"] if self.strategy == "ekfac" else torch.outer(f["S_values"], f["A_values"])
        rotated = q_s.T @ grad @ q_a / (factor(values) + damping)
        return q_s @ rotated @ q_a.T

    def _exact(self, grads: list[Tensor]) -> list[Tensor]:
        if self._cholesky is None:
            g = self.factors["gauss_newton"]["G"]
            diagonal = torch.cat([torch.full((layer.size,), self.damping[layer.name], dtype=g.dtype)
                                  for layer in self.layers]).to(g.device)
            factor, info = torch.linalg.cholesky_ex(g + torch.diag(diagonal))
            if int(info):
                raise ValueError("the damped Gauss-Newton matrix G + damping is not positive definite (G is "
                                 "singular and the damping is 0): pass damping > 0 or damping=None")
            self._cholesky = factor
        flat = torch.cat([g.flatten(1) for g in grads], dim=1)
        solved = torch.cholesky_solve(flat.double().T.to(self._cholesky.device), self._cholesky).T
        parts = solved.to(device=flat.device, dtype=flat.dtype).split([layer.size for layer in self.layers], dim=1)
        return [p.view_as(g) for p, g in zip(parts, grads, strict=True)]
